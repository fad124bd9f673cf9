"""`trustplan init` reads the aggregator CA, the service-account key and the encryption key (issue
22): from talosctl gen config's output of v1.14.1 (the 1.14 documents) and v1.12.1 (the legacy
fields), from secrets.yaml, each named by its fingerprint as it is today so that a plan changes
nothing of them; their private parts go to the keystore (0600, or age), never to the YAML."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
import yaml

from trustplan.cli import init_kinds
from trustplan.talos import machineconfig

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "tests" / "fixtures" / "talosctl-gen-config"
TRUSTPLAN = str(Path(sys.executable).with_name("trustplan"))
KINDS = ("aggregator", "serviceaccount", "encryption", "etcd")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False)


def generated(tmp_path: Path, release: str) -> Path:
    for name in ("controlplane.yaml", "worker.yaml", "secrets.yaml"):
        shutil.copy(GEN / release / name, tmp_path / name)
    return tmp_path


def from_config(release: str) -> dict[str, str]:
    cfg = machineconfig.parse((GEN / release / "controlplane.yaml").read_bytes(), "controlplane.yaml")
    found = init_kinds.from_configs([("10.5.0.2", cfg)]).ordered()
    return {k: cs[0].fingerprint for k, cs in found.items() for _ in [0] if len(cs) == 1}


@pytest.mark.parametrize("release", ["v1.14.1", "v1.12.1"])
def test_init_keeps_each_kind_as_it_is_and_the_first_plan_changes_none_of_them(tmp_path: Path, release: str) -> None:
    d = generated(tmp_path, release)
    result = run("init", "--machine-configs", ".", "--address", "controlplane.yaml=10.5.0.2",
                 "--address", "worker.yaml=10.5.0.5", cwd=d)
    assert result.returncode == 0, result.stderr
    assert "Copied 4 current keys" in result.stderr
    text = (d / "trustplan.yaml").read_text()
    doc = yaml.safe_load(text)
    live = from_config(release)
    assert set(live) == set(KINDS)
    for kind in KINDS:
        assert doc["trust"][kind] == {"issuer": live[kind], "accepted": []}
    place = "KubeServiceAccountConfig.issuer" if release == "v1.14.1" else "cluster.serviceAccount.key"
    assert f"in {place}, issuing on 1 of 1 control planes read" in text
    # no private part in the YAML: not the PEM keys, not the secretbox key
    secrets = yaml.safe_load((d / "secrets.yaml").read_text())
    assert "PRIVATE KEY" not in text and secrets["secrets"]["secretboxencryptionsecret"] not in text
    keys = d / ".trustplan" / "keys"
    for kind in KINDS:
        key = keys / (live[kind].removeprefix("sha256:") + ".key")
        assert key.stat().st_mode & 0o777 == 0o600, key
    # the first plan changes none of the three (the Talos and Kubernetes CAs are rotated by init's file)
    plan = run("plan", "-f", "json", cwd=d)
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    changed = {c["pki"] for phase in doc["phases"] for c in phase["edits"]}
    assert changed == {"talos", "kubernetes"}, changed
    kinds = ("aggregator", "service-account", "encryption", "etcd")
    assert not any(w for w in doc["warnings"] if any(k in w for k in kinds))


@pytest.mark.parametrize("release", ["v1.14.1", "v1.12.1"])
def test_secrets_yaml_names_the_same_authorities_as_the_configs(release: str) -> None:
    found = init_kinds.from_secrets(GEN / release / "secrets.yaml").ordered()
    assert {k: cs[0].fingerprint for k, cs in found.items()} == from_config(release)
    assert all(cs[0].material.secret for cs in found.values())


def test_with_an_age_recipient_the_keys_are_sealed_and_the_desired_state_says_so(tmp_path: Path) -> None:
    d = generated(tmp_path, "v1.14.1")
    identity = pyrage.x25519.Identity.generate()
    result = run("init", "--machine-configs", ".", "--address", "controlplane.yaml=10.5.0.2", "--address",
                 "worker.yaml=10.5.0.5", "--age-recipient", str(identity.to_public()), cwd=d)
    assert result.returncode == 0, result.stderr
    assert "(age-encrypted)" in result.stderr
    sealed = sorted((d / ".trustplan" / "keys").glob("*.key.age"))
    assert len(sealed) == 4 and not list((d / ".trustplan" / "keys").glob("*.key"))
    box = yaml.safe_load((d / "secrets.yaml").read_text())["secrets"]["secretboxencryptionsecret"]
    import base64

    opened = {pyrage.decrypt(p.read_bytes(), [identity]) for p in sealed}
    assert base64.b64decode(box) in opened
    doc = yaml.safe_load((d / "trustplan.yaml").read_text())
    assert doc["keystore"] == {"path": ".trustplan/keys", "age": {"recipients": [str(identity.to_public())]}}
    assert run("validate", cwd=d).returncode == 0


def test_a_broken_key_in_a_control_plane_config_is_refused_with_nothing_written(tmp_path: Path) -> None:
    d = generated(tmp_path, "v1.14.1")
    cfg = d / "controlplane.yaml"
    cfg.write_text(cfg.read_text().replace("secret: GC3c63YkAVUmUwANHi4F3Yqu0EqMKn8y2iHmjHbfnmo=", "secret: c2hvcnQ="))
    before = sorted(p.name for p in d.iterdir())
    result = run("init", "--machine-configs", ".", "--address", "controlplane.yaml=10.5.0.2",
                 "--address", "worker.yaml=10.5.0.5", cwd=d)
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert "controlplane.yaml: KubeEtcdEncryptionConfig.config" in errors[0], errors
    assert "a secretbox key is 32 bytes" in errors[0], errors
    assert sorted(p.name for p in d.iterdir()) == before


def test_a_secrets_file_with_a_broken_service_account_key_is_refused_with_nothing_written(tmp_path: Path) -> None:
    d = generated(tmp_path, "v1.14.1")
    (d / "talosconfig").write_text((GEN / "v1.14.1" / "talosconfig").read_text())
    s = yaml.safe_load((d / "secrets.yaml").read_text())
    s["certs"]["k8sserviceaccount"]["key"] = "bm90IGEga2V5"
    (d / "secrets.yaml").write_text(yaml.safe_dump(s))
    before = sorted(p.name for p in d.iterdir())
    result = run("init", "--talosconfig", "talosconfig", "--secrets", "secrets.yaml", "--controlplane", "10.5.0.2",
                 cwd=d)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "secrets.yaml" in result.stderr and "certs.k8sserviceaccount.key" in result.stderr, result.stderr
    assert sorted(p.name for p in d.iterdir()) == before

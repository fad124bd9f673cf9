"""`trust.etcd` through the CLI on machine configs written by talosctl gen config v1.14.1: the plan shows
the rolling steps with the quorum each keeps (text, Markdown, JSON), apply writes cluster.etcd.ca as a
bundle, issuer first, and ends with the new CA alone; secrets.yaml's certs.etcd follows; the key sits in
the keystore only (0600). Two control planes are refused: a restart would lose quorum."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml
from conftest import run_cli

from trustplan.talos import machineconfig, pki

GEN = Path(__file__).parent.parent / "fixtures" / "talosctl-gen-config" / "v1.14.1"
CPS = ("10.5.0.2", "10.5.0.3", "10.5.0.4")


def cluster(root: Path, cps: tuple[str, ...] = CPS) -> Path:
    (root / "nodes").mkdir(parents=True)
    for i, _ in enumerate(cps):
        (root / "nodes" / f"cp-{i + 1}.yaml").write_text((GEN / "controlplane.yaml").read_text())
    (root / "secrets.yaml").write_text((GEN / "secrets.yaml").read_text())
    for p in [*(root / "nodes").iterdir(), root / "secrets.yaml"]:
        p.chmod(0o600)
    configs = "".join(f"    {a}: nodes/cp-{i + 1}.yaml\n" for i, a in enumerate(cps))
    (root / "trustplan.yaml").write_text(f"""\
version: v1alpha1
cluster:
  name: demo
  machineConfigs:
{configs}  nodes:
    controlplane: [{", ".join(cps)}]
authorities:
  etcd-2027: {{generate: {{}}}}
trust:
  etcd: {{issuer: etcd-2027}}
keystore: .trustplan/keys
secrets: secrets.yaml
state: trustplan.state.json
""")
    return root


def etcd_field(path: Path) -> tuple[list[bytes], bytes]:
    doc = machineconfig.parse(path.read_bytes(), str(path)).v1alpha1
    ca = doc["cluster"]["etcd"]["ca"]
    crt = pki.b64decode_pem(ca["crt"], str(path), "crt")
    return pki.split_pem_bundle(crt), pki.b64decode_pem(ca["key"], str(path), "key")


def test_the_etcd_ca_rotates_as_a_bundle_with_rolling_steps(tmp_path: Path) -> None:
    root = cluster(tmp_path)
    (old,), _ = etcd_field(root / "nodes" / "cp-1.yaml")
    planned = run_cli(root, "plan", "-o", "plan.bin")
    assert planned.code == 0, planned.err
    assert "managing the etcd CA" in planned.out
    assert "+ etcd-2027  etcd CA, ecdsa-p256, O=etcd, valid" in planned.out
    for n in CPS:
        assert f"accept {n}: reboot, 2 of 3 members up, quorum 2; etcd CA = " in planned.out
        assert f"swap {n}: no restart, 3 of 3 members up, quorum 2; etcd CA = etcd-2027 + " in planned.out
        assert f"remove {n}: reboot, 2 of 3 members up, quorum 2; etcd CA = etcd-2027 (issues from etcd-2027)" in (
            planned.out)
    doc = json.loads(run_cli(root, "show", "-f", "json", "plan.bin").out)
    rolling = {p["name"]: p.get("etcd_rolling") for p in doc["phases"]}
    assert [r["member"] for r in rolling["accept"]] == list(CPS)
    assert {(r["restart"], r["up_during"], r["quorum"]) for r in rolling["remove"]} == {(True, 2, 2)}
    markdown = run_cli(root, "show", "-f", "markdown", "plan.bin").out
    assert "accept 10.5.0.2: reboot, 2 of 3 members up, quorum 2" in markdown
    assert "PRIVATE KEY" not in json.dumps(doc) + markdown + planned.out

    applied = run_cli(root, "apply", "plan.bin")
    assert applied.code == 0, applied.err
    keys = json.loads((root / ".trustplan" / "keys" / "index.json").read_text())
    new_fp = keys["etcd-2027"]
    for i in range(3):
        blocks, key = etcd_field(root / "nodes" / f"cp-{i + 1}.yaml")
        assert len(blocks) == 1 and blocks[0] != old
        ca = pki.CACert.from_pem(blocks[0])
        assert ca.fingerprint == new_fp and pki.key_matches(ca.cert, pki.load_key_pem(key, "key"))
    secrets = yaml.safe_load((root / "secrets.yaml").read_text())
    assert pki.b64decode_pem(secrets["certs"]["etcd"]["crt"], "s", "crt") == blocks[0]
    key_files = [p for p in (root / ".trustplan" / "keys").iterdir() if p.suffix == ".key"]
    assert key_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in key_files)
    assert "PRIVATE KEY" not in (root / "trustplan.state.json").read_text()
    again = run_cli(root, "plan")
    assert again.code == 0 and "no changes" in (again.out + again.err).lower()


def test_two_control_planes_are_refused(tmp_path: Path) -> None:
    root = cluster(tmp_path, CPS[:2])
    planned = run_cli(root, "plan", "-o", "plan.bin")
    assert planned.code != 0
    assert ("a cluster of 2 etcd members loses quorum while one restarts (quorum 2 of 2): add control planes to "
            "reach 3 first") in planned.err
    assert "Traceback" not in planned.err and not (root / "plan.bin").exists()


def test_an_ed25519_etcd_ca_is_one_clear_error(tmp_path: Path) -> None:
    root = cluster(tmp_path)
    desired = root / "trustplan.yaml"
    text = desired.read_text()
    desired.write_text(text.replace("etcd-2027: {generate: {}}", "etcd-2027: {generate: {algorithm: ed25519}}"))
    checked = run_cli(root, "validate")
    assert checked.code == 1 and "Traceback" not in checked.err
    assert ("authorities.etcd-2027: authority 'etcd-2027' asks for ed25519; an etcd CA is ecdsa-p256 (what Talos "
            "generates) or rsa") in checked.err, checked.err

"""End to end on a copy of examples/files, through the CLI: the "Done when" list of issue 2.

One module-scoped rotation (plan -o plan.bin, apply plan.bin) is shared by the tests that look at
its results; tests that need their own cluster make one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import copy_example, run_cli, snapshot
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan import schemas
from trustplan.talos import machineconfig, pki, validation

NODES = {
    "10.5.0.2": "nodes/cp-1.yaml",
    "10.5.0.3": "nodes/cp-2.yaml",
    "10.5.0.4": "nodes/cp-3.yaml",
    "10.5.0.5": "nodes/worker-1.yaml",
    "10.5.0.6": "nodes/worker-2.yaml",
}
CPS = ("10.5.0.2", "10.5.0.3", "10.5.0.4")


class Rotation:
    """A scratch cluster taken through plan and apply, with everything observed on the way."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.original = snapshot(root)
        self.plan = run_cli(root, "plan", "-o", "plan.bin", "--detailed-exitcode")
        self.plan_bin = (root / "plan.bin").read_bytes()
        self.keystore_after_plan = snapshot(root / ".trustplan/keys")
        self.replan = run_cli(root, "plan", "-o", "replan.bin")
        self.show_json = run_cli(root, "show", "plan.bin", "--format", "json")
        self.show_text = run_cli(root, "show", "plan.bin")
        self.apply = run_cli(root, "apply", "plan.bin")
        self.after_apply = snapshot(root)
        self.second_plan = run_cli(root, "plan", "--detailed-exitcode")
        self.reapply = run_cli(root, "apply", "plan.bin")
        self.after_reapply = snapshot(root)

    @property
    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.show_json.out)
        return doc

    def new_ca(self, pki_name: str) -> str:
        return next(a["fingerprint"] for a in self.document["authorities"] if a["pki"] == pki_name
                    and a["source"] == "generate")

    def config(self, address: str) -> machineconfig.MachineConfig:
        path = self.root / NODES[address]
        return machineconfig.parse(path.read_bytes(), str(path))


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory) -> Rotation:
    return Rotation(copy_example(tmp_path_factory.mktemp("rotation") / "cluster"))


def test_plan_with_detailed_exitcode_exits_2_and_saves_the_plan(rotation: Rotation) -> None:
    assert rotation.plan.code == 2, rotation.plan.err
    assert rotation.plan_bin.startswith(b"TRUSTPLAN\0")
    assert "Saved the plan to plan.bin; apply it with: trustplan apply plan.bin" in rotation.plan.err
    # files: the notes say which nodes the rotation covers (issue 8: no node left out unnoticed)
    assert "this rotation covers the 5 nodes of cluster.machineConfigs (10.5.0.2, 10.5.0.3, " in rotation.plan.err
    assert rotation.plan.out.endswith(
        "Plan: 2 authorities to create, 30 CA changes (10 accept, 10 swap, 10 remove) in 15 config writes, "
        "6 verification gates.\n"
    )


def test_show_prints_what_plan_printed(rotation: Rotation) -> None:
    assert rotation.show_text.code == 0
    assert rotation.show_text.out == rotation.plan.out


def test_show_json_validates_against_the_plan_schema(rotation: Rotation) -> None:
    assert rotation.show_json.code == 0
    jsonschema.validate(rotation.document, schemas.load("plan"), cls=jsonschema.Draft202012Validator)
    assert rotation.document["cluster"] == "demo"
    assert rotation.document["format_version"] == 1
    assert [p["name"] for p in rotation.document["phases"]] == ["accept", "swap", "outputs", "remove"]


def test_replan_before_apply_reuses_the_generated_cas(rotation: Rotation) -> None:
    replanned = json.loads(run_cli(rotation.root, "show", "replan.bin", "--format", "json").out)
    assert {a["fingerprint"] for a in replanned["authorities"]} == {
        a["fingerprint"] for a in rotation.document["authorities"]
    }
    keys = [k for k in rotation.keystore_after_plan if k.endswith(".key")]
    assert len(keys) == 2  # one per generated authority, not one per plan
    index = json.loads(rotation.keystore_after_plan["index.json"][1])
    assert index == {"k8s-2026": rotation.new_ca("kubernetes"), "talos-2026": rotation.new_ca("talos")}


def test_apply_succeeds(rotation: Rotation) -> None:
    assert rotation.apply.code == 0, rotation.apply.err
    assert rotation.apply.out.startswith("Apply complete: ")
    assert "State serial 1 in trustplan.state.json" in rotation.apply.out
    assert not [line for line in rotation.apply.err.splitlines() if line.startswith("Error: ")]


def test_after_apply_control_planes_have_the_new_cas_with_keys(rotation: Rotation) -> None:
    for address in CPS:
        cfg = rotation.config(address)
        for pki_name in ("talos", "kubernetes"):
            fields = cfg.ca_fields(pki_name)  # type: ignore[arg-type]
            assert fields.issuer is not None and fields.issuer_key is not None
            ca = pki.CACert.from_pem(fields.issuer)
            assert ca.fingerprint == rotation.new_ca(pki_name)
            assert pki.key_matches(ca.cert, pki.load_key_pem(fields.issuer_key, "k"))
            assert fields.accepted == ()
        assert validation.validate(cfg) == []


def test_after_apply_workers_have_the_new_certs_with_an_empty_key(rotation: Rotation) -> None:
    for address in ("10.5.0.5", "10.5.0.6"):
        cfg = rotation.config(address)
        for section, pki_name in (("machine", "talos"), ("cluster", "kubernetes")):
            ca = cfg.v1alpha1[section]["ca"]
            assert ca["key"] == ""
            assert pki.CACert.from_pem(base64.b64decode(ca["crt"])).fingerprint == rotation.new_ca(pki_name)
            assert "acceptedCAs" not in cfg.v1alpha1[section]
        assert validation.validate(cfg) == []


def test_only_the_ca_fields_changed_in_the_node_configs(rotation: Rotation) -> None:
    for path in NODES.values():
        before = yaml.safe_load(rotation.original[path][1])
        after = yaml.safe_load(rotation.after_apply[path][1])
        for section in ("machine", "cluster"):
            before[section].pop("ca"), after[section].pop("ca")
        assert before == after
        if "cp-" in path:  # a control plane's config holds CA keys: written without group/other bits
            assert rotation.after_apply[path][0] == rotation.original[path][0] & 0o700
        else:  # file mode kept
            assert rotation.after_apply[path][0] == rotation.original[path][0]


def _talosconfig(rotation: Rotation) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((rotation.root / "talosconfig").read_text())
    return doc


def test_talosconfig_admin_cert_verifies_against_the_new_talos_ca_with_openssl(
    rotation: Rotation, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tc = _talosconfig(rotation)
    ctx = tc["contexts"][tc["context"]]
    (tmp_path / "ca.pem").write_bytes(base64.b64decode(ctx["ca"]))
    (tmp_path / "crt.pem").write_bytes(base64.b64decode(ctx["crt"]))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "crt.pem")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(": OK")
    assert pki.CACert.from_pem(base64.b64decode(ctx["ca"])).fingerprint == rotation.new_ca("talos")
    assert ctx["endpoints"] == list(CPS)


def test_talosconfig_admin_cert_is_ed25519_os_admin_client_auth_one_year(rotation: Rotation) -> None:
    ctx = _talosconfig(rotation)["contexts"]["demo"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(ctx["crt"]))
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["os:admin"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) <= lifetime <= dt.timedelta(days=366)
    key = pki.load_key_pem(base64.b64decode(ctx["key"]), "talosconfig")
    assert pki.key_matches(cert, key)
    assert rotation.after_apply["talosconfig"][0] == 0o600


def test_kubeconfig_is_for_the_new_kubernetes_ca(rotation: Rotation) -> None:
    kc = yaml.safe_load((rotation.root / "kubeconfig").read_text())
    user = kc["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    cluster = kc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.5.0.2:6443"
    bundle = pki.split_pem_bundle(base64.b64decode(cluster["certificate-authority-data"]))
    assert [pki.CACert.from_pem(b).fingerprint for b in bundle] == [rotation.new_ca("kubernetes")]
    assert pki.verify_issued_by(cert, pki.CACert.from_pem(bundle[0]).cert)


def test_secrets_yaml_has_the_new_cas(rotation: Rotation) -> None:
    secrets = yaml.safe_load(rotation.after_apply["secrets.yaml"][1])
    for name, pki_name in (("os", "talos"), ("k8s", "kubernetes")):
        crt = base64.b64decode(secrets["certs"][name]["crt"])
        key = pki.load_key_pem(base64.b64decode(secrets["certs"][name]["key"]), "secrets.yaml")
        ca = pki.CACert.from_pem(crt)
        assert ca.fingerprint == rotation.new_ca(pki_name)
        assert pki.key_matches(ca.cert, key)
    original = yaml.safe_load(rotation.original["secrets.yaml"][1])
    assert secrets["certs"]["etcd"] == original["certs"]["etcd"]  # the rest is untouched


def test_second_plan_finds_nothing_to_do(rotation: Rotation) -> None:
    assert rotation.second_plan.code == 0, rotation.second_plan.err
    assert rotation.second_plan.out.endswith("No changes. Every node already has the desired CAs.\n")


def test_reapplying_the_old_plan_is_refused_as_stale_and_changes_nothing(rotation: Rotation) -> None:
    assert rotation.reapply.code == 1
    assert rotation.reapply.err.startswith("Error: plan.bin: the plan is stale")
    assert rotation.after_reapply == rotation.after_apply


def _secrets_in(rotation: Rotation) -> list[bytes]:
    """Every private key that exists anywhere in the cluster, as PEM and as the base64 Talos stores."""
    found = []
    for _, data in [*rotation.original.values(), *rotation.after_apply.values()]:
        for m in re.finditer(rb"(?:key|client-key-data): ?(LS0t[A-Za-z0-9+/=]+)", data):
            found.append(m.group(1))
    keystore = rotation.root / ".trustplan/keys"
    for k in keystore.glob("*.key"):
        found += [k.read_bytes(), base64.b64encode(k.read_bytes())]
    assert len(found) > 10
    return found


def test_neither_plan_nor_state_holds_key_material(rotation: Rotation) -> None:
    state = rotation.after_apply["trustplan.state.json"][1]
    for blob in (rotation.plan_bin, state):
        assert b"PRIVATE KEY" not in blob
        assert base64.b64encode(b"PRIVATE KEY")[:8] not in blob
        for secret in _secrets_in(rotation):
            assert secret not in blob


def test_keystore_is_0700_with_0600_keys(rotation: Rotation) -> None:
    keystore = rotation.root / ".trustplan/keys"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o700
    keys = list(keystore.glob("*.key"))
    assert len(keys) == 2
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600


def test_state_records_the_rotation(rotation: Rotation) -> None:
    state = json.loads(rotation.after_apply["trustplan.state.json"][1])
    jsonschema.validate(state, schemas.load("state"), cls=jsonschema.Draft202012Validator)
    assert state["serial"] == 1 and state["lineage"]
    assert state["history"][0]["status"] == "applied"
    assert state["nodes"]["10.5.0.5"]["talos"] == {"issuer": rotation.new_ca("talos"), "accepted": []}
    assert set(state["authorities"]) >= {rotation.new_ca("talos"), rotation.new_ca("kubernetes")}


def test_status_after_apply_shows_no_drift(rotation: Rotation) -> None:
    result = run_cli(rotation.root, "status", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["drift"] == []


# --- exit codes ------------------------------------------------------------------------------


def test_usage_error_exits_2_but_1_with_detailed_exitcode(example: Path, cli) -> None:  # noqa: ANN001
    plain = cli("plan", "--no-such-flag")
    assert plain.code == 2
    detailed = cli("plan", "--detailed-exitcode", "--no-such-flag")
    assert detailed.code == 1
    assert "No such option: --no-such-flag" in plain.err and "No such option: --no-such-flag" in detailed.err


def test_bad_option_value_with_detailed_exitcode_exits_1(example: Path, cli) -> None:  # noqa: ANN001
    before = snapshot(example)
    result = cli("plan", "--detailed-exitcode", "--expires-in", "soon")
    assert result.code == 1
    assert "--expires-in" in result.err
    assert snapshot(example) == before


def test_plan_without_detailed_exitcode_exits_0_with_changes(example: Path, cli) -> None:  # noqa: ANN001
    result = cli("plan")
    assert result.code == 0
    assert "Plan: 2 authorities to create" in result.out


def test_apply_without_a_plan_file_and_no_tty_refuses(example: Path, cli) -> None:  # noqa: ANN001
    before = snapshot(example)
    result = cli("apply")
    assert result.code == 1
    assert "refusing to apply without confirmation: stdin is not a terminal" in result.err
    after = snapshot(example)
    assert after == before


def test_apply_with_auto_approve_plans_and_applies(example: Path, cli) -> None:  # noqa: ANN001
    result = cli("apply", "--auto-approve")
    assert result.code == 0, result.err
    assert "Apply complete" in result.out
    assert cli("plan", "--detailed-exitcode").code == 0


def test_exit_codes_of_the_real_process(example: Path) -> None:
    """`python -m trustplan` as a user runs it: exit 2 with changes, 1 on error, no traceback."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trustplan", *args], cwd=example, capture_output=True,
                              text=True, check=False, timeout=60)

    changes = run("plan", "--detailed-exitcode")
    assert changes.returncode == 2, changes.stderr
    (example / "trustplan.yaml").write_text("version: [\n")
    broken = run("plan", "--detailed-exitcode")
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    assert broken.stderr.startswith("Error: trustplan.yaml:")


def test_changing_a_generated_authoritys_algorithm_mints_a_new_ca(example: Path, cli) -> None:  # noqa: ANN001
    """The keystore index reuses a CA generated earlier, but only if it still is what the file asks for."""
    assert cli("plan").code == 0
    first = json.loads((example / ".trustplan/keys/index.json").read_text())["talos-2026"]
    desired = example / "trustplan.yaml"
    desired.write_text(desired.read_text().replace("talos-2026: {generate: {algorithm: ed25519}}",
                                                   "talos-2026: {generate: {algorithm: ecdsa-p256}}"))
    result = cli("plan")
    assert result.code == 0, result.err
    second = json.loads((example / ".trustplan/keys/index.json").read_text())["talos-2026"]
    assert second != first
    assert "talos-2026  Talos API CA, ecdsa-p256, O=talos" in result.out

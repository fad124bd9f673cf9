"""Machine configs: reading CA fields, and rewriting them so that everything not edited keeps its
exact bytes (Talos compares CA entries byte for byte)."""

from __future__ import annotations

import base64

import pytest
from conftest import EXAMPLE_FILES, CAFiles
from test_pki import rewrap
from trustplan.planner import AcceptCA, RemoveCA, SwapIssuer
from trustplan_sim import configgen

from trustplan.errors import InputError
from trustplan.talos import certgen, machineconfig, pki, validation
from trustplan.talos.machineconfig import CAFields
from trustplan.talos.rewrite import rewrite, trust_of


def load(name: str) -> machineconfig.MachineConfig:
    path = EXAMPLE_FILES / "nodes" / name
    return machineconfig.parse(path.read_bytes(), str(path))


def fp(pem: bytes) -> str:
    return pki.CACert.from_pem(pem).fingerprint


def with_accepted(cfg: machineconfig.MachineConfig, pem: bytes) -> machineconfig.MachineConfig:
    """`cfg` with `pem` (exact bytes) added to machine.acceptedCAs."""
    fields = cfg.ca_fields("talos")
    data = cfg.with_ca_fields({"talos": CAFields(fields.issuer, fields.issuer_key, (*fields.accepted, pem))})
    return machineconfig.parse(data, cfg.source)


class Keys:
    """cert_pem / key_pem callbacks for rewrite(), from the session's CA files."""

    def __init__(self, ca: CAFiles) -> None:
        self.certs = {fp(ca.talos_crt): ca.talos_crt, fp(ca.kube_crt): ca.kube_crt}
        self.keys = {fp(ca.talos_crt): ca.talos_key, fp(ca.kube_crt): ca.kube_key}

    def cert_pem(self, f: str) -> bytes:
        return self.certs[f]

    def key_pem(self, f: str) -> bytes:
        return self.keys[f]


def test_control_plane_fields_have_the_issuer_and_key() -> None:
    cfg = load("cp-1.yaml")
    assert cfg.role == "controlplane" and cfg.machine_type == "controlplane"
    talos = cfg.ca_fields("talos")
    assert talos.issuer is not None and talos.issuer.startswith(b"-----BEGIN CERTIFICATE-----")
    assert talos.issuer_key is not None and talos.issuer_key.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    kube = cfg.ca_fields("kubernetes")
    assert kube.issuer_key is not None and kube.issuer_key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert validation.validate(cfg) == []


def test_worker_fields_have_the_cert_and_no_key() -> None:
    cfg = load("worker-1.yaml")
    assert cfg.role == "worker"
    assert cfg.v1alpha1["machine"]["ca"]["key"] == ""
    assert cfg.ca_fields("talos").issuer_key is None
    assert cfg.ca_fields("talos").issuer == load("cp-1.yaml").ca_fields("talos").issuer
    assert validation.validate(cfg) == []


def test_init_counts_as_control_plane() -> None:
    data = load("cp-1.yaml").data.replace(b"type: controlplane", b"type: init")
    assert machineconfig.parse(data, "x").role == "controlplane"


def test_unknown_machine_type_names_the_path() -> None:
    data = load("cp-1.yaml").data.replace(b"type: controlplane", b"type: leader")
    with pytest.raises(InputError, match=r"^x: machine\.type: unknown machine type 'leader'"):
        _ = machineconfig.parse(data, "x").role


def test_accepting_a_ca_keeps_an_unusual_existing_entry_byte_identical(ca_files: CAFiles) -> None:
    cp = load("cp-1.yaml")
    odd = rewrap(pki.cert_to_pem(certgen.generate_ca("talos", pki.utcnow())[0]), 76)  # valid PEM, 76 columns
    cfg = with_accepted(cp, odd)
    keys = Keys(ca_files)
    data = rewrite(cfg, (AcceptCA("10.5.0.2", "controlplane", "talos", fp(ca_files.talos_crt)),), keys.cert_pem,
                   keys.key_pem)
    after = machineconfig.parse(data, "x").ca_fields("talos")
    assert after.accepted == (odd, ca_files.talos_crt)
    entries = machineconfig.parse(data, "x").v1alpha1["machine"]["acceptedCAs"]
    assert base64.b64decode(entries[0]["crt"]) == odd


def test_swap_moves_the_old_issuer_to_accepted_with_its_exact_bytes(ca_files: CAFiles) -> None:
    cp = load("cp-1.yaml")
    old = cp.ca_fields("talos")
    assert old.issuer is not None
    odd_issuer = rewrap(old.issuer, 76)
    cfg = machineconfig.parse(
        cp.with_ca_fields({"talos": CAFields(odd_issuer, old.issuer_key, (ca_files.talos_crt,))}), "x"
    )
    keys = Keys(ca_files)
    new = fp(ca_files.talos_crt)
    data = rewrite(cfg, (SwapIssuer("10.5.0.2", "controlplane", "talos", new, fp(old.issuer)),), keys.cert_pem,
                   keys.key_pem)
    after = machineconfig.parse(data, "x")
    fields = after.ca_fields("talos")
    assert fields.issuer == ca_files.talos_crt
    assert fields.issuer_key == ca_files.talos_key
    assert fields.accepted == (odd_issuer,)
    assert validation.validate(after) == []


def test_worker_swap_writes_the_cert_with_an_empty_key(ca_files: CAFiles) -> None:
    w = load("worker-1.yaml")
    keys = Keys(ca_files)
    new = fp(ca_files.talos_crt)
    edits = (AcceptCA("10.5.0.5", "worker", "talos", new),
             SwapIssuer("10.5.0.5", "worker", "talos", new, fp(w.ca_fields("talos").issuer or b"")))
    after = machineconfig.parse(rewrite(w, edits, keys.cert_pem, keys.key_pem), "x")
    assert after.v1alpha1["machine"]["ca"] == {"crt": pki.b64encode_pem(ca_files.talos_crt), "key": ""}
    assert validation.validate(after) == []


def test_remove_drops_the_entry_and_nothing_else(ca_files: CAFiles) -> None:
    cp = with_accepted(load("cp-2.yaml"), ca_files.talos_crt)
    keys = Keys(ca_files)
    data = rewrite(cp, (RemoveCA("10.5.0.3", "controlplane", "talos", fp(ca_files.talos_crt)),), keys.cert_pem,
                   keys.key_pem)
    assert data == load("cp-2.yaml").data  # back to the original bytes exactly
    assert "acceptedCAs" not in machineconfig.parse(data, "x").v1alpha1["machine"]


def test_other_documents_are_kept_byte_for_byte(ca_files: CAFiles) -> None:
    extra = (
        "---\n# a comment the YAML dumper would drop\napiVersion: v1alpha1\nkind: SideroLinkConfig\n"
        "apiUrl:   https://siderolink.example:8099/?jointoken=x   # odd spacing\n"
    )
    data = load("cp-1.yaml").data + extra.encode()
    cfg = machineconfig.parse(data, "x")
    keys = Keys(ca_files)
    out = rewrite(cfg, (AcceptCA("10.5.0.2", "controlplane", "talos", fp(ca_files.talos_crt)),), keys.cert_pem,
                  keys.key_pem)
    assert out.endswith(extra.encode())
    assert len(machineconfig.parse(out, "x").documents) == 2


def test_trust_of_reads_fingerprints_and_key_presence() -> None:
    cp = load("cp-1.yaml")
    trust, pems = trust_of(cp.ca_fields("talos"), cp.source)
    assert trust.issuer_has_key and trust.accepted == ()
    assert trust.issuer == fp(cp.ca_fields("talos").issuer or b"")
    assert pems == {trust.issuer: cp.ca_fields("talos").issuer}


def test_validation_rules_a_rotation_can_break() -> None:
    cp = load("cp-1.yaml")
    cp.v1alpha1["machine"]["ca"]["key"] = ""
    assert validation.validate(cp) == ["machine.ca: a control plane needs the issuing Talos API CA with its key"]
    w = load("worker-1.yaml")
    w.v1alpha1["cluster"]["ca"]["key"] = cp.v1alpha1["cluster"]["ca"]["key"]
    assert validation.validate(w) == [
        "cluster.ca.key: issuing Kubernetes API CA key is not allowed on non-controlplane nodes"
    ]
    w = load("worker-2.yaml")
    w.v1alpha1["machine"]["acceptedCAs"] = [{"crt": "bm90IGEgY2VydA=="}]
    assert validation.validate(w) == ["machine.acceptedCAs[0]: not a base64 PEM certificate"]


def test_generated_configs_are_valid() -> None:
    secrets = configgen.ClusterSecrets.generate(pki.utcnow())
    for role in ("init", "controlplane", "worker"):
        data = configgen.generate_config(
            secrets, cluster_name="t", endpoint="https://10.0.0.1:6443", role=role, hostname="n", address="10.0.0.1"
        )
        assert validation.validate(machineconfig.parse(data, role)) == []

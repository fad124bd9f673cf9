"""What `--k8s real` builds from a machine config, without running anything: the kube-apiserver
inputs of both config layouts (legacy fields and the Talos 1.14 documents), the etcd certificates as
Talos issues them, and the CLI (`--k8s` alone still means the imitation; a missing binary is one
clear error and nothing is written)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from simharness import TRUSTPLAN
from trustplan_sim import configgen, etcd
from trustplan_sim.k8sinputs import read_inputs
from trustplan_sim.node import SimNode

from trustplan.cli.sim import expand_k8s_flag
from trustplan.talos import certgen, machineconfig, pki


def node_for(config: bytes, address: str = "127.30.0.2", hostname: str = "cp-1") -> SimNode:
    parsed = machineconfig.parse(config, "test")
    return cast(SimNode, SimpleNamespace(name=hostname, hostname=hostname, address=address, parsed=parsed))


def config(layout: machineconfig.KubeCALayout) -> tuple[configgen.ClusterSecrets, bytes]:
    secrets = configgen.ClusterSecrets.generate(pki.utcnow())
    data = configgen.generate_config(secrets, cluster_name="t", endpoint="https://127.30.0.2:6443",
                                     role="controlplane", hostname="cp-1", address="127.30.0.2",
                                     kube_ca_layout=layout)
    return secrets, data


@pytest.mark.parametrize("layout", ["legacy", "multidoc"])
def test_inputs_come_from_the_nodes_config(layout: machineconfig.KubeCALayout) -> None:
    secrets, data = config(layout)
    inputs = read_inputs(node_for(data))
    assert inputs.k8s_issuer == secrets.k8s.crt_pem and inputs.k8s_accepted == ()
    assert inputs.aggregator_issuer.strip() == secrets.aggregator.crt_pem.strip()
    assert inputs.etcd_ca == secrets.etcd.crt_pem  # verbatim
    assert pki.load_key_pem(inputs.sa_key, "sa").public_key() == secrets.service_account_key.public_key()
    assert inputs.issuer_url == "https://127.30.0.2:6443"
    enc = yaml.safe_load(inputs.encryption)
    assert enc["kind"] == "EncryptionConfiguration"
    assert enc["resources"][0]["providers"] == [
        {"secretbox": {"keys": [{"name": "key2", "secret": secrets.secretbox_secret}]}}, {"identity": {}}]
    assert "127.30.0.2" in inputs.ips and "10.96.0.1" in inputs.ips
    assert {"cp-1", "kubernetes.default.svc.cluster.local"} <= set(inputs.dns)


def test_talos_1_14_documents_for_service_accounts_and_encryption() -> None:
    """KubeServiceAccountConfig (issuer key, accepted public keys, issuer URL) and
    KubeEtcdEncryptionConfig (its config, verbatim) win over the legacy fields."""
    _, data = config("multidoc")
    old = ec.generate_private_key(ec.SECP256R1())
    new = ec.generate_private_key(ec.SECP256R1())
    old_pub = old.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sa: dict[str, Any] = {"apiVersion": "v1alpha1", "kind": "KubeServiceAccountConfig",
                          "issuer": {"privateKey": pki.key_to_pem(new).decode(), "issuerURL": "https://issuer.test"},
                          "accepted": {"publicKeys": [old_pub.decode()]}}
    enc_config = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                  "resources": [{"resources": ["secrets"], "providers": [{"identity": {}}]}]}
    enc = {"apiVersion": "v1alpha1", "kind": "KubeEtcdEncryptionConfig", "config": enc_config}
    data += b"---\n" + yaml.safe_dump(sa).encode() + b"---\n" + yaml.safe_dump(enc).encode()
    inputs = read_inputs(node_for(data))
    assert pki.load_key_pem(inputs.sa_key, "sa").public_key() == new.public_key()
    assert inputs.sa_accepted == (old_pub,)
    assert inputs.issuer_url == "https://issuer.test"
    assert yaml.safe_load(inputs.encryption) == enc_config


def test_etcd_certificates_are_shaped_like_talos() -> None:
    ca_cert, ca_key = certgen.generate_ca("kubernetes", pki.utcnow())
    other, _ = certgen.generate_ca("kubernetes", pki.utcnow())
    bundle = pki.cert_to_pem(ca_cert) + pki.cert_to_pem(other)  # only the first signs
    ca = etcd.first_ca(bundle, pki.key_to_pkcs8_pem(ca_key), "test")
    crt, _ = etcd.issue_leaf(ca, common_name="cp-1", dns=("cp-1",), ips=("127.30.0.2",))
    cert = x509.load_pem_x509_certificate(crt)
    assert pki.verify_issued_by(cert, ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cp-1"
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_bare_k8s_flag_means_the_imitation() -> None:
    assert expand_k8s_flag(["sim", "up", "--k8s", "--dir", "d"]) == ["sim", "up", "--k8s", "sim", "--dir", "d"]
    assert expand_k8s_flag(["sim", "up", "--dir", "d", "--k8s"]) == ["sim", "up", "--dir", "d", "--k8s", "sim"]
    assert expand_k8s_flag(["sim", "up", "--k8s", "real"]) == ["sim", "up", "--k8s", "real"]
    assert expand_k8s_flag(["plan", "--k8s"]) == ["plan", "--k8s"]


def test_a_missing_binary_is_one_clear_error(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    proc = subprocess.run([*TRUSTPLAN, "sim", "up", "--dir", str(sim), "--subnet", "127.98.7.0/24", "--k8s", "real",
                           "--kube-apiserver", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"kube-apiserver v1.34.4 not found at {tmp_path / 'nowhere'}" in proc.stderr
    assert "scripts/peers/kube-apiserver.sh" in proc.stderr and "Traceback" not in proc.stderr
    assert not sim.exists()
    bad = subprocess.run([*TRUSTPLAN, "sim", "up", "--dir", str(sim), "--k8s", "bogus"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "expected sim or real" in bad.stderr

"""trustplan.talos.etcdca: cluster.etcd.ca read as a trust bundle (issuer first), checked for what Talos
does not check, and written for each phase of the graceful rotation."""

from __future__ import annotations

import base64

import pytest
from trustplan_sim.etcd import generate_etcd_ca

from trustplan.errors import CAError
from trustplan.talos import etcdca, pki

NOW = pki.utcnow()
OLD, NEW = generate_etcd_ca(NOW), generate_etcd_ca(NOW)


def _fp(pem: bytes) -> str:
    return pki.fingerprint(pki.load_cert_pem(pem, "t"))


def _doc(crt: bytes, key: bytes) -> dict:
    return {"cluster": {"etcd": {"ca": {"crt": base64.b64encode(crt).decode(), "key": base64.b64encode(key).decode()}}}}


def test_each_phase_reads_back_as_issuer_then_accepted() -> None:
    values = etcdca.rotation_values(OLD, NEW)
    expect = {"accept": (OLD, (NEW,)), "swap": (NEW, (OLD,)), "remove": (NEW, ())}
    for phase, (crt, key) in values.items():
        doc: dict = {"cluster": {}}
        issuer, accepted = expect[phase]
        etcdca.write(doc, issuer[0], issuer[1], [a[0] for a in accepted])
        trust = etcdca.read(doc, "cp-1.yaml")
        assert trust == etcdca.EtcdTrust(_fp(issuer[0]), tuple(_fp(a[0]) for a in accepted), True), phase
        assert base64.b64decode(doc["cluster"]["etcd"]["ca"]["crt"]) == crt
        assert base64.b64decode(doc["cluster"]["etcd"]["ca"]["key"]) == key


def test_a_worker_has_no_etcd_ca() -> None:
    assert etcdca.read({"machine": {"type": "worker"}, "cluster": {}}, "w.yaml") is None


@pytest.mark.parametrize(("crt", "key", "message"), [
    (NEW[0] + OLD[0], OLD[1], "cp-1.yaml: cluster.etcd.ca.key: the key does not match the first certificate"),
    (OLD[0] + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", OLD[1], "cluster.etcd.ca.crt"),
    (OLD[0] + b"trailing words\n", OLD[1], "holds something besides PEM certificates"),
    (OLD[0] + OLD[0], OLD[1], "cluster.etcd.ca.crt[1]: lists CA"),
])
def test_what_talos_accepts_and_trustplan_refuses(crt: bytes, key: bytes, message: str) -> None:
    """Each of these passes `talosctl validate --strict` (docs/talos-model.md) and would break etcd."""
    with pytest.raises(CAError, match=message.replace("[", r"\[").replace("]", r"\]")):
        etcdca.read(_doc(crt, key), "cp-1.yaml")


def test_leaves_come_from_the_first_block_only() -> None:
    """What the simulator's etcd members run (as Talos's certs.go: NewCertificateAuthorityFromCertificateAndKey
    reads the first PEM block): a bundle new + old issues from new alone."""
    from trustplan_sim.etcd import first_ca, issue_leaf

    ca = first_ca(NEW[0] + OLD[0], NEW[1], "bundle")
    crt, _ = issue_leaf(ca, common_name="cp-1", ips=("127.0.0.1",))
    leaf = pki.load_cert_pem(crt, "leaf")
    assert pki.verify_issued_by(leaf, pki.load_cert_pem(NEW[0], "new"))
    assert not pki.verify_issued_by(leaf, pki.load_cert_pem(OLD[0], "old"))

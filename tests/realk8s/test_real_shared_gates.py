"""Issue 22 item 3 on real kube-apiservers (`--k8s real`, Talos 1.14 layout): the gates of the aggregator
CA and the service-account key are answered by every API server, not by the configs alone. After
the apply every such gate says so; the old CA and key (removed) are refused by the same checks, as
are a CA and a key the cluster never accepted, so a skipped gate or a wrong CA/key fails."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from simharness import run_with_cluster
from trustplan.providers import kubegates as kg
from trustplan.providers.base import TLSIdentity
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import certgen, kubecreds, machineconfig, pki

pytestmark = pytest.mark.realk8s
EXTRA = "\n  aggregator-2027: {generate: {}}\n  sa-2027: {generate: {}}\n"
TRUST = "\n  aggregator: {issuer: aggregator-2027}\n  serviceaccount: {issuer: sa-2027, drain: 0s}\n"


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if realk8s.find_apiserver() is None or etcd.find_etcd() is None:
        why = "kube-apiserver v1.34.4 or etcd not built/installed here"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def admin_of(kubeconfig: Path) -> TLSIdentity:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    pem = [base64.b64decode(user[k]) for k in ("client-certificate-data", "client-key-data")]
    return TLSIdentity("kubernetes", "", (), pem[0], pem[1], base64.b64decode(cluster["certificate-authority-data"]))


def front_proxy(m: kubecreds.Material) -> tuple[bytes, bytes]:
    assert m.secret is not None
    ca = pki.load_cert_pem(m.public, "aggregator CA")
    cert, key = certgen.issue_client_cert(
        ca, pki.load_key_pem(m.secret, "key"), "test", pki.utcnow(), common_name=kg.FRONT_PROXY_CN
    )
    return pki.cert_to_pem(cert), pki.key_to_pem(key)


def refused(check: object, *args: object) -> str:
    with pytest.raises(kg.CheckFailed) as info:
        check(*args)  # type: ignore[operator]
    return str(info.value)


def test_aggregator_and_serviceaccount_gates_ask_every_real_apiserver(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        before = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        old_ca = machineconfig.kind_fields(before, "aggregator").issuer
        old_sa = machineconfig.kind_fields(before, "serviceaccount").issuer
        assert old_ca is not None and old_sa is not None and old_sa.secret is not None
        desired_path = cluster.dir / "trustplan.yaml"
        text = desired_path.read_text()
        text = text.replace("authorities:\n", "authorities:" + EXTRA, 1).replace("trust:\n", "trust:" + TRUST, 1)
        desired_path.write_text(text)
        desired = desired_mod.load(desired_path)
        import datetime as dt

        planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        planned.save_new_keys()
        request = applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())
        applied = await applier.apply_desired(request)
        api = [s for s in applied.steps if s.kind == "gate" and "(Kubernetes API)" in str(s.detail)]
        # every phase's gate of both kinds asked the API servers, and each passed
        assert {(s.pki, s.phase) for s in api} >= {
            (k, p) for k in ("aggregator", "serviceaccount") for p in ("accept", "swap", "remove")
        }, applied.steps
        assert all(s.outcome == "ok" for s in api)
        assert all("on 2 API servers" in str(s.detail) for s in api)

        after = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        new_ca = machineconfig.kind_fields(after, "aggregator").issuer
        new_sa = machineconfig.kind_fields(after, "serviceaccount").issuer
        assert new_ca is not None and new_sa is not None and new_sa.secret is not None
        admin = admin_of(cluster.kubeconfig)
        foreign_key = pki.key_to_pem(rsa.generate_private_key(65537, 2048))
        foreign_ca, foreign_ca_key = certgen.generate_ca("kubernetes", pki.utcnow())  # never accepted
        foreign = kubecreds.Material(pki.cert_to_pem(foreign_ca), pki.key_to_pem(foreign_ca_key))
        for node in cluster.controlplanes:
            server = f"https://{node.address}:{cluster.k8s_port}"
            kg.front_proxy_user(server, admin.ca_bundle_pem, *front_proxy(new_ca))  # the new CA passes
            for wrong in (old_ca, foreign):  # the removed CA and one never accepted
                assert "not authenticated" in refused(
                    kg.front_proxy_user, server, admin.ca_bundle_pem, *front_proxy(wrong)
                )
            token = kg.token_request(server, admin)
            assert kg.token_kid(token) == kg.key_id(new_sa.public)
            kg.token_accepted(server, admin.ca_bundle_pem, kg.resign(token, new_sa.secret), "new key")
            for key in (old_sa.secret, foreign_key):
                resigned = kg.resign(token, key)
                assert "was refused" in refused(kg.token_accepted, server, admin.ca_bundle_pem, resigned, "k")
        first = f"https://{cluster.controlplanes[0].address}:{cluster.k8s_port}"
        cas = {pki.fingerprint(c) for c in kg.configmap_cas(first, admin)}
        assert pki.fingerprint(pki.load_cert_pem(new_ca.public, "new")) in cas

    run_with_cluster(
        scenario,
        tmp_path / "sim",
        controlplanes=2,
        workers=0,
        k8s=True,
        k8s_mode="real",
        config_layout="multidoc",
        kubelet_rejoin_ms=100,
    )

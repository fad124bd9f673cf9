"""`plan --allow-disruptive` on real kube-apiservers (`--k8s real`, the legacy layout of a Talos before
1.14): the aggregator CA and the service-account key are replaced in place, and what the plan says
breaks does break, then recovers. A token TokenRequest issued before the apply and a front-proxy
certificate of the old CA are refused by every API server afterwards; a token issued afterwards (what
a kubelet refresh or a pod restart gets) and a front-proxy certificate of the new CA are accepted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from realk8s.credstory import admin_of, front_proxy, need_binaries, refusal
from simharness import run_with_cluster
from trustplan.providers.kubechecks import aggregator as agg
from trustplan.providers.kubechecks import serviceaccount as sa
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import machineconfig, pki

pytestmark = pytest.mark.realk8s


@pytest.fixture
def _binaries() -> None:
    """Fails in CI (skips elsewhere) when kube-apiserver or etcd is missing."""
    need_binaries()
EXTRA = "\n  aggregator-2027: {generate: {}}\n  sa-2027: {generate: {}}\n"
TRUST = "\n  aggregator: {issuer: aggregator-2027}\n  serviceaccount: {issuer: sa-2027}\n"


def test_what_the_disruptive_plan_says_breaks_breaks_and_then_recovers(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        before = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        assert machineconfig.kind_fields(before, "serviceaccount").layout == "legacy"
        old_ca = machineconfig.kind_fields(before, "aggregator").issuer
        assert old_ca is not None
        admin = admin_of(cluster.kubeconfig)
        servers = [f"https://{n.address}:{cluster.k8s_port}" for n in cluster.controlplanes]
        minted = sa.token_request(servers[0], admin)  # a pod's token of before the apply
        for server in servers:
            sa.token_accepted(server, admin.ca_bundle_pem, minted, "token of before")
            agg.front_proxy_user(server, admin.ca_bundle_pem, *front_proxy(old_ca))

        desired_path = cluster.dir / "trustplan.yaml"
        text = desired_path.read_text()
        text = text.replace("authorities:\n", "authorities:" + EXTRA, 1).replace("trust:\n", "trust:" + TRUST, 1)
        desired_path.write_text(text)
        desired = desired_mod.load(desired_path)
        planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1),
                                              allow_disruptive=("aggregator", "serviceaccount"))
        planned.save_new_keys()
        warned = {w.pki for w in planned.plan.warnings if w.code == "disruptive"}
        assert warned == {"aggregator", "serviceaccount"}
        replaced = {p.name for p in planned.plan.phases for e in p.edits if e.pki in warned}
        assert replaced == {"swap"}  # the Talos and Kubernetes CAs of the simulator's desired state rotate too
        request = applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())
        applied = await applier.apply_desired(request)
        api = [s for s in applied.steps if s.kind == "gate" and "(Kubernetes API)" in str(s.detail)]
        assert {(s.pki, s.phase) for s in api} >= {("aggregator", "swap"), ("serviceaccount", "swap")}
        assert all(s.outcome == "ok" for s in api)

        after = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        new_ca = machineconfig.kind_fields(after, "aggregator").issuer
        new_sa = machineconfig.kind_fields(after, "serviceaccount").issuer
        assert new_ca is not None and new_sa is not None
        assert machineconfig.kind_fields(after, "serviceaccount").layout == "legacy"  # replaced in place
        admin = admin_of(cluster.kubeconfig)
        for server in servers:
            # breaks: the token of before and the old CA's front-proxy certificate, on every API server
            assert "was refused" in refusal(sa.token_accepted, server, admin.ca_bundle_pem, minted, "before")
            assert "not authenticated" in refusal(agg.front_proxy_user, server, admin.ca_bundle_pem,
                                                  *front_proxy(old_ca))
            # recovers: a token issued now (a kubelet refresh, a restarted pod) and the new CA's certificate
            fresh = sa.token_request(server, admin)
            assert sa.token_kid(fresh) == sa.key_id(new_sa.public) != sa.token_kid(minted)
            sa.token_accepted(server, admin.ca_bundle_pem, fresh, "token of after")
            agg.front_proxy_user(server, admin.ca_bundle_pem, *front_proxy(new_ca))

    run_with_cluster(
        scenario, tmp_path / "sim", controlplanes=2, workers=0, k8s=True, k8s_mode="real",
        config_layout="legacy", kubelet_rejoin_ms=100,
    )

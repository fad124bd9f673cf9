"""Plan and apply both PKIs (Talos API and Kubernetes API CA) through the talos provider against the
simulator with a Kubernetes API (`k8s=True`), in both Kubernetes CA config layouts."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import pytest
from simharness import run_with_cluster
from trustplan.providers.base import TLSIdentity
from trustplan.providers.kubechecks.nodes import ExpectedNode, KubernetesChecker, server_for
from trustplan.state import LocalState, StateDocument
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier
from trustplan.engine import planning as engine
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import GateFailedError, ProviderError
from trustplan.formats import desired as desired_mod
from trustplan.talos import machineconfig, pki, validation

FAST: dict[str, Any] = {"k8s": True, "apiserver_restart_ms": 200, "kubelet_rejoin_ms": 150}


class Notes:
    """A Reporter that keeps the notes (what the gates and kubelet waits said)."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.titles: list[str] = []

    def start(self, title: str, total: int) -> None:
        self.titles.append(title)

    def begin(self, detail: str) -> None: ...
    def advance(self, detail: str = "") -> None: ...
    def fail(self, detail: str) -> None: ...
    def done(self) -> None: ...

    def note(self, message: str) -> None:
        self.notes.append(message)


async def replan(cluster: SimCluster) -> engine.Planned:
    """`trustplan plan` in-process on the cluster's trustplan.yaml; new CA keys saved."""
    desired = desired_mod.load(cluster.dir / "trustplan.yaml")
    planned = await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    return planned


async def plan_and_apply(cluster: SimCluster, reporter: Notes | None = None) -> applier.Applied:
    planned = await replan(cluster)
    desired = desired_mod.load(cluster.dir / "trustplan.yaml")
    return await applier.apply_desired(
        ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow()), reporter=reporter
    )


def kubeconfig_credential(path: Path) -> TLSIdentity:
    doc = machineconfig.load_yaml(path.read_bytes())
    ca = pki.b64decode_pem(doc["clusters"][0]["cluster"]["certificate-authority-data"], str(path), "ca")
    user = doc["users"][0]["user"]
    crt = pki.b64decode_pem(user["client-certificate-data"], str(path), "crt")
    key = pki.b64decode_pem(user["client-key-data"], str(path), "key")
    return TLSIdentity("kubernetes", "", (), crt, key, ca)


async def kube_check(cluster: SimCluster, kubeconfig: Path, timeout: float = 10.0) -> dict[str, str]:
    checker = KubernetesChecker([server_for(n.address, cluster.k8s_port) for n in cluster.controlplanes], timeout)
    expected = [ExpectedNode(n.address, n.hostname) for n in cluster.nodes]
    return await checker.check(kubeconfig_credential(kubeconfig), expected)


def set_verify_timeout(cluster: SimCluster, seconds: float) -> None:
    path = cluster.dir / "trustplan.yaml"
    text = path.read_text()
    assert "verify: {timeout: 60}" in text
    path.write_text(text.replace("verify: {timeout: 60}", f"verify: {{timeout: {seconds}}}"))


@pytest.mark.parametrize("layout", ["legacy", "multidoc"])
def test_full_rotation_of_both_pkis(tmp_path: Path, layout: str) -> None:
    old = tmp_path / "old-kubeconfig"

    async def scenario(cluster: SimCluster) -> None:
        old.write_bytes(cluster.kubeconfig.read_bytes())
        old_ca = cluster.secrets.k8s.crt_pem
        await kube_check(cluster, old)  # the old kubeconfig works before
        applied = await plan_and_apply(cluster)

        # one ApplyConfiguration per node per phase carries both PKIs' edits
        writes = [(s.phase, s.node) for s in applied.steps if s.kind == "write"]
        assert len(writes) == len(set(writes))
        assert any(
            "talos:" in str(s.detail) and "kubernetes:" in str(s.detail) for s in applied.steps if s.kind == "write"
        )
        kubelet_steps = [s for s in applied.steps if s.kind == "kubelet"]
        assert {s.node for s in kubelet_steps} == {n.address for n in cluster.nodes}
        assert all(s.outcome == "ok" for s in kubelet_steps)
        assert all(n.kubelet.restarts == 3 for n in cluster.nodes)  # accept, swap, remove

        # the new kubeconfig: every node Ready on every control plane; the old one is refused
        results = await kube_check(cluster, cluster.kubeconfig)
        assert len(results) == 3 and all("5 nodes Ready" in r for r in results.values())
        assert stat.S_IMODE(cluster.kubeconfig.stat().st_mode) == 0o600
        with pytest.raises(GateFailedError, match="TLS trust failure: unknown authority"):
            await kube_check(cluster, old, timeout=0.3)
        stale = kubeconfig_credential(old)  # the old cert, trusting the new CA: the server refuses it
        stale = TLSIdentity(
            "kubernetes", "", (), stale.cert_pem, stale.key_pem, kubeconfig_credential(cluster.kubeconfig).ca_bundle_pem
        )
        checker = KubernetesChecker([server_for(n.address, cluster.k8s_port) for n in cluster.controlplanes], 0.3)
        with pytest.raises(GateFailedError, match="does not accept the client certificate"):
            await checker.check(stale, [ExpectedNode(n.address, n.hostname) for n in cluster.nodes])

        # the kubeconfig's CA data is what `talosctl kubeconfig` gives: issuing CA, then accepted
        cp = machineconfig.parse(cluster.controlplanes[0].config, "cp")
        fields = cp.ca_fields("kubernetes")
        assert fields.issuer != old_ca and fields.accepted == ()
        assert kubeconfig_credential(cluster.kubeconfig).ca_bundle_pem == fields.issuer

        # every node keeps its layout; the multidoc layout has no cluster.ca
        for n in cluster.nodes:
            cfg = machineconfig.parse(n.config, n.address)
            assert cfg.kube_ca_layout == layout
            assert validation.validate(cfg) == []
        assert not (await replan(cluster)).plan.has_changes

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2, config_layout=layout, **FAST)


def test_gates_wait_through_the_api_restart_and_the_not_ready_window(tmp_path: Path) -> None:
    """Every kubelet restart (accept, swap, remove) is waited for and every gate passes after the
    API servers' restarts: the apply completes, every kubelet step is ok, the reporter said so."""
    reporter = Notes()

    async def scenario(cluster: SimCluster) -> tuple[applier.Applied, list[int], list[bool]]:
        applied = await plan_and_apply(cluster, reporter)
        return applied, [n.kubelet.restarts for n in cluster.nodes], [n.kubelet.ready for n in cluster.nodes]

    applied, restarts, ready = run_with_cluster(
        scenario,
        tmp_path / "sim",
        controlplanes=1,
        workers=1,
        k8s=True,
        apiserver_restart_ms=1200,
        kubelet_rejoin_ms=600,
        config_layout="legacy",
    )
    assert restarts == [3, 3] and ready == [True, True]  # accept, swap, remove: each waited for
    kubelet_steps = [s for s in applied.steps if s.kind == "kubelet"]
    assert len(kubelet_steps) == 6 and all(s.outcome == "ok" for s in kubelet_steps), kubelet_steps
    assert any("waiting for its kubelet to restart" in n for n in reporter.notes)
    assert any(t.startswith("gate after") and "Kubernetes API" in t for t in reporter.titles), reporter.titles


def test_a_kubelet_that_never_comes_back_fails_the_apply_with_the_node_named(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> tuple[str, str, StateDocument]:
        set_verify_timeout(cluster, 1.5)
        stuck = cluster.workers[0]
        stuck.faults.kubelet_stuck = True
        with pytest.raises(ProviderError) as info:
            await plan_and_apply(cluster)
        state = LocalState(cluster.dir / "trustplan.state.json").read("sim")
        return stuck.address, str(info.value), state

    address, message, state = run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=2, **FAST)
    assert f"kubelet on {address} did not come back within 1.5 s" in message
    entry = state.history[-1]
    assert entry.status == "failed"
    assert any(s.kind == "kubelet" and s.outcome == "failed" and s.node == address for s in entry.steps)


def test_an_unhealthy_kubelet_is_not_touched(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> tuple[str, str, bytes, bytes]:
        set_verify_timeout(cluster, 2)  # the gates cannot pass with a node NotReady: no need to wait 60 s
        worker = cluster.workers[0]
        worker.kubelet.halt()
        before = worker.config
        with pytest.raises(ProviderError) as info:
            await plan_and_apply(cluster)
        return worker.address, str(info.value), before, worker.config

    address, message, before, after = run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1, **FAST)
    assert f"kubelet is not healthy on {address} (not running)" in message
    assert before == after  # nothing was sent to it


def test_the_next_control_plane_waits_for_the_api_server_and_a_timeout_stops_the_apply(tmp_path: Path) -> None:
    """A control plane's kube-apiserver that is not back within the verify timeout stops the apply
    before the next control plane is written (its API server keeps serving), naming node and cause;
    the rollback follows today's rules (here it waits for the same restarting API server, and says so)."""

    async def scenario(cluster: SimCluster) -> tuple[str, StateDocument, dict[str, int]]:
        set_verify_timeout(cluster, 1.5)
        with pytest.raises(ProviderError) as info:
            await plan_and_apply(cluster)
        state = LocalState(cluster.dir / "trustplan.state.json").read("sim")
        return str(info.value), state, {cp.address: cp.version for cp in cluster.controlplanes}

    message, state, versions = run_with_cluster(
        scenario, tmp_path / "sim", controlplanes=2, workers=0, k8s=True, apiserver_restart_ms=6000,
        kubelet_rejoin_ms=150,
    )
    written = [a for a, v in versions.items() if v > 1]
    assert len(written) == 1 and sorted(versions.values())[0] == 1, versions  # the other one never written
    assert f"apply stopped: {written[0]}:6443: kube-apiserver not ready (/readyz)" in message, message
    assert "within 1.5 s: timeout: connection refused" in message
    steps = state.history[-1].steps
    assert {s.node for s in steps if s.kind == "write"} == {written[0]}  # the next control plane: no write
    assert any(s.kind == "apiserver" and s.outcome == "failed" and s.node == written[0] for s in steps)

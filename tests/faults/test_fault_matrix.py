"""Issue 8: the fault matrix. Each of the simulator's fault hooks is injected as a phase of a
both-PKI rotation starts (accept, swap, remove). Whatever the apply then does (pass, stop, roll
back), the case must end with the cluster reachable with the talosconfig and kubeconfig on disk,
the state equal to the live configs, and a new plan + apply that completes.

    make test-faults            # with the kill test
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e.test_kubernetes_rotation import Notes, kube_check, set_verify_timeout
from e2e.test_talos_rotation import plan, version_with
from simharness import run_with_cluster
from trustplan.state import LocalState
from trustplan_sim.cluster import SimCluster
from waiting import until

from trustplan.engine import applier
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import TrustplanError
from trustplan.talos import pki

SIM: dict[str, Any] = {"k8s": True, "apiserver_restart_ms": 200, "kubelet_rejoin_ms": 150, "latency_ms": 10}


class _Seen(logging.Handler):
    """Sets `event` when a log record's message contains every one of `words`."""

    def __init__(self, event: asyncio.Event, *words: str) -> None:
        super().__init__(logging.INFO)
        self.event, self.words = event, words

    def emit(self, record: logging.LogRecord) -> None:
        if all(w in record.getMessage() for w in self.words):
            self.event.set()


async def _down_and_back(cluster: SimCluster, inject: Inject) -> None:
    """worker-1 goes away as a patch phase starts and comes back once the apply has found it down
    (a call to it failed with connection refused and is being retried), or once the apply is over."""
    worker = cluster.node("worker-1")
    await cluster.stop_node("worker-1")
    seen = asyncio.Event()
    talos_log = logging.getLogger("trustplan.talos")
    handler, level = _Seen(seen, f"dial tcp {worker.address}:", "connection refused", "retrying"), talos_log.level
    talos_log.addHandler(handler)
    talos_log.setLevel(logging.INFO)
    try:
        waits = [asyncio.ensure_future(seen.wait()), asyncio.ensure_future(inject.over.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    finally:
        talos_log.removeHandler(handler)
        talos_log.setLevel(level)
    inject.note(f"worker-1 back: {'the apply found it down' if seen.is_set() else 'the apply was over'}")
    await cluster.start_node("worker-1")


def _apply_error(cluster: SimCluster, inject: Inject) -> None:
    cluster.node("cp-2").faults.apply_error = "injected failure"
    cluster.node("cp-2").faults.apply_error_times = 1


def _dropped_reply(cluster: SimCluster, inject: Inject) -> None:
    cluster.node("worker-1").faults.die_on_apply = True


def _kubelet_stuck(cluster: SimCluster, inject: Inject) -> None:
    cluster.node("worker-1").faults.kubelet_stuck = True


def _slow_apiserver(cluster: SimCluster, inject: Inject) -> None:
    cluster.apiserver_restart_ms = 2500


def _latency(cluster: SimCluster, inject: Inject) -> None:
    cluster.latency = 0.08


FAULTS: dict[str, Callable[[SimCluster, Inject], Any]] = {
    "node-down-and-back": _down_and_back,
    "apply-error": _apply_error,
    "dropped-reply": _dropped_reply,
    "kubelet-stuck": _kubelet_stuck,
    "slow-apiserver-restart": _slow_apiserver,
    "latency": _latency,
}


async def heal(cluster: SimCluster) -> None:
    """Take every fault away again (what an operator fixes before finishing the job)."""
    cluster.apiserver_restart_ms = SIM["apiserver_restart_ms"]
    cluster.latency = SIM["latency_ms"] / 1000
    for node in cluster.nodes:
        stuck = node.faults.kubelet_stuck
        node.faults.apply_error = None
        node.faults.die_on_apply = False
        node.faults.kubelet_stuck = False
        if not node.running:
            await cluster.start_node(node.name)
        if stuck:
            node.kubelet.restart()
    await until(lambda: all(n.kubelet.ready for n in cluster.nodes), "every kubelet is back", timeout=60)


class Inject(Notes):
    def __init__(self, cluster: SimCluster, phase: str, fault: str) -> None:
        super().__init__()
        self.cluster, self.phase, self.fault = cluster, phase, fault
        self.tasks: list[asyncio.Task[Any]] = []
        self.injected = False
        self.over = asyncio.Event()  # set when the apply has ended, however it ended

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if not self.injected and title.startswith(f"{self.phase}: patching"):
            self.injected = True
            result = FAULTS[self.fault](self.cluster, self)
            if asyncio.iscoroutine(result):
                self.tasks.append(asyncio.get_running_loop().create_task(result))


async def credentials_work(cluster: SimCluster) -> None:
    results = await version_with(cluster, cluster.talosconfig)
    assert all(not v.startswith("refused") for v in results.values()), results
    ready = await kube_check(cluster, cluster.kubeconfig, timeout=20)
    assert all(f"{len(cluster.nodes)} nodes Ready" in r for r in ready.values()), ready


@pytest.mark.faults
@pytest.mark.parametrize("phase", ["accept", "swap", "remove"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_at_phase_ends_with_working_credentials_and_a_finishable_rotation(
    tmp_path: Path, fault: str, phase: str
) -> None:
    async def scenario(cluster: SimCluster) -> str:
        set_verify_timeout(cluster, 8)
        desired, planned = await plan(cluster)
        inject = Inject(cluster, phase, fault)
        outcome = "applied"
        try:
            request = ApplyRequest(desired, planned.saved, "sha256:" + "4" * 64, "plan", pki.utcnow())
            await applier.apply_desired(request, reporter=inject)
        except TrustplanError as exc:
            outcome = ("rolled back" if "rolled back:" in str(exc) else "stopped") + f" ({str(exc)[:300]})"
        finally:
            inject.over.set()
        assert inject.injected, (inject.titles, outcome)
        for task in inject.tasks:
            await task
        await heal(cluster)
        await credentials_work(cluster)  # whatever happened, the credentials on disk work

        desired, again = await plan(cluster)  # a new plan finishes the job
        await applier.apply_desired(ApplyRequest(desired, again.saved, "sha256:" + "5" * 64, "plan", pki.utcnow()))
        await credentials_work(cluster)
        _, final = await plan(cluster)
        assert not final.plan.has_changes
        state = LocalState(desired.state).read("sim")
        assert {a: n.config_digest for a, n in state.nodes.items()} == final.live.digests()
        return outcome + "".join(f"; {n}" for n in inject.notes if n.startswith("worker-1 back"))

    outcome = run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1, **SIM)
    print(f"{fault} at {phase}: {outcome}")

"""The control-plane rollout of a Kubernetes CA rotation keeps the Kubernetes API up on real
kube-apiservers: the next control plane is written only once the previous one's kube-apiserver
answers /readyz again, so at no instant are all control planes' API servers down together.

Measured by polling /readyz of every control plane (as the simulator checks readiness: verified
TLS, anonymous) while `trustplan apply` rotates both PKIs. `make test-realk8s`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from simharness import run_with_cluster
from test_real_k8s import _binaries, plan_and_apply  # noqa: F401 - the fixture fails/skips without binaries
from trustplan_sim import realk8s
from trustplan_sim.cluster import SimCluster

pytestmark = pytest.mark.realk8s


class ReadyzPoller:
    """Polls /readyz of every control plane in a thread; `rounds` holds (time, names not ready)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.apis = {cp.name: cp.apiserver for cp in cluster.controlplanes}
        assert all(isinstance(a, realk8s.RealAPIServer) for a in self.apis.values())
        self.rounds: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            down = frozenset(n for n, a in self.apis.items() if not a.ready())  # type: ignore[union-attr]
            self.rounds.append((at, down))
            time.sleep(0.05)

    def __enter__(self) -> ReadyzPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_at_most_one_api_server_down_at_a_time(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        with ReadyzPoller(cluster) as poller:
            applied = await plan_and_apply(cluster)
        assert all(s.outcome == "ok" for s in applied.steps)
        apis = [cp.apiserver for cp in cluster.controlplanes]
        restarts = [a.restarts for a in apis if isinstance(a, realk8s.RealAPIServer)]
        assert len(restarts) == 3 and all(n >= 2 for n in restarts), restarts  # accept, swap, remove
        assert len(poller.rounds) > 50
        seen_down = set().union(*(down for _, down in poller.rounds))
        assert seen_down == {"cp-1", "cp-2", "cp-3"}, seen_down  # the poller saw every restart
        together = [(round(t - poller.rounds[0][0], 1), sorted(d)) for t, d in poller.rounds if len(d) > 1]
        assert not together, f"API servers down together (seconds into the apply, which): {together[:10]}"
        # the journal says it waited for each control plane's API server
        readied = {s.node for s in applied.steps if s.kind == "apiserver" and s.outcome == "ok"}
        assert readied == {cp.address for cp in cluster.controlplanes}

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=1, k8s=True, k8s_mode="real",
                     config_layout="multidoc", kubelet_rejoin_ms=100)

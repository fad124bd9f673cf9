"""Issue 8: rollback before remove. A step that fails before the new credentials are written
returns the nodes this apply changed to their CAs of before (a checked reverse plan), verifies them
with the credential that worked before, and reports per node; `--no-rollback` leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.test_kubernetes_rotation import Notes
from e2e.test_talos_rotation import plan, version_with
from simharness import run_with_cluster
from trustplan.state import LocalState
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import TrustplanError
from trustplan.talos import machineconfig, pki


class FailInSwap(Notes):
    """Makes the worker's ApplyConfiguration fail once, as the swap phase starts."""

    def __init__(self, cluster: SimCluster) -> None:
        super().__init__()
        self.cluster = cluster

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if title.startswith("swap: patching") and not any(t.startswith("swap") for t in self.titles[:-1]):
            self.cluster.workers[0].faults.apply_error = "disk full"
            self.cluster.workers[0].faults.apply_error_times = 1


def talos_trust(cluster: SimCluster) -> set[tuple[bytes | None, tuple[bytes, ...]]]:
    out = set()
    for n in cluster.nodes:
        fields = machineconfig.parse(n.config, n.name).ca_fields("talos")
        out.add((fields.issuer, fields.accepted))
    return out


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "no-rollback"])
def test_a_failure_in_the_swap_phase_rolls_the_nodes_back(tmp_path: Path, rollback: bool) -> None:
    async def scenario(cluster: SimCluster) -> None:
        before = talos_trust(cluster)
        old = tmp_path / "old-talosconfig"
        old.write_bytes(cluster.talosconfig.read_bytes())
        desired, planned = await plan(cluster)
        with pytest.raises(TrustplanError) as stopped:
            await applier.apply_desired(ApplyRequest(desired, planned.saved, "sha256:" + "3" * 64, "plan", pki.utcnow(),
                                                     rollback=rollback), reporter=FailInSwap(cluster))
        message = str(stopped.value)
        assert "disk full" in message
        last = LocalState(desired.state).read("sim").history[-1]
        if rollback:
            assert "rolled back: every node changed by this apply has its CAs of before" in message
            for n in cluster.nodes:
                assert f"{n.address}: back to talos: " in message
            assert talos_trust(cluster) == before  # the exact CA entries of before
            assert all(not v.startswith("refused") for v in (await version_with(cluster, old)).values())
            assert any(s.phase.startswith("rollback") for s in last.steps)
        else:
            assert "no rollback (--no-rollback)" in message
            assert talos_trust(cluster) != before
            assert not any(s.phase.startswith("rollback") for s in last.steps)
        _, again = await plan(cluster)  # either way a new plan finishes the job
        assert again.plan.has_edits

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1)

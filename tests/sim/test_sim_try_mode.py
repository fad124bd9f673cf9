"""Issue 20: the simulator's ApplyConfiguration mode TRY, as Talos v1.14.1 implements it
(v1alpha1_server.go: RollbackToConfigAfter before SetConfig; CancelConfigRollbackTimeout on any other
mode), driven through trustplan's own provider (write_trial, then write to confirm)."""

from __future__ import annotations

from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan.providers.talos.provider import TalosProvider
from trustplan_sim.cluster import SimCluster
from waiting import until


@pytest.mark.parametrize("confirmed", [False, True], ids=["reverted", "confirmed"])
def test_a_try_write_reverts_on_its_own_unless_a_later_write_confirms_it(tmp_path: Path, confirmed: bool) -> None:
    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        before = worker.config
        edited = before.replace(b"hostname: worker-1", b"hostname: worker-one")
        ref = next(r for r in cluster.node_refs() if r.address == worker.address)
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs()) as provider:
            said = await provider.write_trial(ref, edited, timeout=0.5)
            assert "automatically reverted back in 0.5s" in said
            assert (await provider.read(ref)).data == edited and worker.rollback_pending
            if confirmed:
                await provider.write(ref, edited)  # NO_REBOOT: the revert is cancelled
                assert not worker.rollback_pending and worker.config == edited
            else:
                await until(lambda: worker.config == before, "the node reverted the try")
                assert (await provider.read(ref)).data == before and not worker.rollback_pending

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)


def test_a_second_try_reverts_to_the_config_active_when_it_arrived(tmp_path: Path) -> None:
    """Talos captures the *active* config at each try: a try over a pending try reverts to the first
    try's config, not to the persisted one. (Why trustplan never retries a try that landed.)"""

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        one = worker.config.replace(b"hostname: worker-1", b"hostname: worker-one")
        two = worker.config.replace(b"hostname: worker-1", b"hostname: worker-two")
        ref = next(r for r in cluster.node_refs() if r.address == worker.address)
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs()) as provider:
            await provider.write_trial(ref, one, timeout=60)
            await provider.write_trial(ref, two, timeout=0.3)
            await until(lambda: worker.config == one, "the second try reverted to the first")
            assert not worker.rollback_pending  # the first try's revert was replaced, not kept

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)

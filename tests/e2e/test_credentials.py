"""Issue 8: a working credential, always. The outputs are part of the desired state: a plan rewrites a
talosconfig or kubeconfig that the live cluster refuses, new credentials are written before the
remove phase (keeping the previous file as a backup), and `status` reads a half-done cluster with a
fallback credential and says so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.test_kubernetes_rotation import FAST, Notes, kube_check, set_verify_timeout
from e2e.test_talos_rotation import plan, version_with
from simharness import run_with_cluster
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import TrustplanError
from trustplan.system.atomic import backup_path
from trustplan.talos import pki


def working(results: dict[str, str]) -> bool:
    return all(not v.startswith("refused") for v in results.values())


async def apply(cluster: SimCluster, reporter: Notes | None = None) -> applier.Applied:
    desired, planned = await plan(cluster)
    return await applier.apply_desired(
        ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow()), reporter=reporter
    )


def test_refused_credentials_on_disk_are_rewritten_although_every_node_is_done(tmp_path: Path) -> None:
    """Every node on the new CAs only, the old talosconfig and kubeconfig on disk, no state: what a
    kill between the remove phase and the outputs left before. The plan is not "No changes"."""

    async def scenario(cluster: SimCluster) -> None:
        old_tc, old_kc = cluster.talosconfig.read_bytes(), cluster.kubeconfig.read_bytes()
        await apply(cluster)
        cluster.talosconfig.write_bytes(old_tc)  # the credentials of before, refused everywhere
        cluster.kubeconfig.write_bytes(old_kc)
        (cluster.dir / "trustplan.state.json").unlink()
        assert not working(await version_with(cluster, cluster.talosconfig))

        desired, planned = await plan(cluster)  # reads the nodes with a keystore fallback credential
        assert planned.plan.has_changes and not planned.plan.has_edits
        assert [o.output for o in planned.plan.outputs] == ["talosconfig", "kubeconfig"]  # secrets.yaml is right
        assert any("fallback credential" in n for n in planned.notes)
        assert any("talosconfig" in n and "does not work" in n for n in planned.notes)
        await applier.apply_desired(ApplyRequest(desired, planned.saved, "sha256:" + "2" * 64, "plan", pki.utcnow()))

        assert working(await version_with(cluster, cluster.talosconfig))
        results = await kube_check(cluster, cluster.kubeconfig)
        assert all("5 nodes Ready" in r for r in results.values())
        assert backup_path(cluster.talosconfig).read_bytes() == old_tc  # the file it replaced
        _, again = await plan(cluster)
        assert not again.plan.has_changes  # now everything works: nothing to do

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2, **FAST)


def test_a_final_gate_that_fails_leaves_working_credentials_on_disk(tmp_path: Path) -> None:
    """A node goes down during the last gate: the apply stops, but the new talosconfig and
    kubeconfig were written before the remove phase, and they work on every node."""

    class DownAtLastGate(Notes):
        def __init__(self, cluster: SimCluster) -> None:
            super().__init__()
            self.cluster = cluster
            self.tasks: list[object] = []

        def start(self, title: str, total: int) -> None:
            super().start(title, total)
            if title.startswith("gate after remove") and not self.tasks:
                self.tasks.append(asyncio.get_running_loop().create_task(self.cluster.stop_node("worker-2")))

    async def scenario(cluster: SimCluster) -> None:
        set_verify_timeout(cluster, 2)
        reporter = DownAtLastGate(cluster)
        with pytest.raises(TrustplanError, match="apply stopped"):
            await apply(cluster, reporter)
        assert reporter.tasks, reporter.titles
        await cluster.start_node("worker-2")
        assert working(await version_with(cluster, cluster.talosconfig))
        results = await kube_check(cluster, cluster.kubeconfig)
        assert all("4 nodes Ready" in r for r in results.values())

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=2, **FAST)


def test_status_reads_a_half_done_cluster_with_a_fallback_credential(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> subprocess.CompletedProcess[str]:
        old_tc = cluster.talosconfig.read_bytes()
        await apply(cluster)
        cluster.talosconfig.write_bytes(old_tc)
        return await _run_status(cluster)

    result = run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)
    assert result.returncode == 0, result.stderr
    assert "fallback credential" in result.stderr
    assert "talosconfig" in result.stderr and "does not work" in result.stderr


async def _run_status(cluster: SimCluster) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "trustplan", "status"],
        cwd=cluster.dir,
        capture_output=True,
        text=True,
        timeout=120,
    )

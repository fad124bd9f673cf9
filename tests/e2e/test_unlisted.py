"""Issue 8: a node left out of cluster.nodes is not locked out without warning. With the talos
provider plan compares cluster.nodes with the cluster's Members and refuses, naming the nodes, when
they would lose trust; `--allow-unlisted NODE` for a node that really is gone. With files, the
notes say which nodes the rotation covers."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan_sim.cluster import SimCluster

from trustplan.engine import planning as engine
from trustplan.errors import UnsafePlanError
from trustplan.formats import desired as desired_mod
from trustplan.talos import pki


def drop_workers(cluster: SimCluster) -> None:
    path = cluster.dir / "trustplan.yaml"
    path.write_text(re.sub(r"worker: \[[^\]]*\]", "worker: []", path.read_text()))


def test_workers_left_out_of_cluster_nodes_are_named_and_the_plan_refused(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> tuple[str, engine.Planned]:
        drop_workers(cluster)
        desired = desired_mod.load(cluster.dir / "trustplan.yaml")
        assert len(desired.nodes) == 1
        with pytest.raises(UnsafePlanError) as refused:
            await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        workers = tuple(n.address for n in cluster.workers)
        allowed = await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1), allow_unlisted=workers)
        return str(refused.value), allowed

    message, allowed = run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=2)
    assert "cluster members not in cluster.nodes would lose trust" in message
    assert re.search(r"127\.\d+\.\d+\.3 \(worker worker-1\), 127\.\d+\.\d+\.4 \(worker worker-2\)", message), message
    assert allowed.plan.has_changes
    assert sum("allowed by --allow-unlisted" in n for n in allowed.notes) == 2


def test_a_complete_node_list_plans_without_a_word_about_members(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> engine.Planned:
        desired = desired_mod.load(cluster.dir / "trustplan.yaml")
        return await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))

    planned = run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)
    assert planned.plan.has_changes and not any("cluster.nodes" in n for n in planned.notes)

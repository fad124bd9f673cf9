"""apply refuses a plan whose cluster moved on (applier.check_live): a node whose live config changed
since planning, and a node the plan never saw, each named in the one error; nothing is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_runner import _cluster, _plan
from trustplan.providers.base import NodeConfig

from trustplan.engine.applier import check_live
from trustplan.errors import PlanFileError


def test_a_node_not_in_the_plan_makes_it_stale(tmp_path: Path) -> None:
    desired, provider = _cluster(tmp_path)
    planned = _plan(desired, provider)
    check_live(planned.plan, planned.live, "plan.bin")  # the cluster it was made from: accepted
    extra = dataclasses.replace(planned.live.raw["10.5.0.6"], digest="sha256:" + "9" * 64)
    grown = dataclasses.replace(planned.live, raw={**planned.live.raw, "10.5.0.9": extra})
    with pytest.raises(PlanFileError) as exc:
        check_live(planned.plan, grown, "plan.bin")
    assert str(exc.value) == "plan.bin: the plan is stale: nodes not in the plan: 10.5.0.9"
    assert exc.value.hint is not None and "nothing was changed" in exc.value.hint


def test_a_changed_node_and_an_added_one_are_both_named(tmp_path: Path) -> None:
    desired, provider = _cluster(tmp_path)
    planned = _plan(desired, provider)
    raw = dict(planned.live.raw)
    changed: NodeConfig = dataclasses.replace(raw["10.5.0.3"], digest="sha256:" + "8" * 64)
    raw["10.5.0.3"] = changed
    raw["10.5.0.9"] = changed
    with pytest.raises(PlanFileError) as exc:
        check_live(planned.plan, dataclasses.replace(planned.live, raw=raw), "plan.bin")
    assert str(exc.value) == (
        "plan.bin: the plan is stale: live config changed on 10.5.0.3; nodes not in the plan: 10.5.0.9"
    )

"""`plan --allow-disruptive KIND` (issue 22): on a Talos before 1.14 a legacy single value is
replaced in place, in one write per control plane (the swap and the remove of the old one), and the
plan says what breaks and for how long; without the consent the plan is refused (test_kinds.py)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import fp, plan_input, want
from planner.test_kinds import CPS, auths, legacy_cluster
from trustplan.planner import Outputs, PlanningError, make_plan
from trustplan.planner.document import from_document, to_document


@pytest.mark.parametrize("kind", ["serviceaccount", "aggregator"])
def test_the_value_is_replaced_in_place_in_one_write_and_the_plan_says_what_breaks(kind: str) -> None:
    nodes = legacy_cluster(kind, "v1.12.1")
    inp = plan_input(nodes, want(kind, f"{kind}-new"), authorities=auths(kind), outputs=Outputs())
    plan = make_plan(dataclasses.replace(inp, allow_disruptive=(kind,)))
    assert [p.name for p in plan.phases] == ["swap"]  # nothing to move, nothing to accept first
    swap = plan.phases[0]
    for node in CPS:
        assert [(e.kind, e.pki) for e in swap.edits_for(node)] == [("swap", kind), ("remove", kind)]
    assert plan.deferred == ()  # no token drain: the old key goes at once
    [warning] = [w for w in plan.warnings if w.code == "disruptive"]
    assert warning.pki == kind and warning.fingerprint == fp(f"{kind}-old") and warning.nodes == tuple(CPS)
    assert f"`--allow-disruptive {kind}`" in warning.message and "Talos v1.12.1" in warning.message
    if kind == "serviceaccount":
        assert "every bound service-account token and every legacy token Secret signed with" in warning.message
        assert "until the kubelet refreshes their projected token" in warning.message
    else:
        assert "aggregated APIs" in warning.message and "until every API server has restarted" in warning.message
    assert from_document(to_document(plan)).warnings == plan.warnings  # the JSON plan carries it


def test_the_consent_covers_the_kinds_it_names_and_a_version_that_needs_it() -> None:
    nodes = legacy_cluster("serviceaccount", "v1.12.1")
    inp = plan_input(nodes, want("serviceaccount", "serviceaccount-new"), authorities=auths("serviceaccount"))
    with pytest.raises(PlanningError, match="--allow-disruptive serviceaccount"):
        make_plan(dataclasses.replace(inp, allow_disruptive=("aggregator",)))
    moved = legacy_cluster("serviceaccount", "v1.14.1")  # Talos takes the document: moved, graceful
    inp = plan_input(moved, want("serviceaccount", "serviceaccount-new"), authorities=auths("serviceaccount"),
                     outputs=Outputs())
    plan = make_plan(dataclasses.replace(inp, allow_disruptive=("serviceaccount",)))
    assert plan.phases[0].name == "move" and not any(w.code == "disruptive" for w in plan.warnings)


def test_an_accepted_authority_cannot_be_kept_beside_a_single_value() -> None:
    nodes = legacy_cluster("aggregator", "v1.12.1")
    keep = want("aggregator", "aggregator-new", "aggregator-old")
    inp = plan_input(nodes, keep, authorities=auths("aggregator"), outputs=Outputs())
    with pytest.raises(PlanningError, match="trust.aggregator.accepted: control plane 10.5.0.2 keeps"):
        make_plan(dataclasses.replace(inp, allow_disruptive=("aggregator",)))

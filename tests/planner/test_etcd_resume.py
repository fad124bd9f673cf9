"""The resume of an interrupted etcd CA roll, two ways that must agree: planner.etcd.plan_etcd (the
reference model: a member's field plus what the running member was seen to accept) and what apply runs,
make_plan over each member's trust as engine.etcdprobe.effective reports it from the same probes. Every
state a roll can stop in is tried: after each step, between a write and its reboot, and after a rollback
of the accept (the field written back without a reboot: the member runs more than its field says)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import cluster, fp, plan_input, trust, want
from test_kinds import CPS, _no_outputs, auths
from trustplan.planner import LiveNode, LiveTrust, PlanningError, UnsafePlan, make_plan
from trustplan.planner.etcd import EtcdMember, EtcdPlanRefused, plan_etcd

from trustplan.engine.etcdprobe import effective

OLD, NEW = fp("etcd-old"), fp("etcd-new")


@dataclasses.dataclass
class Member:
    name: str
    field: tuple[str, ...]  # the config's cluster.etcd.ca: issuer first
    running: frozenset[str]  # what the running member loaded at its last start


def states() -> list[list[Member]]:
    """Every state of a 3-member roll: after k full steps, and with step k written but not restarted."""
    fresh = [Member(a, (OLD,), frozenset({OLD})) for a in CPS]
    full = plan_etcd([EtcdMember(m.name, OLD, (), False, False) for m in fresh], OLD, NEW)
    out = []
    for k in range(len(full) + 1):
        members = [dataclasses.replace(m) for m in fresh]
        for step in full[:k]:
            m = next(x for x in members if x.name == step.member)
            m.field = (step.issuer, *step.accepted)
            m.running = frozenset(m.field) if step.restart else m.running
        out.append(members)
        if k < len(full) and full[k].restart:
            half = [dataclasses.replace(m) for m in members]
            m = next(x for x in half if x.name == full[k].member)
            m.field = (full[k].issuer, *full[k].accepted)  # written, reboot never came
            out.append(half)
        if 0 < k <= len(CPS):  # apply rolled the accept back: the old field again, without a reboot
            out.append([dataclasses.replace(m, field=(OLD,)) for m in members])
    return out


def reference(members: list[Member]) -> list[tuple[str, str]] | str:
    model = [EtcdMember(m.name, m.field[0], m.field[1:], NEW in m.running, OLD not in m.running) for m in members]
    try:
        return [(s.phase, s.member) for s in plan_etcd(model, OLD, NEW)]
    except EtcdPlanRefused:
        return "refused"


def planned(members: list[Member]) -> list[tuple[str, str]] | str:
    by_address = {m.name: m for m in members}

    def node(n: LiveNode) -> LiveNode:
        m = by_address.get(n.address)
        if m is None:
            return n
        config = LiveTrust(m.field[0], True, m.field[1:])
        ran = effective(config, {OLD: OLD in m.running, NEW: NEW in m.running})
        return dataclasses.replace(n, others=(("etcd", ran),))

    nodes = tuple(node(n) for n in cluster(trust("old")))
    try:
        plan = make_plan(plan_input(nodes, want("etcd", "etcd-new"), authorities=auths("etcd"), outputs=_no_outputs()))
    except (PlanningError, UnsafePlan):
        return "refused"
    return [(p.name, e.node) for p in plan.phases for e in p.edits if e.pki == "etcd"]


@pytest.mark.parametrize("k", range(len(states())))
def test_apply_resumes_as_the_reference_model_does(k: int) -> None:
    members = states()[k]
    assert planned(members) == reference(members)

"""planner.etcd: the etcd CA's rolling steps, the quorum each keeps, resuming, and the states it refuses."""

from __future__ import annotations

import pytest
from trustplan.planner.etcd import EtcdMember, EtcdPlanRefused, plan_etcd, quorum

OLD, NEW = "sha256:old", "sha256:new"


def _fresh(n: int) -> list[EtcdMember]:
    return [EtcdMember(f"cp-{k}", OLD, (), False, False) for k in range(n, 0, -1)]


@pytest.mark.parametrize("n", [3, 5])
def test_fresh_cluster_rolls_every_phase_one_member_at_a_time(n: int) -> None:
    steps = plan_etcd(_fresh(n), OLD, NEW)
    names = [f"cp-{k}" for k in range(1, n + 1)]
    assert [(s.phase, s.member) for s in steps] == [(p, m) for p in ("accept", "swap", "remove") for m in names]
    assert all(s.up_during >= s.quorum == quorum(n) for s in steps)
    assert {(s.phase, s.restart, s.up_during) for s in steps} == {
        ("accept", True, n - 1), ("swap", False, n), ("remove", True, n - 1)}
    assert steps[0].describe({OLD: "old", NEW: "new"}) == (
        f"accept cp-1: etcd CA = old + new (issues from old); restart etcd; {n - 1} of {n} members up, "
        f"quorum {quorum(n)}")


def test_resumes_where_an_interrupted_apply_stopped() -> None:
    members = [
        EtcdMember("cp-1", NEW, (OLD,), True, False),   # swapped
        EtcdMember("cp-2", OLD, (NEW,), True, False),   # accepted, restarted
        EtcdMember("cp-3", OLD, (NEW,), True, False),
    ]
    steps = plan_etcd(members, OLD, NEW)
    assert [(s.phase, s.member) for s in steps] == [
        ("swap", "cp-2"), ("swap", "cp-3"), ("remove", "cp-1"), ("remove", "cp-2"), ("remove", "cp-3")]


def test_a_written_field_whose_member_never_restarted_is_restarted() -> None:
    members = [EtcdMember("cp-1", OLD, (NEW,), False, False)] + _fresh(3)[:2]
    assert [(s.phase, s.member, s.restart) for s in plan_etcd(members, OLD, NEW)][:3] == [
        ("accept", "cp-1", True), ("accept", "cp-2", True), ("accept", "cp-3", True)]


def test_done_is_empty() -> None:
    assert plan_etcd([EtcdMember(f"cp-{k}", NEW, (), True, True) for k in (1, 2, 3)], OLD, NEW) == ()


@pytest.mark.parametrize(("members", "message"), [
    (_fresh(1), "a cluster of 1 etcd member loses quorum while one restarts"),
    (_fresh(2), r"a cluster of 2 etcd members loses quorum while one restarts \(quorum 2 of 2\)"),
    ([EtcdMember("cp-1", NEW, (), False, False)] + _fresh(3)[:2],
     "etcd member cp-1 issues from the new CA but cp-1 does not trust it yet"),
    ([EtcdMember("cp-1", OLD, ("sha256:other",), False, False)] + _fresh(3)[:2],
     "cp-1 trusts a CA that is neither the old nor the new one"),
])
def test_refused(members: list[EtcdMember], message: str) -> None:
    with pytest.raises(EtcdPlanRefused, match=message):
        plan_etcd(members, OLD, NEW)

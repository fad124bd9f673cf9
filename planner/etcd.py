"""The etcd CA's rolling plan: accept, swap, remove, one control plane at a time, with the quorum each
step keeps. Pure: members in, steps out.

Talos has one field for the etcd CA, `cluster.etcd.ca`, used as a bundle (docs/talos-model.md, "The etcd
CA"): every block is trusted, the first issues. etcd reads that trust only when it starts, and
`ServiceRestart` of etcd is refused by Talos, so a member takes up a new bundle when its node reboots.
Hence each step that changes what a member trusts restarts it, and two members are never down at once:

    accept   crt = old + new, key = old; restart     every member trusts both, leaves still from old
    swap     crt = new + old, key = new              leaves from new (etcd loads them per handshake)
    remove   crt = new, key = new; restart           the old CA is trusted nowhere

A member's progress is read from its config (the field) and from probes of the running member: does it
accept a client certificate from the new CA (it restarted with the bundle), does it refuse one from the
old CA (it restarted without it). So a plan computed after an interrupted apply resumes where it
stopped. Phases are barriers; within a phase members go in name order.

    plan_etcd(members, old, new)   the reference model of the roll from members' fields and probes
    rolling_steps(plan)            the etcd steps of a plan make_plan made (what the plans show, what
                                   apply runs); make_plan is given each member's trust as the probes
                                   report it (engine.etcdprobe), and tests/planner/test_etcd_resume.py
                                   checks both take the same steps in every state a roll can stop in
    check_members(n)               refuses fewer than 3 members (a restart would lose quorum)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trustplan.planner.model import LiveTrust
from trustplan.planner.ops import apply_edit

if TYPE_CHECKING:
    from trustplan.planner.result import Plan

Phase = Literal["accept", "swap", "remove"]


class EtcdPlanRefused(ValueError):
    """The etcd CA cannot be rotated gracefully from this state; the message says why and what to do."""


@dataclass(frozen=True)
class EtcdMember:
    """One control plane's etcd member as read: its field (issuer first) and what the running member
    was seen to accept."""

    name: str
    issuer: str  # fingerprint of the first block of cluster.etcd.ca.crt
    accepted: tuple[str, ...]  # fingerprints of the other blocks, in order
    trusts_new: bool  # the running member accepted a client certificate from the new CA
    refuses_old: bool  # the running member refused a client certificate from the old CA


@dataclass(frozen=True)
class EtcdStep:
    """Write the member's field to `issuer` + `accepted`, then restart it if `restart`; the gate after
    it waits for every member healthy, one leader, every revision caught up."""

    phase: Phase
    member: str
    issuer: str
    accepted: tuple[str, ...]
    restart: bool
    members: int
    up_during: int  # members serving while this step runs
    quorum: int  # members a majority needs

    def describe(self, label: dict[str, str] | None = None) -> str:
        """One line for the text and Markdown plans, e.g.
        `accept cp-1: etcd CA = old + new (issues from old); restart etcd; 2 of 3 members up, quorum 2`."""
        name = (label or {}).get
        bundle = " + ".join(name(fp, fp) for fp in (self.issuer, *self.accepted))
        action = "restart etcd" if self.restart else "no restart (new leaves load at the next handshake)"
        return (f"{self.phase} {self.member}: etcd CA = {bundle} (issues from {name(self.issuer, self.issuer)}); "
                f"{action}; {self.up_during} of {self.members} members up, quorum {self.quorum}")


    def line(self, label: dict[str, str] | None = None) -> str:
        """The plan's line for a step of apply, e.g. `accept 10.5.0.2: reboot, 2 of 3 members up,
        quorum 2; etcd CA = old + new (issues from old)`."""
        name = (label or {}).get
        bundle = " + ".join(name(fp, fp) for fp in (self.issuer, *self.accepted))
        action = "reboot" if self.restart else "no restart"
        return (f"{self.phase} {self.member}: {action}, {self.up_during} of {self.members} members up, quorum "
                f"{self.quorum}; etcd CA = {bundle} (issues from {name(self.issuer, self.issuer)})")


def rolling_steps(plan: Plan) -> tuple[EtcdStep, ...]:
    """The etcd steps a plan's apply takes: per phase, each control plane whose etcd field it edits, in
    the order apply writes them (one at a time in accept and remove, each followed by a reboot)."""
    fields = {t.node: t.before for t in plan.targets if t.pki == "etcd"}
    n = len(fields)
    steps: list[EtcdStep] = []
    for phase in plan.phases:
        if phase.name not in ("accept", "swap", "remove"):
            continue
        for node in plan.nodes:
            edits = [e for e in phase.edits_for(node.address) if e.pki == "etcd"]
            if not edits:
                continue
            after: LiveTrust = fields[node.address]
            for e in edits:
                after = apply_edit(after, e)
            fields[node.address] = after
            restart = phase.name != "swap"
            steps.append(EtcdStep(phase.name, node.address, after.issuer or "?", after.accepted, restart, n,
                                  n - (1 if restart else 0), quorum(n)))
    return tuple(steps)


def check_members(members: int) -> None:
    """EtcdPlanRefused when a cluster of `members` cannot keep quorum while one member restarts."""
    if 0 < members < 3:
        raise EtcdPlanRefused(f"a cluster of {members} etcd member{'s' if members > 1 else ''} loses quorum while "
                              f"one restarts (quorum {quorum(members)} of {members}): add control planes to reach 3 "
                              "first")


def quorum(members: int) -> int:
    """Votes a cluster of `members` needs: a majority."""
    return members // 2 + 1


def plan_etcd(members: Sequence[EtcdMember], old: str, new: str) -> tuple[EtcdStep, ...]:
    """The steps left to move every member from CA `old` to CA `new` (fingerprints); () when done.
    EtcdPlanRefused when a restart would lose quorum (fewer than 3 members) or when the cluster is in a
    state no rolling step can fix safely (a member issues from `new` while another does not trust it,
    or a member's field names a CA that is neither)."""
    ordered = sorted(members, key=lambda m: m.name)
    n = len(ordered)
    for m in ordered:
        stray = {m.issuer, *m.accepted} - {old, new}
        if stray:
            raise EtcdPlanRefused(f"etcd member {m.name} trusts a CA that is neither the old nor the new one "
                                  f"({', '.join(sorted(stray))}): finish or undo that rotation first")
    done = all(m.issuer == new and not m.accepted and m.refuses_old for m in ordered)
    if done or n == 0:
        return ()
    if n < 3:
        raise EtcdPlanRefused(f"a cluster of {n} etcd member{'s' if n > 1 else ''} loses quorum while one "
                              f"restarts (quorum {quorum(n)} of {n}): add control planes to reach 3 first")
    untrusting = [m.name for m in ordered if not m.trusts_new]
    issuing_new = [m.name for m in ordered if m.issuer == new]
    if untrusting and issuing_new:
        raise EtcdPlanRefused(f"etcd member {issuing_new[0]} issues from the new CA but {untrusting[0]} does not "
                              "trust it yet: its peers refuse it; put the old CA first on it again")

    def step(phase: Phase, m: EtcdMember, issuer: str, accepted: tuple[str, ...], restart: bool) -> EtcdStep:
        return EtcdStep(phase, m.name, issuer, accepted, restart, n, n - (1 if restart else 0), quorum(n))

    steps: list[EtcdStep] = []
    steps += [step("accept", m, old, (new,), True) for m in ordered if not m.trusts_new]
    steps += [step("swap", m, new, (old,), False) for m in ordered if m.issuer != new]
    steps += [step("remove", m, new, (), True) for m in ordered if m.accepted or not m.refuses_old]
    return tuple(steps)

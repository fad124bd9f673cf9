"""Rollback before remove: when a step fails before the new credentials were written (accept, swap
or one of their gates), apply returns the nodes to the CAs they had when it started.

The way back is a plan like any other: the planner diffs the nodes' current configs against the
CA state they started from (one issuer and accepted set per PKI), orders it accept -> swap ->
remove, and the safety check proves it before a node is touched; its gates run as usual. Then every
node is verified with the credential that worked before the apply. Not attempted (and the report
says why) when the run already wrote the new credentials or started removing, when the nodes did
not share one CA state before the run, or when the way back is not provably safe.

    roll_back(applier, started_from, authorities) -> Rollback
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trustplan.engine.live import LiveCA, LiveCluster, to_live
from trustplan.engine.moved import reread_before_rollback
from trustplan.engine.runner import PhaseRunner
from trustplan.errors import TrustplanError
from trustplan.planner import Authority, DesiredTrust, LiveNode, Outputs, Plan, PlanInput, UnsafePlan
from trustplan.planner import ops as op
from trustplan.planner.model import PKI
from trustplan.planner.safety import check_plan
from trustplan.state.journal import Step


@dataclass
class Rollback:
    """What the rollback did: `done` (every changed node back and verified), and a line per node."""

    done: bool
    reason: str
    report: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    moved: bool = False  # the cluster's CAs changed under this apply (another apply ran): not attempted

    def text(self) -> str:
        lines = [self.reason, *(f"  {line}" for line in self.report)]
        return "\n".join(lines)


def possible(applier: PhaseRunner) -> str | None:
    """None if a rollback may be tried; else why not."""
    started = {s.phase for s in applier.steps}
    if "outputs" in started or any(p.destructive for p in applier.plan.phases if p.name in started):
        return "no rollback: the new credentials were already written (the new CA is proven); finish with a new plan"
    if not any(s.ok("write") for s in applier.steps):
        return "no rollback needed: no node was changed"
    return None


def _original(started: LiveCluster, managed: tuple[PKI, ...]) -> tuple[DesiredTrust, ...] | str:
    out = []
    for p in managed:
        states = {(n.trust(p).issuer, tuple(sorted(n.trust(p).accepted))) for n in started.nodes}
        if len(states) != 1:
            return f"no rollback: the nodes did not share one {p} CA state before this apply"
        issuer, accepted = states.pop()
        if issuer is None:
            return f"no rollback: the nodes had no {p} issuing CA before this apply"
        out.append(DesiredTrust(p, issuer, accepted))
    return tuple(out)


async def _applied(applier: PhaseRunner) -> set[tuple[str, str]] | str:
    """(phase, node) pairs whose config change reached the node: the writes that succeeded, the ones
    whose kubelet or kube-apiserver wait failed (the config was applied), and failed writes that a fresh
    read shows applied (a reply lost after the node applied it). A string: why this cannot be known."""
    done = {(s.phase, s.node or "") for s in applier.steps if s.kind in ("write", "kubelet", "apiserver")
            and (s.kind != "write" or s.outcome == "ok")}
    failed = [(s.phase, s.node or "") for s in applier.steps if s.kind == "write" and s.outcome == "failed"]
    phases: dict[str, op.Phase] = {p.name: p for p in applier.plan.phases}
    for phase, address in failed:
        if (phase, address) in done:
            continue
        try:
            cred = applier.phase_credential(phases[phase])
            read = await applier.provider.read(applier.refs[address], cred)
        except TrustplanError as exc:
            return (f"no rollback: node {address} does not answer, so whether its {phase} change applied is "
                    f"unknown ({exc})")
        if read.digest != applier.configs[address].digest:
            from trustplan.talos import machineconfig

            applier.configs[address] = machineconfig.parse(read.data, f"node {address} (live machine config)")
            done.add((phase, address))
    return done


async def read_back(applier: PhaseRunner) -> None:
    """Settle each write whose answer was lost: read the node back. Changed: the step becomes "ok"
    (and the run's config of the node the one read); unchanged: its message says not applied;
    no answer: its message says so, and whether it applied stays unknown."""
    from trustplan.engine.runner import NOT_APPLIED
    from trustplan.talos import machineconfig

    phases: dict[str, op.Phase] = {p.name: p for p in applier.plan.phases}
    for i, step in enumerate(applier.steps):
        if step.kind != "write" or step.outcome != "failed" or step.node is None or step.phase not in phases:
            continue
        address = step.node
        try:
            read = await applier.provider.read(applier.refs[address], applier.phase_credential(phases[step.phase]))
        except TrustplanError as exc:
            applier.steps[i] = replace(step, message=f"{step.message or ''}; read back failed, so whether it "
                                       f"applied is unknown: {exc}")
            continue
        if read.digest == applier.configs[address].digest:
            applier.steps[i] = replace(step, message=f"{step.message or ''}; {NOT_APPLIED}")
            continue
        applier.configs[address] = machineconfig.parse(read.data, f"node {address} (live machine config)")
        applier.steps[i] = replace(step, outcome="ok",
                                   message=f"its answer was lost ({step.message or ''}); read back: applied")


def reverse_plan(applier: PhaseRunner, done: set[tuple[str, str]], nodes: tuple[LiveNode, ...],
                 original: tuple[DesiredTrust, ...], authorities: tuple[Authority, ...]) -> Plan:
    """This run's edits undone in reverse order: the last phase first, and within a phase workers
    before control planes (a worker's config change re-requests its certificate from control planes
    that issue from the old CA again, before they stop trusting the new one). Gates as forward:
    the old issuer's admin cert, trusting old + new after the swap back, then old only."""
    old = {d.pki: d.issuer for d in original}
    new = {d.pki: d.issuer for d in applier.plan.desired_issuers()}
    everyone = tuple(n.address for n in applier.plan.nodes)
    rank = {n.address: i for i, n in enumerate(applier.plan.nodes)}
    phases: list[op.Phase] = []
    for phase in reversed([p for p in applier.plan.phases if p.edits and not p.destructive]):
        edits: list[op.Edit] = []
        for address in sorted(phase.nodes(), key=lambda a: -rank[a]):  # workers first, then control planes
            if (phase.name, address) in done:
                edits += [r for e in phase.edits_for(address) if (r := e.reverse()) is not None]
        if not edits:
            continue
        name: op.PhaseName = "swap" if phase.name == "swap" else "remove"
        pkis = tuple(dict.fromkeys(e.pki for e in edits))
        gates = tuple(
            op.Gate(p, name, op.Credential(old[p], (old[p], new[p]) if name == "swap" else (old[p],)), everyone)
            for p in pkis
        )
        # the Talos API with the old issuer's admin cert (trusting both); else the operator's own (None)
        talos = "talos" in old
        credential = op.Credential(old["talos"], (old["talos"], new["talos"])) if talos else None
        phases.append(op.Phase(name, tuple(edits), gates, credential))
    return Plan(applier.plan.cluster, applier.plan.managed, authorities, nodes, (), tuple(phases), ())


async def roll_back(applier: PhaseRunner, started: LiveCluster, authorities: tuple[Authority, ...],
                    known: frozenset[str] = frozenset()) -> Rollback:
    """Return the nodes to `started`'s CAs with a checked reverse plan, then verify them. `known`: the
    CAs the state knows (with this plan's and `started`'s, a node with any other stops the rollback)."""
    why_not = possible(applier)
    if why_not is not None:
        return Rollback(False, why_not)
    managed = applier.plan.managed
    original = _original(started, managed)
    if isinstance(original, str):
        return Rollback(False, original)
    done = await _applied(applier)
    if isinstance(done, str):
        return Rollback(False, done)
    moved = await reread_before_rollback(applier, {*known, *started.cas, *(a.fingerprint for a in authorities),
                                                   *(a.fingerprint for a in applier.plan.authorities)})
    if moved is not None:
        return Rollback(False, moved, moved=True)
    cas: dict[str, LiveCA] = dict(started.cas)
    nodes = tuple(to_live(applier.refs[a], cfg, managed, cas) for a, cfg in applier.configs.items())
    operator = applier.operator
    inp = PlanInput(applier.plan.cluster, nodes, original, authorities, applier.now, Outputs())
    back = reverse_plan(applier, done, nodes, original, authorities)
    try:
        check_plan(back, inp, mixes=False)  # written in NO_REBOOT mode, in the order proven
    except UnsafePlan as exc:
        return Rollback(False, f"no rollback: the way back is not safe: {exc}")
    current = LiveCluster(nodes, dict(applier.configs), {}, cas)
    runner = PhaseRunner(applier.desired, applier.provider, applier.keys, current, back, applier.now,
                         applier.reporter, operator, applier.stop, operator_identity=applier.operator_identity,
                         rollout=applier.rollout,  # the plan's parallelism (a rollback has no canary)
                         workers_first=True,
                         trial=False,  # the way back must stick: plain writes (they also cancel a pending try revert)
                         reread=False)  # the configs were just read (_applied) or written by this run
    changed = sorted({node for _, node in done}, key=lambda a: [n.address for n in applier.plan.nodes].index(a))
    try:
        await runner.run()
    except TrustplanError as exc:
        steps = [replace(s, phase=f"rollback {s.phase}") for s in runner.steps]
        left = [f"{a}: changed by this apply, not returned: `trustplan status` shows its CAs now" for a in changed]
        return Rollback(False, f"rollback failed: {exc}", left, steps)
    finally:
        applier.configs.update(runner.configs)
    steps = [replace(s, phase=f"rollback {s.phase}") for s in runner.steps]
    report = await _verify(applier, changed, operator)
    ok = all(line.endswith("verified with the credential of before") for line in report)
    reason = "rolled back: every node changed by this apply has its CAs of before" if ok else "rolled back, but:"
    return Rollback(ok, reason, report, steps)


async def _verify(applier: PhaseRunner, changed: list[str], operator: object) -> list[str]:
    """Each changed node reaches with the credential that worked before the apply (talos)."""
    lines = []
    for address in changed:
        labels = []
        for p in applier.plan.managed:
            t = to_live(applier.refs[address], applier.configs[address], applier.plan.managed, {}).trust(p)
            labels.append(f"{p}: {applier.plan.label(t.issuer or '?')}")
        state = ", ".join(labels)
        if not applier.provider.capabilities.needs_credential:  # no credential of before to try
            lines.append(f"{address}: back to {state}; verified with the credential of before")
            continue
        try:
            await applier.provider.verify(applier.refs[address], operator)  # type: ignore[arg-type]
        except TrustplanError as exc:
            lines.append(f"{address}: back to {state}, but the credential of before does not reach it: {exc}")
            continue
        lines.append(f"{address}: back to {state}; verified with the credential of before")
    return lines

"""The parts of the PR comment a reviewer needs to approve a rotation in seconds: what restarts and
for how long, the rollout (waves, canary, parallelism, expected duration), what a failure does
(rollback before remove, none after), and a mermaid diagram of the phases.

    blast_radius(saved)   "What restarts"    rollout_block(saved)   "Rollout"
    rollback_block(saved) "If a step fails"  mermaid(saved)         the phases as a flowchart

Phases are numbered as the plan document numbers them (its `phases` list, outputs included), the
same numbers the text rendering and policies use. The Talos facts behind "what restarts" are in
/work/shared/reference/talos.md §1.2 (PatchNodeConfigWithKubeletRestart: a Kubernetes CA change
waits for the node's kubelet to restart; the API server static pods get new certificates).
"""

from __future__ import annotations

import math

from trustplan.formats.planfile.savedplan import PlanRollout, SavedPlan
from trustplan.planner import Plan
from trustplan.planner.model import PKI_TITLE
from trustplan.planner.ops import Phase

#: the rollout apply uses when the plan saved none (the desired state's defaults)
DEFAULT_ROLLOUT = PlanRollout(controlplane=1, worker=10, canary=0, gates=32)
WHAT = {
    "move": "move legacy values into their 1.14 documents",
    "accept": "accept the new CAs",
    "swap": "issue from the new CAs",
    "outputs": "write the new credentials",
    "remove": "remove the old CAs (revokes)",
}


def numbered(plan: Plan) -> list[tuple[int, Phase]]:
    """Every phase with its number in the plan document (1-based, outputs included)."""
    return list(enumerate(plan.phases, start=1))


def _roles(plan: Plan, nodes: set[str]) -> tuple[int, int]:
    cps = sum(1 for n in plan.nodes if n.address in nodes and n.role == "controlplane")
    return cps, len(nodes) - cps


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def blast_radius(saved: SavedPlan) -> list[str]:
    plan = saved.plan
    if not plan.has_edits:
        return []
    out = ["### What restarts, and for how long", ""]
    for pki in plan.managed:
        phases = [p for p in plan.phases if any(e.pki == pki for e in p.edits)]
        if not phases:
            continue
        changed = {e.node for p in phases for e in p.edits if e.pki == pki}
        cps, workers = _roles(plan, changed)
        times = _plural(len(phases), "time")
        if pki == "kubernetes":
            alone = (" With one control plane, the Kubernetes API is down while it restarts."
                     if sum(1 for n in plan.nodes if n.role == "controlplane") == 1 else
                     " Control planes go one at a time, so the Kubernetes API stays up behind the others.")
            out.append(
                f"- **{PKI_TITLE[pki]} CA: every kube-apiserver ({_plural(cps, 'control plane')}) and every kubelet "
                f"({cps + workers} nodes) restarts, {times}** (once per phase that changes it). No node reboots. "
                "Each node's kubelet restart is awaited before the node counts as done (seconds to a minute "
                f"each).{alone} Pods that use in-cluster credentials may need a restart afterwards."
            )
        else:
            out.append(
                f"- **{PKI_TITLE[pki]} CA: the Talos API (apid, trustd) on {cps + workers} nodes switches "
                f"certificates, {times}; nothing restarts, no node reboots.** talosctl calls retry across it."
            )
    if saved.bindings.offline:
        out.append("- Files provider: apply edits machine-config files only; the restarts above happen when the "
                   "configs reach the nodes.")
    return out + [""]


def _waves(plan: Plan, phase: Phase, r: PlanRollout) -> tuple[int, int, int]:
    """Control-plane waves, worker waves (a canary is one more) and gate rounds of a phase."""
    cps, workers = _roles(plan, set(phase.nodes()))
    canary = r.canary if workers > r.canary > 0 else 0
    worker_waves = (1 if canary else 0) + math.ceil((workers - canary) / r.worker) if workers else 0
    gate_rounds = sum(math.ceil(len(g.nodes) / r.gates) for g in phase.gates)
    return math.ceil(cps / r.controlplane) if cps else 0, worker_waves, gate_rounds


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min"


def rollout_block(saved: SavedPlan) -> list[str]:
    plan = saved.plan
    if not plan.has_edits:
        return []
    r = saved.rollout or DEFAULT_ROLLOUT
    canary = (f"then a canary of {_plural(r.canary, 'worker')} (and the phase's gates on it), then the other "
              "workers" if r.canary else "then the workers")
    out = [
        "### Rollout",
        "",
        f"Phases run one after another ({' → '.join(f'{i} {p.name}' for i, p in numbered(plan))}). In each, "
        f"control planes go first, {r.controlplane} at a time; {canary}, {r.worker} at a time; then the phase's "
        f"verification gates, {r.gates} nodes at a time."
        + ("" if saved.rollout else " (The plan saved no rollout: these are the defaults.)"),
        "",
        "| phase | control-plane waves | worker waves | gate rounds |",
        "|---|---|---|---|",
    ]
    total_waves = total_rounds = 0
    for i, phase in numbered(plan):
        if phase.name == "outputs":
            continue
        cp, w, g = _waves(plan, phase, r)
        total_waves, total_rounds = total_waves + cp + w, total_rounds + g
        out.append(f"| {i} {phase.name} | {cp} | {w} | {g} |")
    out.append("")
    if saved.rollout is not None and saved.rollout.read_ms is not None:
        ms = saved.rollout.read_ms
        # a write is a read, a validated apply and a read back (~3 round trips); a gate round one
        estimate = (total_waves * 3 + total_rounds) * ms / 1000
        out.append(
            f"Expected duration: about {_duration(estimate)} ({total_waves} waves × ~{3 * ms:.0f} ms and "
            f"{total_rounds} gate rounds × ~{ms:.0f} ms, from the {ms:.0f} ms per node read the plan measured), "
            "plus the restarts above."
        )
    else:
        out.append(f"Expected duration: {total_waves} waves and {total_rounds} gate rounds, plus the restarts above "
                   "(this plan measured no read latency to estimate from).")
    return out + [""]


def rollback_block(saved: SavedPlan) -> list[str]:
    plan = saved.plan
    if not plan.has_edits:
        return []
    names = {p.name: i for i, p in numbered(plan)}
    before = ", ".join(f"{i} {p.name}" for i, p in numbered(plan) if p.name in ("accept", "swap"))
    out = ["### If a step fails", ""]
    if before:
        out.append(f"- **Phases {before} (before any credential is written): automatic rollback.** apply returns "
                   "every changed node to its CAs of before and verifies it with the credential that worked; the "
                   "old talosconfig and kubeconfig keep working (`--no-rollback` leaves the nodes as they are).")
    if "outputs" in names:
        out.append(f"- **From phase {names['outputs']} outputs on: no rollback.** The new credentials are written; "
                   "apply stops where it failed and `trustplan plan` finishes the rotation from there.")
    if "remove" in names:
        out.append(f"- **Phase {names['remove']} remove revokes:** a node it has changed no longer trusts the old CA; "
                   "there is no way back to it, only forward with the new credentials.")
    return out + [""]


def mermaid(saved: SavedPlan) -> list[str]:
    """The phases as a left-to-right flowchart: each phase, then its gates; rollback before outputs."""
    plan = saved.plan
    if not plan.has_edits:
        return []
    lines = ["```mermaid", "flowchart LR"]
    previous: str | None = None
    for i, phase in numbered(plan):
        node_id = f"p{i}"
        if phase.name == "outputs":
            kinds = ", ".join(dict.fromkeys(o.output for o in phase.outputs))
            lines.append(f'  {node_id}[/"{i} outputs: {kinds}"/]')
        else:
            size = f'{_plural(len(phase.nodes()), "node")}, {_plural(len(phase.edits), "change")}'
            lines.append(f'  {node_id}["{i} {phase.name}: {WHAT[phase.name]}<br/>{size}"]')
        if previous:
            lines.append(f"  {previous} --> {node_id}")
        previous = node_id
        if phase.gates:
            gate_id = f"g{i}"
            lines.append(f'  {gate_id}{{{{"{_plural(len(phase.gates), "gate")}"}}}}')
            lines.append(f"  {previous} --> {gate_id}")
            if phase.name in ("accept", "swap"):
                lines.append(f"  {gate_id} -. fails .-> rb")
            previous = gate_id
    if any(p.name in ("accept", "swap") and p.gates for p in plan.phases):
        lines.append('  rb(["automatic rollback to the CAs of before"])')
    lines += ["```", ""]
    return lines

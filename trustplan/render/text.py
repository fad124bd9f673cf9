"""Renderings of a saved plan for a terminal and as JSON. They only read the SavedPlan, so `plan`
and `show plan.bin` print the same thing (the Markdown form is trustplan.render.markdown).

    text(saved)          for a terminal
    summary(saved)       `--summary`: the summary line and the warnings
    json_text(saved)     the plan document itself, pretty-printed with sorted keys
    summary_line(plan), apply_line(plan, ...)   the one-line verdicts of `plan` and `apply`
"""

from __future__ import annotations

import json
from typing import assert_never

from trustplan.formats.planfile.savedplan import SavedPlan
from trustplan.planner import Plan
from trustplan.planner.etcd import rolling_steps
from trustplan.planner.model import KINDS, PKI, PKI_TITLE, Authority
from trustplan.planner.ops import AcceptCA, Edit, Gate, MoveToDocument, RemoveCA, SwapIssuer
from trustplan.planner.timestamps import iso_time


def symbol(e: Edit) -> str:
    """The mark of an edit in a listing: + adds trust, ~ changes the issuer, - revokes."""
    match e:
        case AcceptCA():
            return "+"
        case SwapIssuer():
            return "~"
        case RemoveCA():
            return "-"
        case MoveToDocument():
            return ">"
        case _:
            assert_never(e)


def change_counts(plan: Plan) -> str:
    """What a plan changes, counted the same way by `plan` and by `apply`: CA changes (one per node,
    PKI and CA, by kind) and the config writes that carry them (one per node and phase)."""
    kinds = [e.kind for e in plan.edits]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("accept", "swap", "remove") if kinds.count(k))
    writes = config_writes(plan)
    return (
        f"{len(kinds)} CA {'change' if len(kinds) == 1 else 'changes'} ({counts}) in "
        f"{writes} config {'write' if writes == 1 else 'writes'}"
    )


def config_writes(plan: Plan) -> int:
    return sum(len(p.nodes()) + len(p.recertify) for p in plan.phases if p.name != "outputs")


def gate_count(n: int) -> str:
    return f"{n} verification {'gate' if n == 1 else 'gates'}"


def summary_line(plan: Plan) -> str:
    if not plan.has_changes:
        return "No changes. Every node already has the desired CAs."
    if not plan.has_edits:
        names = ", ".join(dict.fromkeys(o.output for o in plan.outputs))
        return f"Plan: no node changes; rewrite {names} (not working against the live cluster)."
    n_new = len(plan.new_authorities)
    parts = [f"{n_new} {'authority' if n_new == 1 else 'authorities'} to create"] if n_new else []
    parts.append(change_counts(plan))
    parts.append(gate_count(len(plan.gates)))
    return "Plan: " + ", ".join(parts) + "."


def apply_line(plan: Plan, writes_done: int, gates_passed: int) -> str:
    """The closing line of `apply`, in the words of the plan's summary line."""
    if not plan.has_changes:
        return "Apply complete: no changes."
    skipped = config_writes(plan) - writes_done
    done = f" ({skipped} already done, skipped)" if skipped > 0 else ""
    return f"Apply complete: {change_counts(plan)}{done}, {gate_count(gates_passed)} passed."


def _credential(plan: Plan, issuer: str, trusted: tuple[str, ...]) -> str:
    return f"admin cert from {plan.label(issuer)}, trusting [{', '.join(plan.label(t) for t in trusted)}]"


def managed_text(managed: tuple[PKI, ...]) -> str:
    """e.g. "the Talos API and Kubernetes API CA", "... CA, the service-account signing key"."""
    cas = [PKI_TITLE[p] for p in managed if KINDS[p].holders == "all"]
    parts = [f"the {' and '.join(cas)} CA"] if cas else []
    parts += [f"the {KINDS[p].name}" for p in managed if KINDS[p].holders != "all"]
    return ", ".join(parts)


def validity(a: Authority) -> str:
    if KINDS[a.pki].material != "ca":
        return "no expiry"
    return f"valid {a.not_before:%Y-%m-%d} to {a.not_after:%Y-%m-%d}"


def gate_text(plan: Plan, g: Gate, model: bool = False) -> str:
    """One gate in words: a CA reached with an admin cert, or a shared kind every API server accepts.
    `model`: the files provider, where a gate is a check of the configs (no node is contacted)."""
    cred = _credential(plan, g.credential.issuer, g.credential.trusted)
    if KINDS[g.pki].holders == "all":
        if model:
            return f"model check: {PKI_TITLE[g.pki]} configs of all {len(g.nodes)} nodes accept an {cred}"
        return f"gate: {PKI_TITLE[g.pki]} reaches all {len(g.nodes)} nodes with {cred}"
    trusted = ", ".join(plan.label(t) for t in g.credential.trusted)
    who = "etcd members" if g.pki == "etcd" else "API servers"
    return (
        f"{'model check' if model else 'gate'}: "
        f"{KINDS[g.pki].name}: all {len(g.nodes)} {who} accept {plan.label(g.credential.issuer)} "
        f"and {KINDS[g.pki].issues.split(' ', 1)[0]} only with [{trusted}]"
    )


def rolling_text(plan: Plan, phase: str, model: bool) -> list[str]:
    """The etcd CA's steps of a phase: which member restarts, how many stay up, the quorum they need."""
    steps = [s for s in rolling_steps(plan) if s.phase == phase]
    if not steps:
        return []
    labels = {a.fingerprint: a.label for a in plan.authorities}
    if model:
        head = "etcd (configs on disk: each member takes this field when its node next reboots)"
    elif steps[0].restart:
        head = ("etcd, one control plane at a time, each rebooted after its write; gate after each: the member "
                "took the field, every member healthy with one leader and caught up, every kube-apiserver ready")
    else:
        head = "etcd: no restart (members load the new leaves at the next handshake)"
    return [f"  ↻ {head}:", *(f"      {k}. {s.line(labels)}" for k, s in enumerate(steps, 1))]


def text(saved: SavedPlan) -> str:
    plan, bound = saved.plan, saved.bindings
    lines: list[str] = []
    n_cp = sum(1 for n in plan.nodes if n.role == "controlplane")
    lines.append(
        f'trustplan: cluster "{plan.cluster}" ({bound.provider} provider), '
        f"{n_cp} control planes + {len(plan.nodes) - n_cp} workers; managing {managed_text(plan.managed)}"
    )
    lines.append(f"plan made {iso_time(bound.created)}, expires {iso_time(bound.expires)}")
    lines.append("")
    if plan.new_authorities:
        lines.append("New authorities (approve these fingerprints):")
        for a in plan.new_authorities:
            lines.append(
                f"  + {a.label}  {KINDS[a.pki].name}, {a.algorithm}, {a.subject}, {validity(a)} ({a.source})"
            )
            lines.append(f"      {a.fingerprint}")
        lines.append("")
    if plan.has_changes:
        model = bound.offline  # gates are checks of the configs: no node is contacted
        for i, phase in enumerate(plan.phases):
            if phase.name == "outputs":  # numbered as in the plan document; listed under Outputs
                kinds = ", ".join(dict.fromkeys(o.output for o in phase.outputs))
                lines.append(f"Phase {i + 1}: outputs: write {kinds} (listed under Outputs below)")
                lines.append("")
                continue
            lines.append(f"Phase {i + 1}: {phase.name}")
            width = max((len(n) for n in (*phase.nodes(), *phase.recertify)), default=0)
            title = max([14] + [len(PKI_TITLE[p]) for p in plan.managed])
            for node in phase.nodes():
                edits = phase.edits_for(node)
                role = edits[0].role
                for e in edits:
                    lines.append(
                        f"  {symbol(e)} {node:<{width}}  {role:<12}  {PKI_TITLE[e.pki]:<{title}}  "
                        f"{plan.describe(e)}"
                    )
            for node in phase.recertify:
                lines.append(
                    f"  ~ {node:<{width}}  {'worker':<12}  {PKI_TITLE['talos']:<14}  recertify: asks trustd again "
                    "(its trust lags its config; its address added to machine.certSANs)"
                )
            for g in phase.gates:
                lines.append(f"  ? {gate_text(plan, g, model)}")
            lines += rolling_text(plan, phase.name, model)
            lines.append("")
        if saved.outputs:
            names = [p.name for p in plan.phases]
            before_remove = "remove" in names and names.index("outputs") < names.index("remove")
            lines.append("Outputs (written before the remove phase starts):" if before_remove else "Outputs:")
            for o in saved.outputs:
                lines.append(f"  > {o.step.output:<12} {o.path or ''}  (from {plan.label(o.step.ca)})")
            lines.append("")
    if plan.warnings:
        lines.append("Warnings:")
        lines += [f"  ! {w.message}" for w in plan.warnings]
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def summary(saved: SavedPlan) -> str:
    """The short form for a terminal: the summary line, then each warning."""
    return summary_line(saved.plan) + "\n" + "".join(f"  ! {w.message}\n" for w in saved.plan.warnings)


def json_text(saved: SavedPlan) -> str:
    """The plan document as saved (fields of a newer format included), pretty-printed."""
    return json.dumps(json.loads(saved.document), indent=2, sort_keys=True) + "\n"

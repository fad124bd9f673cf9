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

from trustplan.formats.savedplan import SavedPlan
from trustplan.planner import Plan
from trustplan.planner.model import PKI_TITLE
from trustplan.planner.ops import AcceptCA, Edit, RemoveCA, SwapIssuer
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
    return sum(len(p.nodes()) for p in plan.phases if p.name != "outputs")


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


def text(saved: SavedPlan) -> str:
    plan, bound = saved.plan, saved.bindings
    lines: list[str] = []
    n_cp = sum(1 for n in plan.nodes if n.role == "controlplane")
    managed = " and ".join(PKI_TITLE[p] for p in plan.managed)
    lines.append(
        f'trustplan: cluster "{plan.cluster}" ({bound.provider} provider), '
        f"{n_cp} control planes + {len(plan.nodes) - n_cp} workers; managing the {managed} CA"
    )
    lines.append(f"plan made {iso_time(bound.created)}, expires {iso_time(bound.expires)}")
    lines.append("")
    if plan.new_authorities:
        lines.append("New authorities (approve these fingerprints):")
        for a in plan.new_authorities:
            lines.append(
                f"  + {a.label}  {PKI_TITLE[a.pki]} CA, {a.algorithm}, {a.subject}, "
                f"valid {a.not_before:%Y-%m-%d} to {a.not_after:%Y-%m-%d} ({a.source})"
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
            width = max(len(n) for n in phase.nodes())
            for node in phase.nodes():
                edits = phase.edits_for(node)
                role = edits[0].role
                for e in edits:
                    lines.append(
                        f"  {symbol(e)} {node:<{width}}  {role:<12}  {PKI_TITLE[e.pki]:<14}  "
                        f"{plan.describe(e)}"
                    )
            for g in phase.gates:
                lines.append(
                    f"  ? {'model check' if model else 'gate'}: {PKI_TITLE[g.pki]} "
                    f"{'configs of' if model else 'reaches'} all {len(g.nodes)} nodes "
                    f"{'accept an' if model else 'with'} "
                    f"{_credential(plan, g.credential.issuer, g.credential.trusted)}"
                )
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

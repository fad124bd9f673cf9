"""The Markdown rendering of a plan, for a pull-request comment."""

from __future__ import annotations

from typing import Any

from trustplan.planner import Plan
from trustplan.planner.model import PKI_TITLE
from trustplan.render import describe_edit, summary_line


def render(plan: Plan, doc: dict[str, Any]) -> str:
    out = [summary_line(plan), ""]
    if plan.warnings:
        out.append("> [!WARNING]")
        out += [f"> - {w}" for w in plan.warnings]
        out.append("")
    for a in plan.new_authorities:
        out.append(f"**New {PKI_TITLE[a.pki]} CA `{a.label}`**: {a.subject}, {a.algorithm}, valid "
                   f"{a.not_before:%Y-%m-%d} to {a.not_after:%Y-%m-%d}  ")
        out.append(f"`{a.fingerprint}`")
        out.append("")
    for phase in plan.phases:
        if phase.name == "outputs":
            continue
        out.append(f"<details><summary>Phase {phase.name}: {len(phase.nodes())} nodes, "
                   f"{len(phase.gates)} gates</summary>")
        out.append("")
        out.append("| node | role | PKI | change |")
        out.append("|---|---|---|---|")
        for e in phase.edits:
            out.append(f"| {e.node} | {e.role} | {PKI_TITLE[e.pki]} | {describe_edit(plan, e)} |")
        out.append("")
        out.append("</details>")
        out.append("")
    return "\n".join(out) + "\n"

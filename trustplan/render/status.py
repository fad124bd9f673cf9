"""The status report (trustplan.engine.statusreport) drawn as a table on a console, or as Markdown."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from trustplan.talos import pki


def _label(ca: dict[str, Any]) -> str:
    return ca["name"] or pki.short(ca["fingerprint"])


def text(report: dict[str, Any], out: Console) -> None:
    """The trust matrix as a table on `out` (never cut at 80 columns when not a terminal), then drift."""
    table = Table(title=f"Trust matrix of {report['cluster']} (state serial {report['serial']})")
    table.add_column("node")
    table.add_column("role")
    for ca in report["authorities"]:
        table.add_column(f"{_label(ca)}\n{ca['pki']}, until {ca['not_after']}")
    for row in report["nodes"]:
        table.add_row(
            row["address"], row["role"], *(row["cas"].get(ca["fingerprint"], "-") for ca in report["authorities"])
        )
    if out.is_terminal:
        out.print(table)
    else:  # a pipe or a file: never cut a column at 80 characters
        measure = Console(width=1 << 16, highlight=False, no_color=True)
        wide = Console(
            file=out.file, width=measure.measure(table).maximum, highlight=False, no_color=True, soft_wrap=True
        )
        wide.print(table)
    for ca in report["authorities"]:
        out.print(f"{_label(ca)}  {ca['fingerprint']}", markup=False)
    if report["drift"]:
        out.print("Drift from the state:", style="bold yellow")
        for d in report["drift"]:
            out.print(f"  ! {d['node']}: {d['reason']}", markup=False)
    elif report["serial"]:
        out.print("No drift: the live configs match the state.")


def markdown(report: dict[str, Any], now: dt.datetime) -> str:
    """The trust matrix and each CA's reach and expiry (bold within 90 days of `now`), then drift."""
    cas = report["authorities"]
    lines = [f"### Trust matrix of `{report['cluster']}` (state serial {report['serial']})", ""]
    lines.append("| node | role | " + " | ".join(f"{_label(c)} ({c['pki']})" for c in cas) + " |")
    lines.append("|---|---|" + "---|" * len(cas))
    for row in report["nodes"]:
        lines.append(
            f"| {row['address']} | {row['role']} | "
            + " | ".join(row["cas"].get(c["fingerprint"], "") for c in cas)
            + " |"
        )
    lines.append("")
    lines.append("| CA | PKI | issuing on | accepted on | expires | fingerprint |")
    lines.append("|---|---|---|---|---|---|")
    total = len(report["nodes"])
    for c in cas:
        lines.append(
            f"| {_label(c)} | {c['pki']} | {_where(c['issuing_on'], total)} | {_where(c['accepted_on'], total)} | "
            f"{_expiry(c['not_after'], now)} | `{c['fingerprint']}` |"
        )
    if report["drift"]:
        lines += ["", "**Drift from the state:**"] + [f"- {d['node']}: {d['reason']}" for d in report["drift"]]
    return "\n".join(lines) + "\n"


def _where(nodes: list[str], total: int) -> str:
    """The nodes a CA is issuing or accepted on: all of them, none, or the list (shortened past 10)."""
    if not nodes:
        return "none"
    if len(nodes) == total:
        return f"all {total} nodes"
    shown = ", ".join(nodes[:10])
    return shown + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else "")


def _expiry(not_after: str, now: dt.datetime) -> str:
    days = (dt.datetime.strptime(not_after, "%Y-%m-%d").replace(tzinfo=dt.UTC) - now).days
    if days < 0:
        return f"**{not_after} (expired)**"
    return f"**{not_after} (in {days} days)**" if days < 90 else f"{not_after} (in {days} days)"

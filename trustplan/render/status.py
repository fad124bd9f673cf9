"""The status report: the trust matrix (nodes x CAs) and drift from the state, as data, a table and Markdown."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from trustplan.cli.common import out
from trustplan.engine.live import LiveCluster
from trustplan.planner import PKIS
from trustplan.talos import pki

#: the config fields of each PKI's issuer and accepted CAs, as drift lines name them
FIELDS = {"talos": ("machine.ca", "machine.acceptedCAs"), "kubernetes": ("cluster.ca", "cluster.acceptedCAs")}


def build_report(live: LiveCluster, state: dict[str, Any]) -> dict[str, Any]:
    names = {fp: a.get("name") for fp, a in state["authorities"].items()}
    cas: list[dict[str, Any]] = []
    for fp, lca in sorted(live.cas.items(), key=lambda kv: (kv[1].pki, kv[1].ca.not_before)):
        cas.append(
            {
                "fingerprint": fp,
                "name": names.get(fp),
                "pki": lca.pki,
                "subject": lca.ca.subject,
                "algorithm": lca.ca.algorithm,
                "not_after": f"{lca.ca.not_after:%Y-%m-%d}",
                "issuing_on": [],
                "accepted_on": [],
            }
        )
    by_fp = {c["fingerprint"]: c for c in cas}
    nodes = []
    drift = []
    for n in live.nodes:
        row: dict[str, Any] = {"address": n.address, "role": n.role, "config_digest": n.config_digest, "cas": {}}
        for pki_name in PKIS:
            t = n.trust(pki_name)
            if t.issuer:
                row["cas"][t.issuer] = "issuing+key" if t.issuer_has_key else "issuing"
                by_fp[t.issuer]["issuing_on"].append(n.address)
            for a in t.accepted:
                row["cas"].setdefault(a, "accepted")
                by_fp[a]["accepted_on"].append(n.address)
        recorded = state["nodes"].get(n.address)
        if state["serial"] > 0:
            if recorded is None:
                drift.append({"node": n.address, "reason": "not in the state"})
            else:
                for pki_name in PKIS:
                    t = n.trust(pki_name)
                    now = {"issuer": t.issuer, "accepted": list(t.accepted)}
                    if recorded[pki_name] != now and (t.issuer or recorded[pki_name]["issuer"]):
                        drift += _drift(n.address, pki_name, recorded[pki_name], now, names, state["serial"])
        nodes.append(row)
    return {"cluster": state["cluster"], "serial": state["serial"], "authorities": cas, "nodes": nodes, "drift": drift}


def _drift(
    node: str, pki_name: str, recorded: dict[str, Any], now: dict[str, Any], names: dict[str, Any], serial: int
) -> list[dict[str, Any]]:
    """One drift entry per field that differs, naming the node, the field and both values."""
    field = FIELDS[pki_name]

    def show(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, list):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return f"{names[value]} ({pki.short(value)})" if names.get(value) else pki.short(value)

    entries = []
    for key, path in (("issuer", field[0]), ("accepted", field[1])):
        if recorded.get(key) != now.get(key):
            entries.append(
                {
                    "node": node,
                    "pki": pki_name,
                    "field": path,
                    "state": recorded.get(key),
                    "live": now.get(key),
                    "reason": f"{path}: state (serial {serial}) has {show(recorded.get(key))}, "
                    f"live has {show(now.get(key))}",
                }
            )
    return entries


def _label(ca: dict[str, Any]) -> str:
    return ca["name"] or pki.short(ca["fingerprint"])


def text(report: dict[str, Any]) -> None:
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


def markdown(report: dict[str, Any]) -> str:
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
            f"{_expiry(c['not_after'])} | `{c['fingerprint']}` |"
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


def _expiry(not_after: str) -> str:
    days = (dt.datetime.strptime(not_after, "%Y-%m-%d").replace(tzinfo=dt.UTC) - pki.utcnow()).days
    if days < 0:
        return f"**{not_after} (expired)**"
    return f"**{not_after} (in {days} days)**" if days < 90 else f"{not_after} (in {days} days)"

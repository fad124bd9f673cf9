"""What every part of the Markdown rendering shares: where it goes (View) and how CAs and nodes are
named in it (`talos-2026 sha256:7c36c29b453d`, node ranges like `10.5.0.5-10.5.0.9`, folded lists)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from trustplan.planner import Plan

Flavor = Literal["github", "gitlab", "plain"]
FLAVORS: tuple[Flavor, ...] = ("github", "gitlab", "plain")


@dataclass(frozen=True)
class View:
    """Where the Markdown goes and what the reviewer is approving: the flavor of Markdown, and the
    plan file's name, SHA-256 and signer (the signing key's fingerprint; None: unsigned). Without a
    file (`trustplan plan` with no `-o`) the plan is shown as not saved."""

    flavor: Flavor = "github"
    file: str | None = None
    sha256: str | None = None
    signer: str | None = None

    @property
    def folds(self) -> bool:
        return self.flavor != "plain"


#: Node lists longer than this are folded (`<details>`) in github and gitlab flavors.
FOLD_OVER = 6


def short(fp: str) -> str:
    return fp[: len("sha256:") + 12]


def ca_ref(plan: Plan, fp: str | None) -> str:
    """`talos-2026 sha256:7c36c29b453d`, or just the short fingerprint for an unnamed (live) CA."""
    if fp is None:
        return "(none)"
    a = plan.authority(fp)
    if a is not None and a.name:
        return f"{a.name} `{short(fp)}`"
    return f"`{short(fp)}`"


def plain_ref(plan: Plan, fp: str) -> str:
    a = plan.authority(fp)
    return f"{a.name} {short(fp)}" if a is not None and a.name else short(fp)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


_IPV4 = re.compile(r"(\d+\.\d+\.\d+\.)(\d+)")


def node_list(nodes: list[str]) -> str:
    """Nodes in plan order, runs of consecutive IPv4 addresses written as ranges (`10.5.0.5-10.5.0.9`)."""
    out: list[str] = []
    run: list[tuple[str, int]] = []

    def flush() -> None:
        if run:
            first, last = run[0], run[-1]
            a, b = f"{first[0]}{first[1]}", f"{last[0]}{last[1]}"
            out.append(a if len(run) == 1 else f"{a}, {b}" if len(run) == 2 else f"{a}-{b}")
            run.clear()

    for n in nodes:
        m = _IPV4.fullmatch(n)
        if m and run and run[-1][0] == m.group(1) and run[-1][1] + 1 == int(m.group(2)):
            run.append((m.group(1), int(m.group(2))))
            continue
        flush()
        if m:
            run.append((m.group(1), int(m.group(2))))
        else:
            out.append(n)
    flush()
    return ", ".join(out)


def nodes_cell(nodes: list[str], role: str, view: View) -> str:
    """A group's nodes: the list itself when short, else its count with the list folded."""
    noun = {"controlplane": "control plane", "worker": "worker"}.get(role, role) + ("" if len(nodes) == 1 else "s")
    listed = node_list(nodes)
    if len(nodes) <= FOLD_OVER or not view.folds:
        return f"{len(nodes)} {noun}: {listed}"
    return f"<details><summary>{len(nodes)} {noun}</summary>{listed}</details>"

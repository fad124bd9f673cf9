"""What the control-plane-only kinds add to a plan: the move of a legacy single value into its 1.14
document before anything can be accepted beside it, and the token drain that holds back the remove
of an old service-account key. Pure.

    legacy_moves(nodes, desired, edits)        the MoveToDocument steps, or PlanningError naming the
                                               Talos version a graceful rotation needs
    held_removes(inp, desired, edits)          which removes wait for a drain, and the Deferred note
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import assert_never

from trustplan.planner.model import DOCUMENTS_SINCE, KINDS, LEGACY_FIELD, PKI, DesiredTrust, LiveNode, PlanInput
from trustplan.planner.ops import Edit, MoveToDocument, RemoveCA, SwapIssuer


class LegacyLayoutError(Exception):
    """A legacy single value must change on a Talos that cannot hold two (PlanningError subclasses it)."""


@dataclass(frozen=True)
class Deferred:
    """Removes a plan holds back: `cas` stay accepted on `nodes` until `until` (None: `drain` after
    the swap this plan makes, or after the apply that records it)."""

    pki: PKI
    cas: tuple[str, ...]
    nodes: tuple[str, ...]
    drain: dt.timedelta
    since: dt.datetime | None
    until: dt.datetime | None


def _version_ok(version: str | None) -> bool:
    if not version:
        return False
    try:
        have = tuple(int(x) for x in version.lstrip("v").split(".")[:2])
        need = tuple(int(x) for x in DOCUMENTS_SINCE.lstrip("v").split(".")[:2])
    except ValueError:
        return False
    return have >= need


def replaced_in_place(node: LiveNode, pki: PKI, edits: list[Edit], allowed: tuple[PKI, ...]) -> bool:
    """Whether the plan replaces the node's legacy single value of `pki` in place (disruptive): it
    changes, the node's Talos cannot take the document, and `plan --allow-disruptive` names the kind."""
    return pki in node.legacy and bool(edits) and not _version_ok(node.talos_version) and pki in allowed


def disruption(pki: PKI, old: tuple[str, ...], nodes: int, version: str | None) -> str:
    """What a replacement in place breaks, and for how long (the plan's `disruptive` warning)."""
    why = (f"{KINDS[pki].name} replaced in place (`--allow-disruptive {pki}`: {LEGACY_FIELD[pki]} on "
           f"Talos {version or '(unknown)'} holds one value, nothing can accept the new one first)")
    window = (f"from the first control plane's write until all {nodes} are written (the swap phase, one at a "
              "time), API servers disagree")
    match pki:
        case "serviceaccount":
            return (f"{why}: every bound service-account token and every legacy token Secret signed with "
                    f"{', '.join(old)} is refused by each API server from its write on; {window}. Pods fail their "
                    "API calls until the kubelet refreshes their projected token (at 80 % of its lifetime, up to "
                    "an hour by default) or they are restarted; legacy token Secrets must be re-created")
        case "aggregator":
            return (f"{why}: aggregated APIs (metrics.k8s.io, any APIService) refuse the requests an API server "
                    f"proxies with a front-proxy certificate of the other CA; {window}, until every API server "
                    "has restarted on the new CA and each extension API server has re-read the "
                    "extension-apiserver-authentication ConfigMap (client certificates issued by "
                    f"{', '.join(old)} stop working for good)")
        case "encryption" | "talos" | "kubernetes" | "etcd":
            raise ValueError(f"{pki} is not replaced in place")
        case _:
            assert_never(pki)


def legacy_moves(node: LiveNode, pki: PKI, edits: list[Edit]) -> list[Edit]:
    """A node whose `pki` is a legacy single value, and that the plan changes, gets it moved into its
    document first; on a Talos before DOCUMENTS_SINCE the plan is refused, naming the version."""
    if pki not in node.legacy or not edits:
        return []
    if not _version_ok(node.talos_version):
        running = f"Talos {node.talos_version}" if node.talos_version else "a Talos version trustplan could not read"
        raise LegacyLayoutError(
            f"control plane {node.address} keeps the {KINDS[pki].name} in the legacy single value "
            f"{LEGACY_FIELD[pki]}, which cannot hold a second one, and runs {running}: a graceful rotation "
            f"needs Talos {DOCUMENTS_SINCE} or later (its {KINDS[pki].field.split('.')[0]} document). "
            f"Upgrade Talos first; trustplan then moves the value into the document, unchanged, before rotating"
            + ("" if pki == "encryption" else
               f" (or replace it in place, breaking what it {'signed' if pki == 'serviceaccount' else 'issued'}: "
               f"`trustplan plan --allow-disruptive {pki}`)")
        )
    return [MoveToDocument(node.address, node.role, pki)]


def held_removes(inp: PlanInput, desired: DesiredTrust, edits: list[Edit]) -> tuple[set[Edit], Deferred | None]:
    """The removes of `desired.pki` that wait for its drain: all of them while a swap of this plan
    or one less than `drain` ago may have tokens signed with the old key still in use."""
    drain = desired.drain
    removes = [e for e in edits if isinstance(e, RemoveCA) and e.pki == desired.pki]
    if drain is None or drain <= dt.timedelta(0) or not removes:
        return set(), None
    swapping = any(isinstance(e, SwapIssuer) and e.pki == desired.pki for e in edits)
    since = None if swapping else dict(inp.swapped_at).get(desired.pki)
    until = since + drain if since is not None else None
    if until is not None and inp.now >= until:
        return set(), None
    cas = tuple(sorted({e.ca for e in removes if isinstance(e, RemoveCA)}))
    nodes = tuple(dict.fromkeys(e.node for e in removes))
    return set(removes), Deferred(desired.pki, cas, nodes, drain, since, until)


def tokens_break(tokens: tuple[str, ...], most: int = 10) -> str:
    shown = ", ".join(tokens[:most]) + (f" (and {len(tokens) - most} more)" if len(tokens) > most else "")
    return (
        f"{len(tokens)} legacy service-account token Secret(s) (type kubernetes.io/service-account-token) "
        f"signed with the removed key stop working: {shown}"
    )


def format_duration(d: dt.timedelta) -> str:
    """e.g. 90m, 1h, 8760h, 0s: the form the desired state takes."""
    seconds = int(d.total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"

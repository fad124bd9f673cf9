"""Compare live trust with desired trust and order the differences into phases.

    make_plan(PlanInput) -> Plan        pure; raises PlanningError / UnsafePlanError

Per node and PKI the target is: issuer = desired issuer (control planes with its key, workers the
certificate only), accepted = desired accepted. The way there is expand -> switch -> contract:
accept (trust every CA the target needs), swap (issue from the new CA, keep the old one accepted),
remove (drop what the target does not name). Each phase skips nodes where it is already done, so a
plan made from a half-finished rotation finishes it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import assert_never

from trustplan.planner.drain import (
    Deferred,
    LegacyLayoutError,
    disruption,
    format_duration,
    held_removes,
    legacy_moves,
    replaced_in_place,
    tokens_break,
)
from trustplan.planner.etcd import EtcdPlanRefused, check_members
from trustplan.planner.model import (
    KINDS,
    LEGACY_FIELD,
    PKI,
    PKIS,
    Authority,
    Credential,
    DesiredTrust,
    LiveNode,
    LiveTrust,
    PlanInput,
)
from trustplan.planner.ops import (
    AcceptCA,
    Edit,
    Gate,
    Phase,
    PhaseName,
    RemoveCA,
    SwapIssuer,
    WriteOutput,
    apply_edit,
)
from trustplan.planner.result import NodeTarget, Plan, PlanWarning
from trustplan.planner.safety import UnsafePlan, check_plan

CHANGE_PHASES: tuple[PhaseName, ...] = ("move", "accept", "swap", "remove")


class PlanningError(Exception):
    """The live cluster and the desired state cannot be reconciled (e.g. a role contradiction)."""


class LegacyLayoutRefused(PlanningError, LegacyLayoutError):
    """A legacy single value (e.g. cluster.serviceAccount.key) would change on a Talos before 1.14."""


def node_sort_key(node: LiveNode) -> tuple[int, int, object, str]:
    """Control planes before workers, then by address (numerically for IPs)."""
    try:
        ip = ipaddress.ip_address(node.address)
        return (0 if node.role == "controlplane" else 1, ip.version, int(ip), "")
    except ValueError:
        return (0 if node.role == "controlplane" else 1, 9, 0, node.address)


def _edits_for(node: LiveNode, want: DesiredTrust, trust: LiveTrust) -> dict[PhaseName, list[Edit]]:
    keep = set(want.accepted) | {want.issuer}
    accepts = [
        AcceptCA(node.address, node.role, want.pki, ca)
        for ca in dict.fromkeys((want.issuer, *want.accepted))
        if ca not in trust.trusted
    ]
    swaps: list[SwapIssuer] = []
    key_missing = node.role == "controlplane" and not trust.issuer_has_key  # e.g. the right CA, but no key
    if trust.issuer != want.issuer or key_missing:
        swaps.append(SwapIssuer(node.address, node.role, want.pki, want.issuer, trust.issuer))
    after_swap = trust
    changes: list[Edit] = [*accepts, *swaps]
    for e in changes:
        after_swap = apply_edit(after_swap, e)
    removes = [RemoveCA(node.address, node.role, want.pki, ca) for ca in after_swap.accepted if ca not in keep]
    return {"accept": [*accepts], "swap": [*swaps], "remove": [*removes]}


def _in_place(node: LiveNode, want: DesiredTrust, edits: dict[PhaseName, list[Edit]]) -> dict[PhaseName, list[Edit]]:
    """A legacy single value replaced in place (`--allow-disruptive`): the swap and the remove of the
    old one in the same write (the field holds one value), nothing to accept first."""
    if want.accepted:
        raise PlanningError(
            f"trust.{want.pki}.accepted: control plane {node.address} keeps the {KINDS[want.pki].name} in the "
            f"legacy single value {LEGACY_FIELD[want.pki]}, which cannot accept a second one: with "
            f"--allow-disruptive {want.pki} the desired state names the issuer alone"
        )
    swaps = [e for e in edits["swap"] if isinstance(e, SwapIssuer)]
    return {"accept": [], "swap": [*swaps, *edits["remove"]], "remove": []}


def _disruptions(plan: Plan, disruptive: dict[PKI, tuple[LiveNode, ...]]) -> tuple[PlanWarning, ...]:
    out = []
    for pki, nodes in disruptive.items():
        old = tuple(sorted({i for n in nodes if (i := n.trust(pki).issuer)}))
        version = nodes[0].talos_version
        message = disruption(pki, tuple(plan.label(c) for c in old), len(nodes), version)
        out.append(PlanWarning("disruptive", pki, old[0] if old else None, tuple(n.address for n in nodes), message))
    return tuple(out)


def _check_roles(inp: PlanInput) -> None:
    wrong = [n for n in inp.nodes if n.declared_role is not None and n.declared_role != n.role]
    if wrong:
        lines = [
            f"node {n.address} is listed under cluster.nodes.{n.declared_role} but its machine config says "
            f"machine.type: {n.role}"
            for n in wrong
        ]
        raise PlanningError("; ".join(lines))


def make_plan(inp: PlanInput) -> Plan:
    """Diff live against desired and order the changes into phases with gates; then prove it safe."""
    _check_roles(inp)
    nodes = tuple(sorted(inp.nodes, key=node_sort_key))
    desired = {d.pki: d for d in inp.desired}
    managed = tuple(p for p in PKIS if p in desired)
    key_ok = {a.fingerprint: a.key_available for a in inp.authorities}

    by_phase: dict[PhaseName, list[Edit]] = {"move": [], "accept": [], "swap": [], "remove": []}
    targets: list[NodeTarget] = []
    planned: list[tuple[LiveNode, PKI, dict[PhaseName, list[Edit]]]] = []
    disruptive: dict[PKI, tuple[LiveNode, ...]] = {}  # kinds replaced in place, on these nodes
    for node in nodes:
        for pki in managed:
            if not node.holds(pki):  # e.g. a worker and a control-plane-only kind
                continue
            node_edits = _edits_for(node, desired[pki], node.trust(pki))
            flat = [e for es in node_edits.values() for e in es]
            if replaced_in_place(node, pki, flat, inp.allow_disruptive):
                node_edits = _in_place(node, desired[pki], node_edits)
                disruptive[pki] = (*disruptive.get(pki, ()), node)
            else:
                try:
                    node_edits["move"] = legacy_moves(node, pki, flat)
                except LegacyLayoutError as exc:
                    raise LegacyLayoutRefused(str(exc)) from None
            planned.append((node, pki, node_edits))
    held: set[Edit] = set()
    deferred: list[Deferred] = []
    for pki in (p for p in managed if p not in disruptive):  # in place, the old one goes at once: no drain
        edits_of = [e for _, p, es in planned if p == pki for e in es.get("swap", []) + es.get("remove", [])]
        waits, note = held_removes(inp, desired[pki], edits_of)
        held |= waits
        deferred += [note] if note else []
    for node, pki, node_edits in planned:
        want, trust = desired[pki], node.trust(pki)
        after = trust
        for phase_name in CHANGE_PHASES:
            kept = [e for e in node_edits.get(phase_name, []) if e not in held]
            by_phase[phase_name] += kept
            for e in kept:
                after = apply_edit(after, e, key_ok.get(want.issuer, False))
        targets.append(NodeTarget(node.address, node.role, pki, trust, after))

    live_issuers = {
        pki: tuple(sorted({i for n in nodes if (i := n.trust(pki).issuer)} | {desired[pki].issuer}))
        for pki in managed
    }
    holders = {pki: tuple(n.address for n in nodes if n.holds(pki)) for pki in managed}

    def gate_credential(pki: PKI, phase: PhaseName) -> Credential:
        """After accept: new client cert, old + new server CAs; after swap and remove: new only.
        After a move: what the node issued before, unchanged (the move is proven harmless)."""
        if phase == "move":
            live = next(i for n in nodes if (i := n.trust(pki).issuer))
            return Credential(live, (live,))
        issuer = desired[pki].issuer
        return Credential(issuer, live_issuers[pki] if phase == "accept" else (issuer,))

    def talos_credential(phase: PhaseName) -> Credential | None:
        """Accept runs with the operator's credential; swap with the new cert trusting old + new
        server CAs (nodes switch certificates during it); remove with the new PKI alone."""
        if "talos" in desired and phase not in ("move", "accept"):
            return gate_credential("talos", "accept" if phase == "swap" else phase)
        if inp.operator is not None:
            return inp.operator
        return None

    lagging = _lagging_workers(nodes, desired, by_phase["accept"]) if "talos" in desired else ()
    phases: list[Phase] = []
    for phase_name in CHANGE_PHASES:
        edits = by_phase[phase_name]
        recertify = lagging if phase_name == "accept" else ()
        if not edits and not recertify:
            continue
        changed = [p for p in managed if any(e.pki == p for e in edits)] or ["talos"]
        gates = [Gate(p, phase_name, gate_credential(p, phase_name), holders[p]) for p in changed]
        if phase_name == "accept":  # also prove every pre-staged CA we hold a key for is trusted
            for p in changed:
                staged = dict.fromkeys(e.ca for e in edits if isinstance(e, AcceptCA) and e.pki == p)
                for ca in staged:
                    if ca != desired[p].issuer and key_ok.get(ca, False):
                        gates.append(Gate(p, "accept", Credential(ca, live_issuers[p]), holders[p]))
        phases.append(Phase(phase_name, tuple(edits), tuple(gates), talos_credential(phase_name), (), recertify))

    outs = _outputs(inp, desired, managed, refresh_only=not phases)
    if outs:  # after the swap gate, before remove: a working credential exists before anything is revoked
        # (a swap that replaces a value in place removes the old one too: the outputs still follow it)
        at = next((i for i, p in enumerate(phases) if p.destructive and p.name != "swap"), len(phases))
        phases.insert(at, Phase("outputs", (), (), None, tuple(outs)))

    if any(e.pki == "etcd" for p in phases if p.name in ("accept", "remove") for e in p.edits):
        try:  # each of these writes is followed by a reboot of the member: one down at a time
            check_members(len(holders["etcd"]))
        except EtcdPlanRefused as exc:
            raise PlanningError(str(exc)) from None
    plan = Plan(
        cluster=inp.cluster,
        managed=managed,
        authorities=_referenced(inp, targets),
        nodes=nodes,
        targets=tuple(targets),
        phases=tuple(phases),
        warnings=(),
        deferred=tuple(deferred),
    )
    plan = dataclasses.replace(plan, warnings=_warnings(plan, inp) + _disruptions(plan, disruptive))
    check_plan(plan, inp)
    return plan


def _lagging_workers(
    nodes: tuple[LiveNode, ...], desired: dict[PKI, DesiredTrust], accepts: list[Edit]
) -> tuple[str, ...]:
    """Workers whose apid was probed refusing client certificates from the desired Talos issuer,
    although it will trust it by its config: their trustd bundle lags their config (they asked trustd
    before the control planes trusted that CA). A worker the accept phase edits asks trustd again by
    that write; the others need a recertify write of their own."""
    issuer = desired["talos"].issuer
    edited = {e.node for e in accepts if e.pki == "talos"}
    return tuple(
        n.address for n in nodes
        if n.role == "worker" and issuer in n.probed_refuses and n.address not in edited
    )


def suggest_accepted(inp: PlanInput) -> tuple[PKI, str] | None:
    """For a refused plan: a CA some node trusts now that, kept in `accepted`, makes the plan safe
    (the first such, by PKI then fingerprint); None when no single CA does. A half-done rotation
    often needs the old CA kept for one more plan; a later plan without it removes it safely."""
    for d in inp.desired:
        live = sorted({c for n in inp.nodes for c in n.trust(d.pki).trusted} - {d.issuer, *d.accepted})
        for ca in live:
            wider = tuple(DesiredTrust(x.pki, x.issuer, x.accepted + (ca,)) if x is d else x for x in inp.desired)
            try:
                make_plan(dataclasses.replace(inp, desired=wider))
            except (UnsafePlan, PlanningError):
                continue
            return d.pki, ca
    return None


def _outputs(
    inp: PlanInput, desired: dict[PKI, DesiredTrust], managed: tuple[PKI, ...], refresh_only: bool
) -> list[WriteOutput]:
    """The outputs for the desired issuers: all configured ones when nodes change, else only the
    ones that do not work against the live cluster."""

    def wanted(kind: str) -> bool:
        return bool(getattr(inp.outputs, kind)) and (not refresh_only or kind in inp.outputs.refresh)

    outs: list[WriteOutput] = []
    if "talos" in desired and wanted("talosconfig"):
        outs.append(WriteOutput("talosconfig", "talos", desired["talos"].issuer))
    if "kubernetes" in desired and wanted("kubeconfig"):
        outs.append(WriteOutput("kubeconfig", "kubernetes", desired["kubernetes"].issuer))
    if wanted("secrets"):
        for pki in managed:
            outs.append(WriteOutput("secrets", pki, desired[pki].issuer))
    return outs


def _referenced(inp: PlanInput, targets: list[NodeTarget]) -> tuple[Authority, ...]:
    used: set[str] = set()
    for t in targets:
        used |= t.before.trusted | t.after.trusted
    used |= {d.issuer for d in inp.desired} | {c for d in inp.desired for c in d.accepted}
    return tuple(sorted((a for a in inp.authorities if a.fingerprint in used), key=lambda a: (a.pki, a.label)))


def _untrusted_means(pki: PKI) -> str:
    """What it breaks when an authority of `pki` stops being trusted everywhere."""
    match pki:
        case "talos" | "kubernetes":
            what = "talosconfigs" if pki == "talos" else "kubeconfigs"
            return f"stops being trusted on every node: {what} and any other client certificates it issued stop working"
        case "aggregator":
            return (
                "stops being trusted by every API server: front-proxy client certificates it issued "
                "(extension API servers' callers) stop working"
            )
        case "serviceaccount":
            return "stops being accepted by every API server: service-account tokens it signed stop working"
        case "encryption":
            return "is dropped by every API server: anything still encrypted with it in etcd can no longer be read"
        case "etcd":
            return ("stops being trusted by every etcd member once it restarts: etcd client certificates it issued "
                    "(a copied secrets.yaml's) are refused")
        case _:
            assert_never(pki)


def _warnings(plan: Plan, inp: PlanInput) -> tuple[PlanWarning, ...]:
    out: list[PlanWarning] = []
    trusted_after = {(t.pki, c) for t in plan.targets for c in t.after.trusted}
    trusted_before = {(t.pki, c) for t in plan.targets for c in t.before.trusted}
    for pki, ca in sorted(trusted_before - trusted_after):
        dropping = tuple(t.node for t in plan.targets if t.pki == pki and ca in t.before.trusted)
        out.append(PlanWarning("ca-untrusted", pki, ca, dropping, f"{plan.label(ca)} ({ca}) {_untrusted_means(pki)}"))
    for d in inp.desired:
        for fp in (d.issuer, *d.accepted):
            a = plan.authority(fp)
            if a is not None and (a.not_after - inp.now).days < 90:
                trusting = tuple(t.node for t in plan.targets if t.pki == d.pki and fp in t.after.trusted)
                message = f"{a.label} expires on {a.not_after:%Y-%m-%d}, within 90 days"
                out.append(PlanWarning("ca-expiring", d.pki, fp, trusting, message))
    for kind in inp.outputs.refresh if not plan.has_edits else ():
        if getattr(inp.outputs, kind):
            what = "does not hold the issuing CA" if kind == "secrets" else "does not work against the live cluster"
            message = f"the configured {kind} {what}: it is written anew"
            out.append(PlanWarning("output-refused", None, None, (), message))
    for held in plan.deferred:
        when = (
            f"`trustplan plan` offers it from {held.until:%Y-%m-%d %H:%M} UTC"
            if held.until is not None
            else f"`trustplan plan` offers it {format_duration(held.drain)} after the swap (apply records when)"
        )
        message = (
            f"the remove of {', '.join(plan.label(c) for c in held.cas)} ({KINDS[held.pki].name}) waits for the token "
            f"drain of {format_duration(held.drain)}: tokens signed with it stay valid until they expire; {when}"
        )
        out.append(PlanWarning("removal-deferred", held.pki, held.cas[0] if held.cas else None, held.nodes, message))
    sa_removed = {e.ca for e in plan.edits if e.kind == "remove" and e.pki == "serviceaccount"}
    if sa_removed and inp.legacy_tokens:
        out.append(PlanWarning("tokens-break", "serviceaccount", None, (), tokens_break(inp.legacy_tokens)))
    if plan.has_edits:
        changed = {e.node for e in plan.edits}
        skipped = tuple(n.address for n in plan.nodes if n.address not in changed)
        if skipped:
            message = "already in the desired state, skipped: " + ", ".join(skipped)
            out.append(PlanWarning("nodes-skipped", None, None, skipped, message))
    return tuple({w.message: w for w in out}.values())


__all__ = [
    "NodeTarget",
    "Plan",
    "PlanWarning",
    "PlanningError",
    "apply_edit",
    "make_plan",
    "node_sort_key",
    "suggest_accepted",
]

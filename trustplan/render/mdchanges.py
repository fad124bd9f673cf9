"""What changes where, in Markdown: per PKI a table of the distinct changes (nodes with the same
before and after grouped into one row, their list folded), and per phase one diff per group of nodes
that change the same way, a swap shown as a move between `ca` and `acceptedCAs`. Key material never
enters it: a key is shown as `(sensitive)` and named by the CA it belongs to.
"""

from __future__ import annotations

from typing import assert_never

from trustplan.planner import Plan
from trustplan.planner.model import KINDS, PKI, PKI_TITLE, LiveTrust
from trustplan.planner.ops import Gate, Phase, new_issuer
from trustplan.planner.plan import apply_edit
from trustplan.render.mdparts import Chunk
from trustplan.render.mdview import View, ca_ref, nodes_cell, plain_ref
from trustplan.render.text import rolling_text

SENSITIVE = "(sensitive)"
#: Where each PKI's CA fields live in a v1alpha1 machine config.
def fields(pki: PKI) -> tuple[str, str, str]:
    """The config fields a diff line names: (issuer, issuer's key, accepted)."""
    match pki:
        case "talos" | "kubernetes":
            prefix = "machine" if pki == "talos" else "cluster"
            return f"{prefix}.ca.crt", f"{prefix}.ca.key", f"{prefix}.acceptedCAs"
        case "aggregator":
            doc = "KubeAggregatorCAConfig"
            return f"{doc}.issuingCA.cert", f"{doc}.issuingCA.key", f"{doc}.acceptedCAs"
        case "serviceaccount":
            doc = "KubeServiceAccountConfig"
            return f"{doc}.issuer (public key)", f"{doc}.issuer.privateKey", f"{doc}.accepted.publicKeys"
        case "encryption":
            doc = "KubeEtcdEncryptionConfig secretbox keys"
            return f"{doc}[0] (encrypts)", f"{doc}[0].secret", f"{doc}[1:] (decrypt only)"
        case "etcd":
            return "cluster.etcd.ca.crt[0] (issues)", "cluster.etcd.ca.key", "cluster.etcd.ca.crt[1:] (trusted)"
        case _:
            assert_never(pki)


def _issuing(plan: Plan, t: LiveTrust) -> str:
    if t.issuer is None:
        return "(none)"
    return ca_ref(plan, t.issuer) + (" + key" if t.issuer_has_key else "")


def _accepted(plan: Plan, t: LiveTrust) -> str:
    return ", ".join(ca_ref(plan, c) for c in t.accepted) or "(none)"


def _trust_row(plan: Plan, before: LiveTrust, after: LiveTrust) -> tuple[str, str, str, str]:
    ib, ia = _issuing(plan, before), _issuing(plan, after)
    ab, aa = _accepted(plan, before), _accepted(plan, after)
    return ib, (ia if ia != ib else "="), ab, (aa if aa != ab else "=")


TABLE_HEAD = "| nodes | issuing before | issuing after | accepted before | accepted after |\n|---|---|---|---|---|\n"


def _groups(plan: Plan, pki: PKI) -> dict[tuple[str, tuple[str, str, str, str]], list[str]]:
    """Nodes of one PKI grouped by role and (before, after) trust, in plan order."""
    groups: dict[tuple[str, tuple[str, str, str, str]], list[str]] = {}
    for t in plan.targets:
        if t.pki == pki:
            groups.setdefault((t.role, _trust_row(plan, t.before, t.after)), []).append(t.node)
    return groups


def trust_tables(plan: Plan, view: View = View()) -> list[Chunk]:
    """Per PKI, one row per distinct change: its nodes (counted, the list folded), issuing and
    accepted CAs before and after (`=`: unchanged)."""
    chunks: list[Chunk] = []
    for pki in plan.managed:
        title = f"### {_title(pki)}: what changes where\n\n"
        for i, ((role, (ib, ia, ab, aa)), nodes) in enumerate(_groups(plan, pki).items()):
            chunks.append(
                Chunk(
                    f"| {nodes_cell(nodes, role, view)} | {ib} | {ia} | {ab} | {aa} |\n",
                    context=f"table:{pki}",
                    open=(title if i == 0 else "") + TABLE_HEAD,
                    reopen=f"### {_title(pki)}: what changes where (continued)\n\n" + TABLE_HEAD,
                    close="\n",
                )
            )
    return chunks


# --- per-phase diffs --------------------------------------------------------------------------


def diff_lines(plan: Plan, pki: PKI, before: LiveTrust, after: LiveTrust) -> list[str]:
    """`-` / `+` lines for one node's CA fields of one PKI. A CA that goes from the issuing field to
    acceptedCAs (or back) is shown as a move, annotated on both lines; acceptedCAs is a set to Talos,
    so entries are never compared by position."""
    crt, key, acc = fields(pki)
    lines: list[str] = []
    if before.issuer != after.issuer:
        if before.issuer is not None:
            moved = f"  # moves to {acc}" if before.issuer in after.accepted else ""
            lines.append(f"- {crt}: {plain_ref(plan, before.issuer)}{moved}")
        if after.issuer is not None:
            moved = f"  # moves here from {acc}" if after.issuer in before.accepted else ""
            lines.append(f"+ {crt}: {plain_ref(plan, after.issuer)}{moved}")
    key_before = before.issuer if before.issuer_has_key else None
    key_after = after.issuer if after.issuer_has_key else None
    if key_before != key_after:
        if key_before is not None:
            lines.append(f"- {key}: {SENSITIVE}  # the key of {plain_ref(plan, key_before)}")
        if key_after is not None:
            lines.append(f"+ {key}: {SENSITIVE}  # the key of {plain_ref(plan, key_after)}")
    for fp in before.accepted:
        if fp not in after.accepted:
            moved = f"  # moves to {crt}" if fp == after.issuer else ""
            lines.append(f"- {acc}: {plain_ref(plan, fp)}{moved}")
    for fp in after.accepted:
        if fp not in before.accepted:
            moved = f"  # moves here from {crt}" if fp == before.issuer else ""
            lines.append(f"+ {acc}: {plain_ref(plan, fp)}{moved}")
    return lines


def phase_title(i: int, phase: Phase) -> str:
    if phase.name == "outputs":
        kinds = ", ".join(dict.fromkeys(o.output for o in phase.outputs))
        return f"Phase {i}: outputs: write the new credentials ({kinds}); no node changes"
    what = {
        "move": "move legacy single values into their Talos 1.14 documents, unchanged",
        "accept": "accept the new CAs everywhere (expand)",
        "swap": "issue from the new CAs (switch)",
        "remove": "remove the CAs the desired state does not name (contract; revokes)",
    }[phase.name]
    n_edits = len(phase.edits)
    return (
        f"Phase {i}: {phase.name}: {what}: {len(phase.nodes())} nodes, {n_edits} "
        f"{'change' if n_edits == 1 else 'changes'}, then {len(phase.gates)} verification "
        f"{'gate' if len(phase.gates) == 1 else 'gates'}"
    )


def phase_chunks(plan: Plan, view: View = View(), model: bool = False) -> list[Chunk]:
    """Per phase: the gates that follow it, then one diff per group of nodes that change the same way.
    Phases keep the plan document's numbers (the outputs phase is listed in the Outputs section).
    `model`: the gates are model checks (files provider: no node is contacted), and say so."""
    state = {(t.node, t.pki): t.before for t in plan.targets}
    chunks: list[Chunk] = []
    for i, phase in enumerate(plan.phases, start=1):
        if phase.name == "outputs":
            continue
        title = phase_title(i, phase)
        gates = "".join(_gate(plan, g, model) for g in phase.gates)
        heading = ("Model checks after this phase (files provider: the configs are checked, no node is contacted):"
                   if model else "Verified after this phase, before the next one starts:")
        gates = f"{heading}\n\n{gates}\n" if gates else ""
        rolling = rolling_text(plan, phase.name, model)
        if rolling:  # the etcd CA's steps: which member restarts, how many stay up, the quorum
            gates = "```text\n" + "\n".join(line.strip() for line in rolling) + "\n```\n\n" + gates
        if phase.recertify:
            gates = (f"Workers whose trust lags their config ask trustd again (a write that adds each one's address "
                     f"to machine.certSANs, no CA field changed): {', '.join(phase.recertify)}\n\n") + gates
        groups: dict[tuple[str, str], list[str]] = {}
        for node in phase.nodes():
            edits = phase.edits_for(node)
            text = ""
            for pki in plan.managed:
                pki_edits = [e for e in edits if e.pki == pki]
                if not pki_edits:
                    continue
                before = after = state[(node, pki)]
                for e in pki_edits:
                    issuer = new_issuer(e)
                    a = plan.authority(issuer) if issuer is not None else None
                    after = apply_edit(after, e, a.key_available if a is not None else True)
                state[(node, pki)] = after
                text += f"@@ {PKI_TITLE[pki]} @@\n" + "".join(f"{ln}\n" for ln in diff_lines(plan, pki, before, after))
            groups.setdefault((edits[0].role, text), []).append(node)
        if view.folds:
            opening = f"<details><summary>{title}</summary>\n\n{gates}"
            reopen = f"<details><summary>{title} (continued)</summary>\n\n"
            close = "</details>\n\n"
        else:
            opening, reopen, close = f"#### {title}\n\n{gates}", f"#### {title} (continued)\n\n", ""
        for (role, text), nodes in groups.items():
            body = f"{nodes_cell(nodes, role, view)}\n\n```diff\n{text}```\n\n"
            chunks.append(Chunk(body, f"phase:{i}", opening, reopen, close))
    return chunks


def _gate(plan: Plan, g: Gate, model: bool = False) -> str:
    trusted = ", ".join(ca_ref(plan, c) for c in g.credential.trusted)
    if KINDS[g.pki].holders == "all":
        reach = " (model check): the configs of all {} nodes accept" if model else ": reaches all {} nodes with"
        return (
            f"- {PKI_TITLE[g.pki]}{reach.format(len(g.nodes))} an admin cert from "
            f"{ca_ref(plan, g.credential.issuer)}, trusting {trusted}\n"
        )
    verb = KINDS[g.pki].issues.split(" ", 1)[0]
    who = "etcd members" if g.pki == "etcd" else "API servers"
    return (
        f"- {KINDS[g.pki].name}: all {len(g.nodes)} {who} accept {ca_ref(plan, g.credential.issuer)} "
        f"and {verb} only with {trusted}\n"
    )


def _title(pki: PKI) -> str:
    return f"{PKI_TITLE[pki]} CA" if KINDS[pki].holders == "all" else KINDS[pki].name

"""The Markdown rendering of a plan, for a pull-request (or merge-request) comment.

    render(plan, doc, view)                   the whole plan as one Markdown text
    render_parts(plan, doc, summary, view=)   the same, split into parts that each fit one comment
    render_summary(plan, doc, view)           the short form (`--summary`): no per-phase diffs

Layout, top to bottom: a heading naming the cluster; a one-line verdict; the "Plan: ..." summary line
(exactly `render.summary_line`); the plan file's SHA-256 and who signed it (or "unsigned"); a
warnings block (CAs no node trusts any more and the credentials that die with them, CAs expiring
within 90 days, skipped nodes); the new CAs with their full fingerprints (what reviewers approve);
per PKI a table of the distinct changes, nodes with the same before and after grouped into one row
with their count and their list folded; per phase the gates after it and one diff per group of
nodes that change the same way, a swap shown as a move between `ca` and `acceptedCAs`; the outputs.

A View says where the text goes: `flavor` github (a `> [!WARNING]` alert, `<details>` folds), gitlab
(`> [!warning]`, `<details>`), or plain (a bold "Warning" quote, no HTML), and the plan file's
provenance. Key material never enters the rendering: a key is shown as `(sensitive)` and named by
the CA it belongs to.

Long plans are split into parts of at most PART_LIMIT characters (GitHub stops a comment at 65,536).
A part never cuts a table row or a group's diff; a table or `<details>` block cut by a part boundary
is closed at the end of the part and reopened, marked "(continued)", at the start of the next. Every
part names the cluster, the plan's SHA-256 and its number, so each one stands on its own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from trustplan.planner import Plan
from trustplan.planner.model import PKI, PKI_TITLE, LiveTrust
from trustplan.planner.ops import Phase, SwapIssuer
from trustplan.planner.plan import apply_edit
from trustplan.render.text import summary_line

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

#: Split when the whole rendering is longer than this; every part stays at or below it.
PART_LIMIT = 60_000
#: GitHub's hard limit for one comment, for reference (a part is always well below it).
GITHUB_COMMENT_LIMIT = 65_536
#: Printed between parts on stdout; an HTML comment, so it is invisible if pasted into Markdown.
PART_DELIMITER = "<!-- trustplan: next part -->"
SENSITIVE = "(sensitive)"
EXPIRY_WARNING_DAYS = 90
#: Where each PKI's CA fields live in a v1alpha1 machine config.
FIELD_PREFIX: dict[PKI, str] = {"talos": "machine", "kubernetes": "cluster"}
CREDENTIALS: dict[PKI, str] = {
    "talos": "talosconfig contexts whose client certificate it issued (talosctl stops working with them), "
    "and any other Talos API client certificate it issued",
    "kubernetes": "kubeconfigs whose client certificate it issued (e.g. the admin kubeconfig from "
    "`talosctl kubeconfig`), and any other Kubernetes API client certificate it issued",
}
_KEY_OF = "key-of:"


@dataclass(frozen=True)
class Chunk:
    """A piece of the rendering that is never split. Chunks with the same `context` share one
    opening (`open`, e.g. a table header or `<details>` + code fence) and one `close`."""

    text: str
    context: str = ""
    open: str = ""
    reopen: str = ""
    close: str = ""


# --- labels -----------------------------------------------------------------------------------


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


def _plain_ref(plan: Plan, fp: str) -> str:
    a = plan.authority(fp)
    return f"{a.name} {short(fp)}" if a is not None and a.name else short(fp)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _now(doc: dict[str, Any]) -> dt.datetime | None:
    created = doc.get("created")
    if not created:
        return None
    return dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# --- warnings ---------------------------------------------------------------------------------


def _untrusted(plan: Plan) -> list[tuple[PKI, str]]:
    before = {(t.pki, c) for t in plan.targets for c in t.before.trusted}
    after = {(t.pki, c) for t in plan.targets for c in t.after.trusted}
    return sorted(before - after, key=lambda pc: (plan.managed.index(pc[0]) if pc[0] in plan.managed else 9, pc[1]))


def _expiring(plan: Plan, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    after = {c for t in plan.targets for c in t.after.trusted}
    out = []
    for a in plan.authorities:
        if a.fingerprint in after and a.not_after - now < dt.timedelta(days=EXPIRY_WARNING_DAYS):
            out.append((a.fingerprint, a.not_after))
    return out


def _skipped(plan: Plan) -> list[str]:
    if not plan.has_edits:
        return []
    changed = {e.node for e in plan.edits}
    return [n.address for n in plan.nodes if n.address not in changed]


_KNOWN_WARNING = re.compile(r"stops being trusted on every node|expires on .* within 90 days|already in the desired")


def warnings_block(plan: Plan, doc: dict[str, Any], view: View = View()) -> list[str]:
    """The warnings as an alert: trust removed (and which credentials die), expiry, skipped nodes."""
    items: list[str] = []
    outputs = {o.pki: o for o in plan.outputs if o.output != "secrets"}
    paths = {o.get("output"): o.get("path") for p in doc.get("phases", []) for o in p.get("outputs", [])}
    for pki, fp in _untrusted(plan):
        replacement = ""
        if pki in outputs:
            o = outputs[pki]
            where = f" `{paths[o.output]}`" if paths.get(o.output) else ""
            replacement = f" The plan writes a new {o.output}{where} from {ca_ref(plan, o.ca)}."
        items.append(
            f"**{PKI_TITLE[pki]} CA {ca_ref(plan, fp)} stops being trusted on every node.** "
            f"What stops working: {CREDENTIALS[pki]}.{replacement}"
        )
    now = _now(doc)
    if now is not None:
        for fp, not_after in _expiring(plan, now):
            days = (not_after - now).days
            state = "has expired" if days < 0 else f"expires in {days} days"
            items.append(f"**{ca_ref(plan, fp)} {state}** ({not_after:%Y-%m-%d}) and is still trusted after this plan.")
    skipped = _skipped(plan)
    if skipped:
        noun = "node" if len(skipped) == 1 else "nodes"
        items.append(f"**{len(skipped)} {noun} skipped** (already in the desired state): {node_list(skipped)}.")
    items += [w for w in plan.warnings if not _KNOWN_WARNING.search(w)]
    if not items:
        return []
    alert = {"github": "> [!WARNING]", "gitlab": "> [!warning]", "plain": "> **Warning**"}[view.flavor]
    return [alert] + [f"> - {i}" for i in items] + [""]


# --- node lists -------------------------------------------------------------------------------

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


# --- sections ---------------------------------------------------------------------------------


def verdict(plan: Plan) -> str:
    """One line a reviewer reads first: what the plan does and what it takes away."""
    if not plan.has_changes:
        return "**Verdict: no changes.** Every node already has the desired CAs; applying does nothing."
    nodes = len({e.node for e in plan.edits})
    managed = " and ".join(PKI_TITLE[p] for p in plan.managed if any(e.pki == p for e in plan.edits))
    revoked = len(_untrusted(plan))
    takes = f"revokes {revoked} {'CA' if revoked == 1 else 'CAs'} (see the warning)" if revoked else "revokes nothing"
    return (
        f"**Verdict: changes the {managed} CA on {nodes} of {len(plan.nodes)} nodes; {takes}.** "
        "It passed the lock-out safety check: at every step each node trusts the credential used next."
    )


def provenance(view: View) -> str:
    if view.sha256 is None:
        return "Plan file: not saved (`trustplan plan -o plan.bin` saves it; apply exactly that file)."
    signed = f"signed by Ed25519 key `{view.signer}`" if view.signer else "unsigned"
    name = f"`{view.file}`, " if view.file else ""
    return f"Plan file: {name}SHA-256 `{view.sha256}`, {signed}."


def header(plan: Plan, doc: dict[str, Any], view: View = View()) -> list[str]:
    n_cp = sum(1 for n in plan.nodes if n.role == "controlplane")
    managed = " and ".join(PKI_TITLE[p] for p in plan.managed)
    return [
        f"## trustplan plan for `{plan.cluster}`",
        "",
        verdict(plan),
        "",
        summary_line(plan),
        "",
        provenance(view),
        "",
        f"Cluster `{plan.cluster}` ({doc.get('provider', '?')} provider): {n_cp} control planes, "
        f"{len(plan.nodes) - n_cp} workers; managing the {managed} CA. "
        f"Plan made {doc.get('created', '?')}, expires {doc.get('expires', '?')}.",
        "",
    ]


def new_authorities(plan: Plan) -> list[str]:
    if not plan.new_authorities:
        return []
    out = ["### New authorities", "", "Approve these exact certificates by their SHA-256 fingerprint:", ""]
    out += ["| name | PKI | subject | algorithm | valid from | valid until | source |", "|---|---|---|---|---|---|---|"]
    for a in plan.new_authorities:
        out.append(
            f"| {_cell(a.label)} | {PKI_TITLE[a.pki]} | {_cell(a.subject)} | {a.algorithm} | "
            f"{a.not_before:%Y-%m-%d %H:%M}Z | {a.not_after:%Y-%m-%d %H:%M}Z | {a.source} |"
        )
    out.append("")
    for a in plan.new_authorities:
        out.append(f"- `{a.label}`: `{a.fingerprint}`")
    out.append("")
    return out


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
        title = f"### {PKI_TITLE[pki]} CA: what changes where\n\n"
        for i, ((role, (ib, ia, ab, aa)), nodes) in enumerate(_groups(plan, pki).items()):
            chunks.append(
                Chunk(
                    f"| {nodes_cell(nodes, role, view)} | {ib} | {ia} | {ab} | {aa} |\n",
                    context=f"table:{pki}",
                    open=(title if i == 0 else "") + TABLE_HEAD,
                    reopen=f"### {PKI_TITLE[pki]} CA: what changes where (continued)\n\n" + TABLE_HEAD,
                    close="\n",
                )
            )
    return chunks


# --- per-phase diffs --------------------------------------------------------------------------


def diff_lines(plan: Plan, pki: PKI, before: LiveTrust, after: LiveTrust) -> list[str]:
    """`-` / `+` lines for one node's CA fields of one PKI. A CA that goes from the issuing field to
    acceptedCAs (or back) is shown as a move, annotated on both lines; acceptedCAs is a set to Talos,
    so entries are never compared by position."""
    prefix = FIELD_PREFIX[pki]
    crt, key, acc = f"{prefix}.ca.crt", f"{prefix}.ca.key", f"{prefix}.acceptedCAs"
    lines: list[str] = []
    if before.issuer != after.issuer:
        if before.issuer is not None:
            moved = f"  # moves to {acc}" if before.issuer in after.accepted else ""
            lines.append(f"- {crt}: {_plain_ref(plan, before.issuer)}{moved}")
        if after.issuer is not None:
            moved = f"  # moves here from {acc}" if after.issuer in before.accepted else ""
            lines.append(f"+ {crt}: {_plain_ref(plan, after.issuer)}{moved}")
    key_before = before.issuer if before.issuer_has_key else None
    key_after = after.issuer if after.issuer_has_key else None
    if key_before != key_after:
        if key_before is not None:
            lines.append(f"- {key}: {SENSITIVE}  # the key of {_plain_ref(plan, key_before)}")
        if key_after is not None:
            lines.append(f"+ {key}: {SENSITIVE}  # the key of {_plain_ref(plan, key_after)}")
    for fp in before.accepted:
        if fp not in after.accepted:
            moved = f"  # moves to {crt}" if fp == after.issuer else ""
            lines.append(f"- {acc}: {_plain_ref(plan, fp)}{moved}")
    for fp in after.accepted:
        if fp not in before.accepted:
            moved = f"  # moves here from {crt}" if fp == before.issuer else ""
            lines.append(f"+ {acc}: {_plain_ref(plan, fp)}{moved}")
    return lines


def _phase_title(i: int, phase: Phase) -> str:
    what = {
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


def phase_chunks(plan: Plan, view: View = View()) -> list[Chunk]:
    """Per phase: the gates that follow it, then one diff per group of nodes that change the same way."""
    state = {(t.node, t.pki): t.before for t in plan.targets}
    chunks: list[Chunk] = []
    edit_phases = [p for p in plan.phases if p.name != "outputs"]
    for i, phase in enumerate(edit_phases, start=1):
        title = _phase_title(i, phase)
        gates = "".join(
            f"- {PKI_TITLE[g.pki]}: reaches all {len(g.nodes)} nodes with an admin cert from "
            f"{ca_ref(plan, g.credential.issuer)}, trusting "
            f"{', '.join(ca_ref(plan, c) for c in g.credential.trusted)}\n"
            for g in phase.gates
        )
        gates = f"Verified after this phase, before the next one starts:\n\n{gates}\n" if gates else ""
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
                    a = plan.authority(e.new) if isinstance(e, SwapIssuer) else None
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


def outputs_block(plan: Plan, doc: dict[str, Any]) -> list[str]:
    if not plan.outputs:
        return []
    paths = {
        (o.get("output"), o.get("pki")): o.get("path") for p in doc.get("phases", []) for o in p.get("outputs", [])
    }
    names = [p.name for p in plan.phases]
    before_remove = "remove" in names and names.index("outputs") < names.index("remove")
    out = [f"### Outputs (written {'before the remove phase starts' if before_remove else 'after the last gate'})", ""]
    for o in plan.outputs:
        where = paths.get((o.output, o.pki))
        out.append(f"- {o.output}{f' `{where}`' if where else ''}: {PKI_TITLE[o.pki]}, from {ca_ref(plan, o.ca)}")
    out.append("")
    return out


# --- assembly ---------------------------------------------------------------------------------


def _front(plan: Plan, doc: dict[str, Any], view: View) -> list[str]:
    return header(plan, doc, view) + warnings_block(plan, doc, view) + new_authorities(plan)


def chunks(plan: Plan, doc: dict[str, Any], view: View = View()) -> list[Chunk]:
    """The full rendering as unsplittable chunks, in order."""
    out = [Chunk(line + "\n") for line in _front(plan, doc, view)]
    if plan.has_edits:
        out += trust_tables(plan, view)
        out += [Chunk("### Phases\n\n")]
        out += phase_chunks(plan, view)
    if plan.has_changes:
        out += [Chunk(line + "\n") for line in outputs_block(plan, doc)]
    return out


def render_summary(plan: Plan, doc: dict[str, Any], view: View = View()) -> str:
    """The short form: heading, verdict, warnings, new CAs, the grouped tables, one line per phase."""
    out = _front(plan, doc, view)
    text = "\n".join(out) + "\n"
    if plan.has_changes:
        if plan.has_edits:
            text += _join(trust_tables(plan, view))
            phases = [f"{i}. {_phase_title(i, p).split(': ', 1)[1]}" for i, p in
                      enumerate((p for p in plan.phases if p.name != "outputs"), start=1)]
            text += "### Phases\n\n" + "\n".join(phases) + "\n\n"
        text += "\n".join(outputs_block(plan, doc)) + "\n"
        text += "Full plan: `trustplan show plan.bin --format markdown`.\n"
    return text


def _join(items: Iterable[Chunk]) -> str:
    text, context, close = "", "", ""
    for c in items:
        if c.context != context:
            text += close + c.open
            context, close = c.context, c.close
        text += c.text
    return text + close


def render(plan: Plan, doc: dict[str, Any], view: View = View()) -> str:
    """The whole plan as one Markdown text (may be longer than one comment; see render_parts)."""
    return _join(chunks(plan, doc, view))


def _hard_split(c: Chunk, budget: int) -> Iterator[Chunk]:
    """A chunk larger than a part (never expected) is cut at line boundaries."""
    piece = ""
    for line in c.text.splitlines(keepends=True):
        if piece and len(piece) + len(line) > budget:
            yield Chunk(piece, c.context, c.open, c.reopen, c.close)
            piece = ""
        piece += line[:budget]
    if piece:
        yield Chunk(piece, c.context, c.open, c.reopen, c.close)


def split(items: list[Chunk], limit: int = PART_LIMIT, heading: str = "") -> list[str]:
    """Pack chunks into parts of at most `limit` characters, each saying "part i/n"."""
    budget = limit - len(f"**{heading}part 999/999 (continued)**\n\n*; continued in the next comment*\n")
    bodies: list[str] = []
    body, context, close = "", "", ""
    pieces = (p for big in items for p in (_hard_split(big, budget // 2) if len(big.text) > budget // 2 else (big,)))
    for c in pieces:
        switching = c.context != context
        cost = (len(close) + len(c.open) + len(c.close) if switching else len(close)) + len(c.text)
        if body and len(body) + cost > budget:
            bodies.append(body + close)
            body = (c.open if switching else c.reopen) if c.context else ""
            context, close = c.context, c.close
            body += c.text
            continue
        if switching:
            body += close + c.open
            context, close = c.context, c.close
        body += c.text
    bodies.append(body + close)
    n = len(bodies)
    if n == 1:
        return bodies
    parts = []
    for i, b in enumerate(bodies, start=1):
        if i == 1:
            first, _, rest = b.partition("\n")  # the heading stays the first line
            parts.append(f"{first}\n\n*{heading}part 1/{n}; continued in the next comment*\n{rest}")
        else:
            parts.append(f"**{heading}part {i}/{n} (continued)**\n\n{b}")
    return parts


def _part_heading(plan: Plan, view: View, what: str) -> str:
    digest = f" (plan SHA-256 `{view.sha256[:16]}…`)" if view.sha256 else ""
    return f"trustplan {what} for `{plan.cluster}`{digest}, "


def render_parts(
    plan: Plan, doc: dict[str, Any], summary: bool = False, limit: int = PART_LIMIT, view: View = View()
) -> list[str]:
    """The rendering as one or more parts, each at most `limit` characters (one comment each)."""
    if summary:
        text = render_summary(plan, doc, view)
        if len(text) <= limit:
            return [text]
        lines = [Chunk(line) for line in text.splitlines(keepends=True)]
        return split(lines, limit, _part_heading(plan, view, "plan summary"))
    items = chunks(plan, doc, view)
    text = _join(items)
    if len(text) <= limit:
        return [text]
    return split(items, limit, _part_heading(plan, view, "plan"))

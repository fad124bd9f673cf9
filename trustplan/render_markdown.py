"""The Markdown rendering of a plan, for a pull-request comment.

    render(plan, doc)                   the whole plan as one Markdown text
    render_parts(plan, doc, summary)    the same, split into parts that each fit one GitHub comment
    render_summary(plan, doc)           the short form (`--summary`): no per-node rows or diffs

Layout, top to bottom: the "Plan: ..." summary line (exactly `render.summary_line`); a warnings block
(CAs no node trusts any more and the credentials that dies with them, CAs expiring within 90 days,
skipped nodes); the new CAs with their full fingerprints (what reviewers approve); per PKI a table
node -> role -> issuing before -> after -> accepted before -> after; one `<details>` block per phase
with each node's change to its CA fields as a diff; the outputs.

The per-node diff is computed with deepdiff on a small structure of the CA fields in which each CA
is named by label and short fingerprint. Key material never enters that structure: a key is
represented by the fingerprint of the CA it belongs to (public) and always printed as `(sensitive)`.

Long plans are split into parts of at most PART_LIMIT characters (GitHub stops a comment at 65,536).
A part never cuts a table row or a node's diff; a table or `<details>` block cut by a part boundary
is closed at the end of the part and reopened, marked "(continued)", at the start of the next.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

from trustplan.planner import Plan
from trustplan.planner.model import PKI, PKI_TITLE, LiveTrust
from trustplan.planner.ops import Phase, SwapIssuer
from trustplan.planner.plan import apply_edit
from trustplan.render import summary_line

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


def warnings_block(plan: Plan, doc: dict[str, Any]) -> list[str]:
    """The warnings as a GitHub alert: trust removed (and which credentials die), expiry, skipped nodes."""
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
        shown = ", ".join(skipped[:50]) + (f" and {len(skipped) - 50} more" if len(skipped) > 50 else "")
        noun = "node" if len(skipped) == 1 else "nodes"
        items.append(f"**{len(skipped)} {noun} skipped** (already in the desired state): {shown}.")
    items += [w for w in plan.warnings if not _KNOWN_WARNING.search(w)]
    if not items:
        return []
    return ["> [!WARNING]"] + [f"> - {i}" for i in items] + [""]


# --- sections ---------------------------------------------------------------------------------


def header(plan: Plan, doc: dict[str, Any]) -> list[str]:
    n_cp = sum(1 for n in plan.nodes if n.role == "controlplane")
    managed = " and ".join(PKI_TITLE[p] for p in plan.managed)
    return [
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


TABLE_HEAD = (
    "| node | role | issuing before | issuing after | accepted before | accepted after |\n|---|---|---|---|---|---|\n"
)


def trust_tables(plan: Plan) -> list[Chunk]:
    """Per PKI, one row per node: issuing and accepted CAs before and after (`=`: unchanged)."""
    chunks: list[Chunk] = []
    for pki in plan.managed:
        title = f"### {PKI_TITLE[pki]} CA per node\n\n"
        rows = [t for t in plan.targets if t.pki == pki]
        for i, t in enumerate(rows):
            ib, ia, ab, aa = _trust_row(plan, t.before, t.after)
            chunks.append(
                Chunk(
                    f"| {t.node} | {t.role} | {ib} | {ia} | {ab} | {aa} |\n",
                    context=f"table:{pki}",
                    open=(title if i == 0 else "") + TABLE_HEAD,
                    reopen=f"### {PKI_TITLE[pki]} CA per node (continued)\n\n" + TABLE_HEAD,
                    close="\n",
                )
            )
    return chunks


def grouped_tables(plan: Plan) -> list[str]:
    """The short form of the trust tables: one row per distinct change, with its node count."""
    out: list[str] = []
    for pki in plan.managed:
        groups: dict[tuple[str, tuple[str, str, str, str]], list[str]] = {}
        for t in plan.targets:
            if t.pki == pki:
                groups.setdefault((t.role, _trust_row(plan, t.before, t.after)), []).append(t.node)
        out += [f"### {PKI_TITLE[pki]} CA", ""]
        out += [
            "| nodes | role | issuing before | issuing after | accepted before | accepted after |",
            "|---|---|---|---|---|---|",
        ]
        for (role, (ib, ia, ab, aa)), nodes in groups.items():
            names = ", ".join(nodes[:3]) + (f", … ({len(nodes)} nodes)" if len(nodes) > 3 else "")
            out.append(f"| {names} | {role} | {ib} | {ia} | {ab} | {aa} |")
        out.append("")
    return out


# --- per-phase diffs --------------------------------------------------------------------------


def ca_fields(plan: Plan, pki: PKI, t: LiveTrust) -> dict[str, Any]:
    """The CA fields of one PKI as a structure to diff: CAs by label, keys by the CA they belong to.
    Accepted CAs are plain strings so that deepdiff (ignoring order) reports each as added or removed."""
    prefix = FIELD_PREFIX[pki]
    ca: dict[str, str] = {}
    if t.issuer is not None:
        ca["crt"] = _plain_ref(plan, t.issuer)
        if t.issuer_has_key:
            ca["key"] = _KEY_OF + _plain_ref(plan, t.issuer)  # names the CA; never the key itself
    return {f"{prefix}.ca": ca, f"{prefix}.acceptedCAs": [_plain_ref(plan, c) for c in t.accepted]}


_PATH_PART = re.compile(r"\['([^']*)'\]|\[(\d+)\]")


def _path(deep_path: str) -> str:
    parts: list[str] = []
    for name, index in _PATH_PART.findall(deep_path):
        parts.append(f"[{index}]" if index else ("." + name if parts else name))
    return "".join(parts)


def _value(path: str, value: Any) -> list[tuple[str, str]]:
    """Flatten a (possibly nested) value into (path, text) lines; keys become `(sensitive)`."""
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _value(f"{path}.{k}", v)]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _value(f"{path}[{i}]", v)]
    if path.endswith("]"):  # an acceptedCAs entry: Talos writes it as {crt: ...}
        return [(path + ".crt", str(value))]
    if path.endswith(".key"):
        owner = str(value).removeprefix(_KEY_OF)
        return [(path, f"{SENSITIVE}  # the key of {owner}")]
    return [(path, str(value))]


def diff_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`- path: old` / `+ path: new` lines for what deepdiff finds changed, in field order."""
    diff = DeepDiff(before, after, ignore_order=True, verbose_level=2)  # trust is a set: order is noise
    lines: list[tuple[str, int, str]] = []

    def add(sign: str, path: str, value: Any) -> None:
        field, bracket, _ = path.partition("[")
        if bracket and isinstance((before if sign == "-" else after).get(field), list):
            items = (before if sign == "-" else after)[field]
            path = f"{field}[{items.index(value)}]" if value in items else path  # the real position
        for p, text in _value(path, value):
            lines.append((p, 0 if sign == "-" else 1, f"{sign} {p}: {text}"))

    for kind in ("values_changed", "type_changes"):
        for deep_path, change in diff.get(kind, {}).items():
            add("-", _path(deep_path), change["old_value"])
            add("+", _path(deep_path), change["new_value"])
    for kind, sign in (
        ("dictionary_item_removed", "-"),
        ("iterable_item_removed", "-"),
        ("dictionary_item_added", "+"),
        ("iterable_item_added", "+"),
    ):
        for deep_path, value in diff.get(kind, {}).items():
            add(sign, _path(deep_path), value)
    order = {name: i for i, name in enumerate(("ca.crt", "ca.key", "acceptedCAs"))}

    def sort_key(item: tuple[str, int, str]) -> tuple[int, str, int]:
        path, sign, _ = item
        field = path.split(".", 1)[1] if "." in path else path
        rank = next((i for name, i in order.items() if field.startswith(name)), 9)
        return rank, path, sign

    return [text for _, _, text in sorted(lines, key=sort_key)]


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


def phase_chunks(plan: Plan) -> list[Chunk]:
    """One `<details>` block per phase: the gates that follow it, then a diff of every node's CA fields."""
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
        opening = f"<details><summary>{title}</summary>\n\n{gates}```diff\n"
        reopen = f"<details><summary>{title} (continued)</summary>\n\n```diff\n"
        for node in phase.nodes():
            edits = phase.edits_for(node)
            text = ""
            for pki in plan.managed:
                pki_edits = [e for e in edits if e.pki == pki]
                if not pki_edits:
                    continue
                before = state[(node, pki)]
                after = before
                for e in pki_edits:
                    a = plan.authority(e.new) if isinstance(e, SwapIssuer) else None
                    after = apply_edit(after, e, a.key_available if a is not None else True)
                state[(node, pki)] = after
                lines = diff_lines(ca_fields(plan, pki, before), ca_fields(plan, pki, after))
                text += f"@@ {node} ({edits[0].role}) {PKI_TITLE[pki]} @@\n" + "".join(f"{ln}\n" for ln in lines)
            chunks.append(Chunk(text, f"phase:{i}", opening, reopen, "```\n\n</details>\n\n"))
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


def chunks(plan: Plan, doc: dict[str, Any]) -> list[Chunk]:
    """The full rendering as unsplittable chunks, in order."""
    head = [summary_line(plan), ""] + header(plan, doc) + warnings_block(plan, doc) + new_authorities(plan)
    out = [Chunk(line + "\n") for line in head]
    if plan.has_edits:
        out += trust_tables(plan)
        out += [Chunk("### Phases\n\n")]
        out += phase_chunks(plan)
    if plan.has_changes:
        out += [Chunk(line + "\n") for line in outputs_block(plan, doc)]
    return out


def render_summary(plan: Plan, doc: dict[str, Any]) -> str:
    """The short form: summary, warnings, new CAs, one row per distinct change, one line per phase."""
    out = [summary_line(plan), ""] + header(plan, doc) + warnings_block(plan, doc) + new_authorities(plan)
    if plan.has_changes:
        if plan.has_edits:
            out += grouped_tables(plan)
            out += ["### Phases", ""]
            for i, phase in enumerate((p for p in plan.phases if p.name != "outputs"), start=1):
                out.append(f"{i}. {_phase_title(i, phase).split(': ', 1)[1]}")
            out.append("")
        out += outputs_block(plan, doc)
        out.append("Full plan: `trustplan show plan.bin --format markdown`.")
        out.append("")
    text = "\n".join(out)
    return text if text.endswith("\n") else text + "\n"


def _join(items: Iterable[Chunk]) -> str:
    text, context, close = "", "", ""
    for c in items:
        if c.context != context:
            text += close + c.open
            context, close = c.context, c.close
        text += c.text
    return text + close


def render(plan: Plan, doc: dict[str, Any]) -> str:
    """The whole plan as one Markdown text (may be longer than one comment; see render_parts)."""
    return _join(chunks(plan, doc))


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
            first, _, rest = b.partition("\n")  # the "Plan: ..." line stays the first line
            parts.append(f"{first}\n\n*{heading}part 1/{n}; continued in the next comment*\n{rest}")
        else:
            parts.append(f"**{heading}part {i}/{n} (continued)**\n\n{b}")
    return parts


def render_parts(plan: Plan, doc: dict[str, Any], summary: bool = False, limit: int = PART_LIMIT) -> list[str]:
    """The rendering as one or more parts, each at most `limit` characters (one GitHub comment each)."""
    if summary:
        text = render_summary(plan, doc)
        if len(text) <= limit:
            return [text]
        return split(
            [Chunk(line) for line in text.splitlines(keepends=True)],
            limit,
            f"trustplan plan summary for `{plan.cluster}`, ",
        )
    items = chunks(plan, doc)
    text = _join(items)
    if len(text) <= limit:
        return [text]
    return split(items, limit, f"trustplan plan for `{plan.cluster}`, ")

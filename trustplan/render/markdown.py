"""The Markdown rendering of a saved plan, for a pull-request (or merge-request) comment.

    render(saved, view)                   the whole plan as one Markdown text
    render_parts(saved, summary, view=)   the same, split into parts that each fit one comment
    render_summary(saved, view)           the short form (`--summary`): no per-phase diffs

Layout, top to bottom: a heading naming the cluster; a one-line verdict; the "Plan: ..." summary line
(exactly `render.text.summary_line`); the plan file's SHA-256 and who signed it (or "unsigned"); the
plan's warnings as an alert (CAs no node trusts any more and the credentials that die with them, CAs
expiring within 90 days, skipped nodes, then any other); the new CAs with their full fingerprints
(what reviewers approve); what changes where (trustplan.render.mdchanges); the outputs.

A View (trustplan.render.mdview) says where the text goes: `flavor` github (a `> [!WARNING]` alert,
`<details>` folds), gitlab (`> [!warning]`, `<details>`), or plain (a bold "Warning" quote, no HTML),
and the plan file's provenance. Long plans are split into parts (trustplan.render.mdparts); every
part names the cluster, the plan's SHA-256 and its number, so each one stands on its own.

The warnings are the planner's (Plan.warnings): this module words them, it never decides them.
"""

from __future__ import annotations

import datetime as dt

from trustplan.formats.planfile.savedplan import SavedPlan
from trustplan.planner import Plan, PlanWarning
from trustplan.planner.model import KINDS, PKI, PKI_TITLE, Authority
from trustplan.planner.timestamps import iso_time
from trustplan.render.mdchanges import phase_chunks, phase_title, trust_tables
from trustplan.render.mdparts import GITHUB_COMMENT_LIMIT, PART_DELIMITER, PART_LIMIT, Chunk, join, split
from trustplan.render.mdreview import blast_radius, mermaid, numbered, rollback_block, rollout_block
from trustplan.render.mdview import FLAVORS, FOLD_OVER, Flavor, View, ca_ref, cell, node_list
from trustplan.render.text import managed_text, summary_line

__all__ = [
    "FLAVORS",
    "FOLD_OVER",
    "GITHUB_COMMENT_LIMIT",
    "PART_DELIMITER",
    "PART_LIMIT",
    "Chunk",
    "Flavor",
    "View",
    "chunks",
    "render",
    "render_parts",
    "render_summary",
    "split",
]

CREDENTIALS = {
    "talos": "talosconfig contexts whose client certificate it issued (talosctl stops working with them), "
    "and any other Talos API client certificate it issued",
    "kubernetes": "kubeconfigs whose client certificate it issued (e.g. the admin kubeconfig from "
    "`talosctl kubeconfig`), and any other Kubernetes API client certificate it issued",
    "aggregator": "front-proxy client certificates it issued: the API servers' calls to extension API servers "
    "(metrics-server and other aggregated APIs) that still present one",
    "serviceaccount": "service-account tokens signed with it: pods' projected tokens not yet refreshed and "
    "legacy token Secrets",
    "encryption": "Secrets in etcd still encrypted with it (the plan rewrites every Secret under the new key "
    "before this)",
    "etcd": "etcd client certificates it issued (e.g. one made from a copied secrets.yaml): every member "
    "refuses them once it has restarted; the members' own certificates come from the new CA by then",
}
ALERT = {"github": "> [!WARNING]", "gitlab": "> [!warning]", "plain": "> **Warning**"}


# --- warnings ---------------------------------------------------------------------------------


def _untrusted(plan: Plan) -> list[PlanWarning]:
    """The CAs the plan takes away, in the order of the managed PKIs, then by fingerprint."""
    found = [w for w in plan.warnings if w.code == "ca-untrusted" and w.pki is not None and w.fingerprint]
    return sorted(found, key=lambda w: (plan.managed.index(w.pki) if w.pki in plan.managed else 9, w.fingerprint))


def _untrusted_item(saved: SavedPlan, w: PlanWarning) -> str:
    plan = saved.plan
    assert w.pki is not None
    out = next((o for o in saved.outputs if o.step.pki == w.pki and o.step.output != "secrets"), None)
    replacement = ""
    if out is not None:
        where = f" `{out.path}`" if out.path else ""
        replacement = f" The plan writes a new {out.step.output}{where} from {ca_ref(plan, out.step.ca)}."
    a = plan.authority(w.fingerprint) if w.fingerprint else None
    facts = ""
    if a is not None and a.subject and a.not_after is not None:  # a CA; a signing or secretbox key has neither
        facts = f" (subject {a.subject}, valid until {a.not_after:%Y-%m-%d})"
    return (
        f"**{KINDS[w.pki].name} {ca_ref(plan, w.fingerprint)}{facts} stops being trusted on every node.** "
        f"What stops working: {CREDENTIALS[w.pki]}.{replacement}"
    )


def _expiring_items(saved: SavedPlan) -> tuple[list[str], set[PlanWarning]]:
    """The CAs still trusted after the plan that expire within 90 days, in the plan's CA order,
    counted in days from when the plan was made."""
    plan, now = saved.plan, saved.bindings.created
    by_fp = {w.fingerprint: w for w in plan.warnings if w.code == "ca-expiring" and w.fingerprint}
    items, shown = [], set()
    for a in plan.authorities:
        if a.fingerprint in by_fp:
            days = (a.not_after - now).days
            state = "has expired" if days < 0 else f"expires in {days} days"
            items.append(f"**{ca_ref(plan, a.fingerprint)} {state}** ({a.not_after:%Y-%m-%d}) and is still trusted "
                         "after this plan.")
            shown.add(by_fp[a.fingerprint])
    return items, shown


def warnings_block(saved: SavedPlan, view: View = View()) -> list[str]:
    """The plan's warnings as an alert: trust removed (and which credentials die), expiry, skipped
    nodes, then any other warning by its message."""
    plan = saved.plan
    untrusted = _untrusted(plan)
    items = [_untrusted_item(saved, w) for w in untrusted]
    expiring, shown = _expiring_items(saved)
    items += expiring
    skipped = [w for w in plan.warnings if w.code == "nodes-skipped" and w.nodes]
    for w in skipped:
        noun = "node" if len(w.nodes) == 1 else "nodes"
        items.append(f"**{len(w.nodes)} {noun} skipped** (already in the desired state): {node_list(list(w.nodes))}.")
    done = {*untrusted, *shown, *skipped}
    items += [w.message for w in plan.warnings if w not in done]
    if not items:
        return []
    return [ALERT[view.flavor]] + [f"> - {i}" for i in items] + [""]


# --- sections ---------------------------------------------------------------------------------


def verdict(plan: Plan) -> str:
    """One line a reviewer reads first: what the plan does and what it takes away."""
    if not plan.has_changes:
        return "**Verdict: no changes.** Every node already has the desired CAs; applying does nothing."
    nodes = len({e.node for e in plan.edits})
    managed = managed_text(tuple(p for p in plan.managed if any(e.pki == p for e in plan.edits)))
    revoked = len(_untrusted(plan))
    takes = f"revokes {revoked} {'CA' if revoked == 1 else 'CAs'} (see the warning)" if revoked else "revokes nothing"
    return (
        f"**Verdict: changes {managed} on {nodes} of {len(plan.nodes)} nodes; {takes}.** "
        "It passed the lock-out safety check: at every step each node trusts the credential used next."
    )


def provenance(view: View) -> str:
    if view.sha256 is None:
        return "Plan file: not saved (`trustplan plan -o plan.bin` saves it; apply exactly that file)."
    signed = f"signed by Ed25519 key `{view.signer}`" if view.signer else "unsigned"
    name = f"`{view.file}`, " if view.file else ""
    return f"Plan file: {name}SHA-256 `{view.sha256}`, {signed}."


def header(saved: SavedPlan, view: View = View()) -> list[str]:
    plan, bound = saved.plan, saved.bindings
    n_cp = sum(1 for n in plan.nodes if n.role == "controlplane")
    managed = managed_text(plan.managed)
    return [
        f"## trustplan plan for `{plan.cluster}`",
        "",
        verdict(plan),
        "",
        summary_line(plan),
        "",
        provenance(view),
        "",
        f"Cluster `{plan.cluster}` ({bound.provider} provider): {n_cp} control planes, "
        f"{len(plan.nodes) - n_cp} workers; managing {managed}. "
        f"Plan made {iso_time(bound.created)}, expires {iso_time(bound.expires)}.",
        "",
    ]


def _kind_cell(pki: PKI) -> str:
    return PKI_TITLE[pki] if KINDS[pki].holders == "all" else KINDS[pki].name


def _when(a: Authority, t: dt.datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M}Z" if KINDS[a.pki].material == "ca" else "no expiry"


def new_authorities(plan: Plan) -> list[str]:
    if not plan.new_authorities:
        return []
    out = ["### New authorities", "", "Approve these exact certificates by their SHA-256 fingerprint:", ""]
    out += ["| name | PKI | subject | algorithm | valid from | valid until | source |", "|---|---|---|---|---|---|---|"]
    for a in plan.new_authorities:
        out.append(
            f"| {cell(a.label)} | {_kind_cell(a.pki)} | {cell(a.subject)} | {a.algorithm} | "
            f"{_when(a, a.not_before)} | {_when(a, a.not_after)} | {a.source} |"
        )
    out.append("")
    for a in plan.new_authorities:
        out.append(f"- `{a.label}`: `{a.fingerprint}`")
    out.append("")
    return out


def outputs_block(saved: SavedPlan) -> list[str]:
    plan = saved.plan
    if not saved.outputs:
        return []
    names = [p.name for p in plan.phases]
    before_remove = "remove" in names and names.index("outputs") < names.index("remove")
    out = [f"### Outputs (written {'before the remove phase starts' if before_remove else 'after the last gate'})", ""]
    for o in saved.outputs:
        where = f" `{o.path}`" if o.path else ""
        out.append(f"- {o.step.output}{where}: {PKI_TITLE[o.step.pki]}, from {ca_ref(plan, o.step.ca)}")
    out.append("")
    return out


# --- assembly ---------------------------------------------------------------------------------


def _front(saved: SavedPlan, view: View) -> list[str]:
    review = blast_radius(saved) + rollout_block(saved) + rollback_block(saved) + mermaid(saved)
    return header(saved, view) + warnings_block(saved, view) + new_authorities(saved.plan) + review


def chunks(saved: SavedPlan, view: View = View()) -> list[Chunk]:
    """The full rendering as unsplittable chunks, in order."""
    plan = saved.plan
    out = [Chunk(line + "\n") for line in _front(saved, view)]
    if plan.has_edits:
        out += trust_tables(plan, view)
        out += [Chunk("### Phases\n\n")]
        out += phase_chunks(plan, view, model=saved.bindings.offline)
    if plan.has_changes:
        out += [Chunk(line + "\n") for line in outputs_block(saved)]
    return out


def render_summary(saved: SavedPlan, view: View = View()) -> str:
    """The short form: heading, verdict, warnings, new CAs, the grouped tables, one line per phase."""
    plan = saved.plan
    text = "\n".join(_front(saved, view)) + "\n"
    if plan.has_changes:
        if plan.has_edits:
            text += join(trust_tables(plan, view))
            phases = [f"{i}. {phase_title(i, p).split(': ', 1)[1]}" for i, p in numbered(plan)]
            text += "### Phases\n\n" + "\n".join(phases) + "\n\n"
        text += "\n".join(outputs_block(saved)) + "\n"
        text += "Full plan: `trustplan show plan.bin --format markdown`.\n"
    return text


def render(saved: SavedPlan, view: View = View()) -> str:
    """The whole plan as one Markdown text (may be longer than one comment; see render_parts)."""
    return join(chunks(saved, view))


def _part_heading(plan: Plan, view: View, what: str) -> str:
    digest = f" (plan SHA-256 `{view.sha256[:16]}…`)" if view.sha256 else ""
    return f"trustplan {what} for `{plan.cluster}`{digest}, "


def render_parts(saved: SavedPlan, summary: bool = False, limit: int = PART_LIMIT, view: View = View()) -> list[str]:
    """The rendering as one or more parts, each at most `limit` characters (one comment each)."""
    if summary:
        text = render_summary(saved, view)
        if len(text) <= limit:
            return [text]
        lines = [Chunk(line) for line in text.splitlines(keepends=True)]
        return split(lines, limit, _part_heading(saved.plan, view, "plan summary"))
    items = chunks(saved, view)
    text = join(items)
    if len(text) <= limit:
        return [text]
    return split(items, limit, _part_heading(saved.plan, view, "plan"))

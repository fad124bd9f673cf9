"""The imperative shell around the planner: read the cluster and make a checked plan.

    plan_desired(desired, ...) -> Planned   under the state's lock, with the provider opened for it:
    plan_live(desired, provider, ...)       read every node, resolve CAs, plan, check, let the nodes dry-run it

Reaching the nodes (provider, credentials, reading) is trustplan.engine.access; applying a saved
plan is trustplan.engine.applier.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import time
from dataclasses import dataclass, field

from trustplan import __version__
from trustplan.engine.access import make_provider, operator_credential, read_live, reader_label
from trustplan.engine.authorities import Resolved, resolve
from trustplan.engine.backend_guard import check_backend_outside
from trustplan.engine.credentials import OutputCheck, check_outputs, planned_outputs
from trustplan.engine.keyring import KeyRing
from trustplan.engine.leftbehind import left_behind
from trustplan.engine.live import LiveCluster, with_versions
from trustplan.engine.progress import QuietReporter, Reporter
from trustplan.engine.sharedgates import legacy_tokens
from trustplan.engine.workertrust import probe_workers, worker_trust_hint
from trustplan.errors import (
    InputError,
    NodeUnreachableError,
    ProviderError,
    UnsafePlanError,
)
from trustplan.formats import planfile
from trustplan.formats.desired import DesiredState, parse_duration
from trustplan.formats.keystore import Keystore
from trustplan.formats.planfile.savedplan import Bindings, SavedPlan
from trustplan.planner import (
    Credential,
    Plan,
    PlanInput,
    PlanningError,
    UnsafePlan,
    make_plan,
    suggest_accepted,
)
from trustplan.planner import ops as op
from trustplan.planner.model import KINDS, PKI
from trustplan.planner.timestamps import parse_time
from trustplan.providers.base import NodeRef, Provider, TLSIdentity
from trustplan.state import StateDocument
from trustplan.talos import pki
from trustplan.talos.rewrite import rewrite_config


@dataclass
class Planned:
    """A fresh plan: the saved form (what `-o` writes and the renderers show) and what it was made from."""

    saved: SavedPlan
    resolved: Resolved
    live: LiveCluster
    notes: list[str] = field(default_factory=list)
    keystore: Keystore | None = None
    operator: Credential | None = None  # the identity the plan's accept phase is sent with

    @property
    def plan(self) -> Plan:
        return self.saved.plan

    def save_new_keys(self) -> None:
        """Store the keys of CAs generated for this plan, before any node sees them."""
        assert self.keystore is not None
        self.resolved.save_new(self.keystore)


def plan_input(
    desired: DesiredState,
    live: LiveCluster,
    resolved: Resolved,
    operator: Credential | None,
    now: dt.datetime,
    checks: list[OutputCheck] | None = None,
    swaps: tuple[tuple[PKI, dt.datetime], ...] = (),
    tokens: tuple[str, ...] = (),
) -> PlanInput:
    """What a plan is made from: plan and apply's recomputation (engine.planverify) both build it
    here, so a saved plan is checked against exactly what made it. `checks`: the output files
    checked against the live cluster, when the caller already has them."""
    return PlanInput(
        cluster=desired.cluster,
        nodes=live.nodes,
        desired=resolved.desired,
        authorities=resolved.authorities(),
        now=now,
        outputs=planned_outputs(desired, checks if checks is not None else check_outputs(desired, live, now)),
        operator=operator,
        swapped_at=swaps,
        legacy_tokens=tokens,
    )


def swapped_at(state: StateDocument) -> tuple[tuple[PKI, dt.datetime], ...]:
    """When the state says each kind's last swap finished (apply records it; the drain counts from it)."""
    swaps = state.swaps or {}
    return tuple((kind, parse_time(swaps[kind])) for kind in sorted(KINDS) if kind in swaps)


def live_token_drain(live: LiveCluster) -> dt.timedelta | None:
    """The longest token lifetime the API servers allow when one sets it (the longest
    --service-account-max-token-expiration among the control planes' apiServer extraArgs)."""
    found: list[dt.timedelta] = []
    for cfg in live.configs.values():
        args = (((cfg.v1alpha1.get("cluster") or {}).get("apiServer") or {}).get("extraArgs")) or {}
        value = args.get("service-account-max-token-expiration") if isinstance(args, dict) else None
        if isinstance(value, str) and re.fullmatch(r"(?=[0-9])([0-9]+h)?([0-9]+m)?([0-9]+s)?", value):
            found.append(parse_duration(value))
    return max(found) if found else None


async def with_node_versions(provider: Provider, live: LiveCluster, desired: DesiredState) -> LiveCluster:
    """Ask the nodes with a legacy single value which Talos they run (the Version call), when the
    provider can; a config on disk keeps the version its install image names."""
    legacy = [n for n in live.nodes if n.legacy]
    many = provider.capabilities.verify_many
    if not legacy or many is None:
        return live
    results = await many.verify_many([NodeRef(n.address, n.declared_role) for n in legacy], None)
    return with_versions(live, {n.address: r for n, r in zip(legacy, results, strict=True) if isinstance(r, str)})


async def plan_live(
    desired: DesiredState,
    provider: Provider,
    keystore: Keystore,
    state: StateDocument,
    now: dt.datetime,
    expires_in: dt.timedelta,
    reporter: Reporter | None = None,
    allow_unlisted: tuple[str, ...] = (),
    allow_disruptive: tuple[PKI, ...] = (),
) -> Planned:
    """Read the live cluster and make a checked plan. Writes nothing. `allow_disruptive`: kinds whose
    legacy single value may be replaced in place on a Talos before 1.14 (`plan --allow-disruptive`)."""
    reporter = reporter or QuietReporter()
    managed = tuple(desired.trust)
    reporter.start("reading nodes", len(desired.nodes))
    started, first_read = time.monotonic(), list[float]()

    def on_read(address: str) -> None:  # the first node to answer: one node's read, for the PR comment
        if not first_read:
            first_read.append((time.monotonic() - started) * 1000)
        reporter.advance(address)

    live, reader = await read_live(desired, provider, keystore, managed, now, on_read=on_read)
    reporter.done()
    resolved = resolve(desired, keystore, live.cas, now, live_keys=live.keys, live_drain=live_token_drain(live))
    live = await with_node_versions(provider, live, desired)
    live, probed = await probe_workers(desired, provider, live, resolved, keystore, now)
    if "etcd" in managed:  # what each running etcd member trusts (an interrupted rotation resumes)
        from trustplan.engine.etcdprobe import probe_etcd

        live, etcd_notes = await probe_etcd(provider, live, resolved, now)
        probed = [*probed, *etcd_notes]
    checks = check_outputs(desired, live, now)
    operator = (
        operator_credential(desired, provider, live) if reader is None else Credential(reader.issuer, reader.trusted)
    )
    tokens, token_notes = await legacy_tokens(desired, provider, live, resolved.desired, now)
    inp = plan_input(desired, live, resolved, operator, now, checks, swapped_at(state), tokens)
    inp = dataclasses.replace(inp, allow_disruptive=allow_disruptive)
    try:
        plan = make_plan(inp)
    except PlanningError as exc:
        raise _role_error(desired, inp, exc) from None
    except UnsafePlan as exc:
        raise UnsafePlanError(f"refusing to plan: {exc}", hint=_way_forward(desired, inp, str(exc))) from None

    notes = [f"warning: {w}" for w in resolved.warnings] + probed + token_notes
    notes += await unlisted_nodes(desired, provider, plan, reader, allow_unlisted)
    if not any(op.revokes(e) for e in plan.edits):  # a revoking plan refuses unlisted members already
        notes += await left_behind(desired, provider, live, reader)
    if reader is not None:
        notes.append(f"note: read the nodes with a fallback credential ({reader_label(desired, reader)})")
    notes += [
        f"warning: {c.output} {c.path} does not work: {c.problem}"
        for c in checks
        if not c.works and (not plan.has_edits or c.path.exists())
    ]
    if plan.has_edits:
        if provider.capabilities.dry_run:
            notes += await _dry_run(plan, live, resolved, provider, reader)
        modes = provider.capabilities.file_modes
        if modes is not None:  # say when apply tightens a key-bearing file's mode
            changed = {e.node for e in plan.edits}
            cps = [n.address for n in plan.nodes if n.role == "controlplane" and n.address in changed]
            notes += modes.tightened_modes(cps)
    bindings = Bindings(
        tool_version=__version__,
        created=now,
        expires=now + expires_in,
        provider=desired.provider,
        desired_digest=desired.digest,
        lineage=state.lineage,
        serial=state.serial,
    )
    paths = desired.saved_output_paths()
    rollout = dataclasses.replace(desired.rollout.saved(), read_ms=round(first_read[0], 1) if first_read else None)
    saved = planfile.new(plan, bindings, paths, rollout)
    return Planned(saved, resolved, live, notes, keystore, operator)


async def plan_desired(
    desired: DesiredState,
    now: dt.datetime,
    expires_in: dt.timedelta,
    reporter: Reporter | None = None,
    lock_timeout: float = 0.0,
    allow_unlisted: tuple[str, ...] = (),
    allow_disruptive: tuple[PKI, ...] = (),
) -> Planned:
    """`trustplan plan` without the printing: read the state under its lock, make the plan with a
    provider opened (and closed) for it. New CA keys are not saved yet: `Planned.save_new_keys()`."""
    store = desired.state_backend()
    provider = make_provider(desired)
    try:
        with store.lock(lock_timeout, "plan"):
            state = store.read(desired.cluster)
        planned = await plan_live(
            desired, provider, desired.open_keystore(), state, now, expires_in, reporter, allow_unlisted,
            allow_disruptive,
        )
        check_backend_outside(desired, planned.plan)
        return planned
    finally:
        await provider.close()


async def unlisted_nodes(
    desired: DesiredState, provider: Provider, plan: Plan, reader: TLSIdentity | None, allow: tuple[str, ...]
) -> list[str]:
    """Refuse a plan that would leave a cluster member out (notes for what is fine).

    A member that is not in cluster.nodes keeps its CAs: once the control planes issue from a new
    CA it refuses their proxy certificate and the new talosconfig, and its kubelet the new API
    server certificate. With the talos provider, the cluster's Members (the discovery service's
    view) are compared with cluster.nodes; with files, the notes say which nodes the plan covers.
    """
    revoking = [e for e in plan.edits if op.revokes(e)]
    if not revoking:
        return []
    listed = {n.address for n in desired.nodes}
    lister = provider.capabilities.members
    if lister is None:  # no member list to compare with: say which nodes the plan covers
        where = "cluster.machineConfigs" if desired.machine_configs else "cluster.nodes"
        return [
            f"note: this rotation covers the {len(listed)} nodes of {where} "
            f"({', '.join(n.address for n in plan.nodes)}); any other node of the cluster keeps its CAs "
            "and loses trust in the new ones"
        ]
    try:
        members = await lister.members(reader)
    except ProviderError as exc:
        return [f"warning: could not list the cluster members to look for nodes left out of cluster.nodes: {exc}"]
    unlisted = [(a, role, host) for a, role, host in members if a not in listed]
    notes = [f"note: {a} ({host}) is not in cluster.nodes; allowed by --allow-unlisted" for a, _, host in unlisted
             if a in allow]
    refused = [(a, role, host) for a, role, host in unlisted if a not in allow]
    if refused:
        names = ", ".join(f"{a} ({role} {host})" for a, role, host in refused)
        pkis = " and ".join(sorted({e.pki for e in revoking}))
        raise UnsafePlanError(
            f"refusing to plan: cluster members not in cluster.nodes would lose trust: {names}. This plan changes "
            f"the {pkis} CAs of the listed nodes only; an unlisted node keeps its CAs, and would refuse the "
            "control planes' proxy certificate, the new talosconfig and the new API server certificate",
            hint="add them under cluster.nodes, or pass --allow-unlisted ADDRESS for each node that is really gone; "
            "nothing was saved or sent to any node",
        )
    return notes


def _way_forward(desired: DesiredState, inp: PlanInput, refusal: str) -> str:
    """The hint of a refused plan: the desired-state change that makes a safe plan, if one CA does;
    else the manual step, when a worker's client trust is what stands in the way."""
    found = suggest_accepted(inp)
    if found is None:
        manual = worker_trust_hint(inp, refusal, {r.address: r.port for r in desired.nodes})
        return "nothing was saved or sent to any node" + (f". {manual}" if manual else "")
    pki_name, ca = found
    spec = desired.trust[pki_name]
    accepted = ", ".join([*spec.accepted, ca])
    return (
        f"nothing was saved or sent to any node. A safe plan exists if {desired.path} keeps {pki.short(ca)} "
        f"trusted for this rotation: trust.{pki_name}.accepted: [{accepted}]; once it is applied, drop it "
        "again and plan once more to remove it"
    )


def _role_error(desired: DesiredState, inp: PlanInput, exc: PlanningError) -> InputError:
    """Point a role contradiction at the first offending entry of cluster.nodes (path and line)."""
    wrong = next((n.address for n in inp.nodes if n.declared_role not in (None, n.role)), "")
    path = desired.node_paths.get(wrong, "cluster.nodes")
    return InputError(str(desired.path), str(exc), path=path, line=desired.lines.get(path))


def _final_edits(plan: Plan) -> dict[str, tuple[op.Edit, ...]]:
    out: dict[str, list[op.Edit]] = {}
    for e in plan.edits:
        out.setdefault(e.node, []).append(e)
    return {k: tuple(v) for k, v in out.items()}


async def _dry_run(
    plan: Plan, live: LiveCluster, resolved: Resolved, provider: Provider, credential: TLSIdentity | None
) -> list[str]:
    """Let every node validate its final config (Talos: ApplyConfiguration dry_run) before saving."""
    keys = KeyRing(resolved.material, None, resolved.keys)
    notes: list[str] = []
    refs = {n.address: n for n in node_refs(plan)}

    async def one(address: str, edits: tuple[op.Edit, ...]) -> None:
        data = rewrite_config(live.configs[address], edits, keys.cert_pem, keys.key_pem, keys.material_for).data
        try:
            message = await provider.write(refs[address], data, credential=credential, dry_run=True)
        except NodeUnreachableError:
            raise
        except ProviderError as exc:
            raise UnsafePlanError(
                f"refusing to plan: node {address} rejects the config this plan would give it (dry run): {exc}",
                hint="nothing was saved or changed",
            ) from None
        if message and "warning" in message.lower():
            notes.append(f"warning: {address}: {message}")

    final = _final_edits(plan)
    await asyncio.gather(*(one(a, e) for a, e in final.items()))
    return [f"dry run: {len(final)} nodes validated the configs this plan gives them", *notes]


def node_refs(plan: Plan) -> list[NodeRef]:
    return [NodeRef(n.address, n.declared_role) for n in plan.nodes]

"""Apply a saved plan exactly: refuse it if anything it was made from changed, then run it phase by
phase (edits, then gates), write the outputs, and record the result in the state.

    apply(ApplyRequest(desired, saved, ...), provider, keystore, store) -> Applied
    apply_desired(request) -> Applied     with the desired state's provider, keystore and state file

The phases themselves run in trustplan.engine.runner (PhaseRunner); a failed run is undone by
trustplan.engine.rollback, another run of the same runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

from trustplan.engine.access import make_provider, read_live
from trustplan.engine.authorities import Material, Resolved, resolve
from trustplan.engine.backend_guard import check_backend_outside
from trustplan.engine.interrupt import Stop
from trustplan.engine.keyring import KeyRing
from trustplan.engine.live import LiveCluster
from trustplan.engine.moved import moved_hint
from trustplan.engine.phasesteps import unconfirmed_note
from trustplan.engine.planning import live_token_drain, swapped_at, with_node_versions
from trustplan.engine.planverify import operator_of, verified_plan
from trustplan.engine.progress import QuietReporter, Reporter
from trustplan.engine.rollback import Rollback, possible, read_back, roll_back
from trustplan.engine.runner import PhaseRunner
from trustplan.engine.sharedgates import legacy_tokens
from trustplan.engine.workertrust import probe_workers
from trustplan.errors import (
    ApplyInterrupted,
    PlanFileError,
    ProviderError,
    StateError,
    TrustplanError,
)
from trustplan.formats.desired import DesiredState
from trustplan.formats.keystore import Keystore
from trustplan.formats.planfile.savedplan import SavedPlan
from trustplan.planner import (
    Plan,
)
from trustplan.planner import ops as op
from trustplan.planner.drain import format_duration
from trustplan.planner.model import KINDS, PKI
from trustplan.planner.timestamps import iso_time, parse_time
from trustplan.providers.base import Provider, TLSIdentity
from trustplan.state import AuthorityRecord, NodeRecord, StateBackend, StateDocument, TrustRecord
from trustplan.state.journal import HistoryEntry, Step
from trustplan.talos import pki
from trustplan.talos.machineconfig import MachineConfig
from trustplan.talos.rewrite import trust_of


@dataclass(frozen=True)
class ApplyRequest:
    """What to apply: the saved plan, the digest of its file (the state's lock and journal name the
    plan by it) and where it came from (errors name it), the desired state it must match, the
    clock's now; and how: how long to wait for the state's lock, and whether a failed run is
    rolled back."""

    desired: DesiredState
    saved: SavedPlan
    plan_digest: str
    source: str
    now: dt.datetime
    lock_timeout: float = 0.0
    rollback: bool = True


@dataclass(frozen=True)
class Applied:
    """The summary of a finished apply: the state it recorded, the outputs written, how many node
    writes and gates went through, and the journal (`steps`) as recorded in the state."""

    state: StateDocument
    written: tuple[str, ...]
    writes: int
    gates: int
    steps: tuple[Step, ...]

    @classmethod
    def of(cls, state: StateDocument, steps: list[Step]) -> Applied:
        return cls(
            state,
            tuple(s.detail or "" for s in steps if s.kind == "output"),
            sum(1 for s in steps if s.ok("write")),
            sum(1 for s in steps if s.ok("gate")),
            tuple(steps),
        )


def check_bindings(
    saved: SavedPlan, desired: DesiredState, state: StateDocument, now: dt.datetime, source: str
) -> None:
    bound = saved.bindings
    if now >= bound.expires:
        raise PlanFileError(
            f"{source}: plan expired at {iso_time(bound.expires)}",
            hint="make a fresh plan with `trustplan plan -o ...` and review it again",
        )
    if saved.plan.cluster != desired.cluster:
        raise PlanFileError(
            f"{source}: this plan is for cluster {saved.plan.cluster!r}, but {desired.path} is cluster "
            f"{desired.cluster!r}",
            hint="apply it with the desired state it was made from",
        )
    if bound.desired_digest != desired.digest:
        raise PlanFileError(
            f"{source}: {desired.path} changed since this plan was made",
            hint="make a new plan from the current desired state and review it",
        )
    if (bound.lineage, bound.serial) != (state.lineage, state.serial):
        if bound.lineage not in (None, state.lineage):
            raise PlanFileError(
                f"{source}: this plan was made for another state lineage "
                f"({bound.lineage}, the state is {state.lineage})",
                hint="it belongs to another cluster or state file",
            )
        raise PlanFileError(
            f"{source}: the plan is stale: the state changed since it was made "
            f"(serial {bound.serial} then, {state.serial} now)",
            hint="make a new plan with `trustplan plan -o ...` and review it again",
        )


def check_live(plan: Plan, live: LiveCluster, source: str) -> None:
    planned = {n.address: n.config_digest for n in plan.nodes}
    now = live.digests()
    changed = sorted(a for a in planned if now.get(a) != planned[a])
    added = sorted(set(now) - set(planned))
    if changed or added:
        what = []
        if changed:
            what.append("live config changed on " + ", ".join(changed))
        if added:
            what.append("nodes not in the plan: " + ", ".join(added))
        raise PlanFileError(
            f"{source}: the plan is stale: " + "; ".join(what),
            hint="make a new plan with `trustplan plan -o ...`; nothing was changed",
        )


def _state_trust(cfg: MachineConfig, pki_name: PKI) -> TrustRecord:
    trust, _ = trust_of(cfg.ca_fields(pki_name), cfg.source)
    return TrustRecord(trust.issuer, tuple(trust.accepted))


def next_state(
    state: StateDocument, plan: Plan, configs: dict[str, MachineConfig], entry: HistoryEntry
) -> StateDocument:
    serial = state.serial + 1
    authorities = dict(state.authorities)
    for a in plan.authorities:
        authorities[a.fingerprint] = AuthorityRecord(
            a.name, a.pki, a.subject, a.algorithm, iso_time(a.not_before), iso_time(a.not_after), a.cert_pem
        )
    nodes = {
        address: NodeRecord(cfg.role, cfg.digest, _state_trust(cfg, "talos"), _state_trust(cfg, "kubernetes"))
        for address, cfg in configs.items()
    }
    entry = dataclasses.replace(entry, serial=serial)
    swaps = dict(state.swaps or {})
    for step in entry.steps:  # a swap gate that passed: every node of the kind issues from the new one
        if step.ok("gate") and step.phase == "swap" and step.pki is not None:
            swaps[step.pki] = entry.finished
    for held in plan.deferred:  # a drain whose start nobody recorded counts from this apply
        swaps.setdefault(held.pki, entry.finished)
    return dataclasses.replace(
        state,
        lineage=state.lineage or str(uuid.uuid4()),
        serial=serial,
        authorities=authorities,
        nodes=nodes,
        history=(*state.history, entry),
        swaps=swaps or state.swaps,
    )


def drain_notes(plan: Plan, state: StateDocument) -> list[str]:
    """What apply says about removes held back for a token drain: when `plan` offers them."""
    swaps = state.swaps or {}
    notes = []
    for held in plan.deferred:
        since = parse_time(swaps[held.pki]) if held.pki in swaps else None
        until = held.until or (since + held.drain if since else None)
        labels = ", ".join(plan.label(c) for c in held.cas)
        when = f"from {until:%Y-%m-%d %H:%M} UTC" if until else "once the drain has passed"
        notes.append(
            f"stopped after the outputs: the remove of {labels} ({KINDS[held.pki].name}) waits for the token "
            f"drain of {format_duration(held.drain)}; `trustplan plan` offers it {when}"
        )
    return notes


async def apply(
    request: ApplyRequest,
    provider: Provider,
    keystore: Keystore,
    store: StateBackend,
    reporter: Reporter | None = None,
) -> Applied:
    """Apply a saved plan exactly; refuse it if anything it was made from changed.

    When a step fails before the new credentials are written, the nodes changed by this run are
    returned to their CAs of before (trustplan.engine.rollback), unless `request.rollback` is False."""
    desired, saved, plan_digest, source, now = (
        request.desired, request.saved, request.plan_digest, request.source, request.now
    )
    reporter = reporter or QuietReporter()
    with store.lock(request.lock_timeout, "apply", plan_digest):
        state = store.read(desired.cluster)
        check_bindings(saved, desired, state, now, source)
        check_backend_outside(desired, saved.plan)
        live, reader = await read_live(desired, provider, keystore, saved.plan.managed, now)
        check_live(saved.plan, live, source)
        resolved = resolve(
            desired, keystore, live.cas, now, generate=False, live_keys=live.keys, live_drain=live_token_drain(live)
        )
        live = await with_node_versions(provider, live, desired)
        live, _ = await probe_workers(desired, provider, live, resolved, keystore, now)
        if "etcd" in saved.plan.managed:  # what each running etcd member trusts, as plan asked it
            from trustplan.engine.etcdprobe import probe_etcd

            live, _ = await probe_etcd(provider, live, resolved, now)
        # the steps as the desired state asks for them, not as the file says (planverify)
        operator = operator_of(desired, provider, live, reader)
        tokens, _ = await legacy_tokens(desired, provider, live, resolved.desired, now)  # as the plan listed them
        plan = verified_plan(saved, source, desired, live, resolved, operator, now, swapped_at(state), tokens)
        material = dict(resolved.material)
        for a in plan.authorities:
            if KINDS[a.pki].holders == "controlplane":
                continue
            if a.fingerprint not in material:
                material[a.fingerprint] = Material(pki.CACert.from_pem(a.cert_pem.encode()), a.pki, a.source, a.name)
        keys = KeyRing(material, keystore, dict(resolved.keys))
        for kind, fp in _needed_keys(plan):  # fail before any node changes if a key is missing
            if KINDS[kind].holders == "controlplane":
                keys.material_for(kind, fp)
            else:
                keys.key(fp)
        stop = Stop()
        members = await _members_outside(provider, plan, reader)
        applier = PhaseRunner(desired, provider, keys, live, plan, now, reporter, reader, stop,
                              operator_identity=operator,
                              rollout=desired.rollout.following(saved.rollout),  # as the plan says
                              members_at_start=members)
        started = iso_time(now)
        error: BaseException | None = None
        with stop.on_signals(reporter.note):
            try:
                await applier.run()
            except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
                error = exc  # recorded below, so the state says what was done before the stop
            back: Rollback | None = None
            if isinstance(error, ApplyInterrupted):
                await read_back(applier)  # a write whose answer was lost: did it land?
            if isinstance(error, Exception) and not isinstance(error, ApplyInterrupted):
                back = await _roll_back(applier, live, resolved, request.rollback, frozenset(state.authorities))
        entry = HistoryEntry(
            serial=0,  # next_state sets the serial it writes
            plan_digest=plan_digest,
            started=started,
            finished=iso_time(dt.datetime.now(dt.UTC)),
            status="failed" if error else "applied",
            steps=tuple(applier.steps + (back.steps if back is not None else [])),
            error=None if error is None else _error_text(error),
        )
        new_state = next_state(state, plan, applier.configs, entry)
        try:
            store.write(new_state)
        except TrustplanError as exc:  # a full disk, a lost lock: say what this apply did, as the state would
            raise StateError(f"{exc}\n{_what_happened(applier, back, error)}", hint=exc.hint) from None
        if error is None:
            for note in drain_notes(plan, new_state):
                reporter.note(note)
        if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
            raise error
        if error is not None:
            summary = (f"{applier.summary()}{unconfirmed_note(applier)}; state serial {new_state.serial} in "
                       f"{desired.state} records it")
            hint = (
                "nothing is lost: run `trustplan plan -o plan.bin` and `trustplan apply plan.bin` "
                "(from the live configs, it finishes the job)"
            )
            if isinstance(error, ApplyInterrupted):
                raise ApplyInterrupted(
                    f"apply stopped: {error}. {summary}",
                    signal_name=error.signal_name,
                    exit_code=error.exit_code,
                    hint=hint,
                ) from None
            if back is not None and back.done:
                summary = f"{back.text()}\nState serial {new_state.serial} in {desired.state} records it"
                hint = "the cluster is as it was before this apply: fix the cause, then make a new plan"
            elif back is not None:
                summary += f"\n{back.text()}"
                if back.moved:
                    hint = moved_hint(str(desired.state))
            raise ProviderError(f"apply stopped: {_error_text(error)}. {summary}", hint=hint) from None
        return Applied.of(new_state, applier.steps)


async def _roll_back(applier: PhaseRunner, live: LiveCluster, resolved: Resolved, enabled: bool,
                     known: frozenset[str]) -> Rollback:
    if not enabled:
        why = possible(applier)
        if why is None:
            why = "no rollback (--no-rollback): the nodes are left as they are for the operator"
        return Rollback(False, why)
    why = possible(applier)
    if why is not None:  # nothing to roll back, or too late for it: say only that
        return Rollback(False, why)
    applier.reporter.note("apply failed before the new credentials were written: rolling back")
    try:
        return await roll_back(applier, live, resolved.authorities(), known)
    except Exception as exc:  # noqa: BLE001 - the first failure is what the operator must see
        return Rollback(False, f"rollback failed: {_error_text(exc)}")


def _what_happened(applier: PhaseRunner, back: Rollback | None, error: BaseException | None) -> str:
    """What the state would have recorded, for a message when it cannot be: the apply's outcome, the
    nodes changed, the outputs written, and whether a rollback ran."""
    outcome = f"this apply failed ({_error_text(error)})" if error is not None else "this apply completed"
    done = applier.summary().removeprefix("done before the stop: ")
    if back is None:
        rolled = "no rollback ran"
    else:
        rolled = back.text().replace("\n", "\n  ")
    return f"{outcome}: {done}; {rolled}"


async def _members_outside(provider: Provider, plan: Plan, reader: TLSIdentity | None) -> set[str] | None:
    """The cluster's members outside the plan as the apply begins (the runner stops the apply when
    others appear before a swap or remove); None when the provider cannot list members."""
    lister = provider.capabilities.members
    if lister is None or not any(op.revokes(e) for e in plan.edits):
        return None
    try:
        members = await lister.members(reader)
    except TrustplanError:
        return None  # as plan does: a cluster without discovery has no member list to compare
    planned = {n.address for n in plan.nodes}
    return {a for a, _, _ in members if a not in planned}


def _error_text(error: BaseException) -> str:
    if isinstance(error, TrustplanError):
        return str(error)
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted"
    return f"unexpected {type(error).__name__}: {error}"  # e.g. an output file that cannot be written


async def apply_desired(request: ApplyRequest, reporter: Reporter | None = None) -> Applied:
    """`trustplan apply` without the printing: apply() with the desired state's provider, keystore
    and state file, the provider opened (and closed) for it."""
    desired = request.desired
    provider = make_provider(desired)
    try:
        return await apply(request, provider, desired.open_keystore(), desired.state_backend(), reporter)
    finally:
        await provider.close()


def _needed_keys(plan: Plan) -> list[tuple[PKI, str]]:
    need: list[tuple[PKI, str]] = []
    for phase in plan.phases:
        for e in phase.edits:
            if (key := op.key_needed(e)) is not None:
                need.append((e.pki, key))
        for g in phase.gates:
            if KINDS[g.pki].holders == "all":  # the shared kinds' gates read configs: no key needed
                need.append((g.pki, g.credential.issuer))
        for o in phase.outputs:
            need.append((o.pki, o.ca))
    return list(dict.fromkeys(need))

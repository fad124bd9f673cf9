"""What a phase does around its writes (issue 20): the writes in Talos's try mode and their
confirmation after the gates (the dead-man switch), the re-read of each node before its write (no
lost update: foreign edits outside the CA fields kept, CA edits stop the apply), and the member list
read again before a phase that revokes (no node left behind). Functions of a PhaseRunner.

    await send(runner, phase, address, data, cred)     a write, in try mode when the provider can
    await confirm(runner, phase)                        the phase's try writes made permanent
    await fresh(runner, phase, address, cred)           the node read again just before its write
    await check_members(runner, phase)                  members that joined since the apply began
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from trustplan.engine.interrupt import Stop
from trustplan.errors import ProviderError, TrustplanError
from trustplan.planner import ops as op
from trustplan.providers.base import TLSIdentity
from trustplan.talos.machineconfig import MachineConfig

if TYPE_CHECKING:
    from trustplan.engine.runner import PhaseRunner


async def bounded(
    items: list[str], limit: int, fn: Callable[[str], Awaitable[None]], stop: Stop | None = None
) -> None:
    """Run `fn` over `items`, at most `limit` at once; after a failure or a stop request start no
    more, let the running ones finish (so the journal is complete), then raise."""
    sem = asyncio.Semaphore(max(1, limit))
    errors: list[BaseException] = []

    async def one(item: str) -> None:
        async with sem:
            if errors or (stop is not None and stop.requested):
                return
            try:
                await fn(item)
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)

    await asyncio.gather(*(one(i) for i in items))
    if errors:
        raise errors[0]
    if stop is not None:
        stop.check()

#: seconds a try-mode write lasts beyond its phase's gate timeouts (writes, confirmation, slack)
TRY_MARGIN = 120.0


class JoinedNodeError(ProviderError):
    """A member outside the plan appeared in the cluster during the apply."""


class ForeignChangeError(ProviderError):
    """A node's CA fields changed under a running apply (someone else's edit)."""


def _ca_change(known: MachineConfig, live: MachineConfig, pki_name: str) -> str:
    before, now = known.ca_fields(pki_name), live.ca_fields(pki_name)  # type: ignore[arg-type]
    what = []
    if before.issuer != now.issuer:
        what.append("its issuing CA was replaced")
    if before.issuer_key != now.issuer_key:
        what.append("its CA key changed")
    if before.accepted != now.accepted:
        what.append(f"accepted CAs {len(before.accepted)} -> {len(now.accepted)}")
    return ", ".join(what) or "changed"


def _diff_size(known: MachineConfig, live: MachineConfig) -> str:
    import difflib

    lines = difflib.unified_diff(known.data.decode(errors="replace").splitlines(),
                                 live.data.decode(errors="replace").splitlines(), lineterm="", n=0)
    changed = [ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return f"{len(changed)} changed lines outside the CA fields"



async def check_members(runner: PhaseRunner, phase: op.Phase) -> None:
    """No node left behind: before a phase that revokes (swap, remove), list the cluster's members
    again; one outside the plan (it joined after the plan was read) would keep the old CAs and be
    cut off, so the apply stops (rolled back where allowed). `members_at_start`: the ones the
    apply began with (allowed by the plan: `--allow-unlisted`)."""
    lister = runner.provider.capabilities.members
    if lister is None or runner.members_at_start is None or not any(op.revokes(e) for e in phase.edits):
        return
    try:
        members = await lister.members(runner.operator)
    except TrustplanError as exc:  # not an appearance: said, recorded, and the apply goes on
        message = f"before the {phase.name} phase: could not list the cluster's members again: {exc}"
        runner.reporter.note(f"warning: {message}")
        runner.record(phase.name, "members", "failed", message=message)
        return
    planned = {n.address for n in runner.plan.nodes} | runner.members_at_start
    joined = [(a, role, host) for a, role, host in members if a not in planned]
    if joined:
        names = ", ".join(f"{a} ({role} {host})" for a, role, host in joined)
        message = (f"before the {phase.name} phase: nodes joined the cluster after the plan was made: {names}; "
                   f"they are not in the plan, keep the old CAs and would be cut off by the {phase.name}")
        runner.record(phase.name, "members", "failed", message=message)
        raise JoinedNodeError(message, hint="add them under cluster.nodes, then make a new plan")
    runner.record(phase.name, "members", "ok", detail=f"{len(members)} members, none outside the plan")

def try_timeout(runner: PhaseRunner, phase: op.Phase) -> float:
    """Seconds a phase's try-mode writes last before the nodes revert on their own: the rollout's
    `try.timeout`, else TRY_MARGIN plus every gate's timeout (twice with a canary)."""
    if runner.rollout.try_timeout is not None:
        return runner.rollout.try_timeout
    gates = sum(runner.rollout.timeout(g.pki) for g in phase.gates) * (2 if runner.rollout.canary else 1)
    kubelet = runner.rollout.timeout("kubernetes") if any(e.pki == "kubernetes" for e in phase.edits) else 0
    return TRY_MARGIN + gates + kubelet

async def confirm(runner: PhaseRunner, phase: op.Phase) -> None:
    """After the phase's gates passed: make each try-mode write of the phase permanent by applying
    the same config again in NO_REBOOT mode (Talos cancels the revert). Sent with the talos gate's
    credential (proven to reach every node after the phase), else the phase's."""
    nodes = [a for a, p in runner.unconfirmed.items() if p == phase.name]
    if not nodes:
        return
    gate = next((g for g in phase.gates if g.pki == "talos"), None)
    cred = runner.mint("talos", gate.credential) if gate is not None and runner.provider.capabilities.needs_credential \
        else runner.phase_credential(phase)
    runner.reporter.start(f"{phase.name}: confirming {len(nodes)} nodes", len(nodes))

    async def one(address: str) -> None:
        runner.reporter.begin(address)
        try:
            await runner.provider.write(runner.refs[address], runner.configs[address].data, credential=cred)
        except TrustplanError as exc:
            runner.record(phase.name, "confirm", "failed", node=address, message=str(exc))
            runner.reporter.fail(address)
            raise
        del runner.unconfirmed[address]
        runner.record(phase.name, "confirm", "ok", node=address)
        runner.reporter.advance(address)

    await bounded(nodes, runner.rollout.worker_parallelism, one, runner.stop)
    runner.reporter.done()

async def send(runner: PhaseRunner, phase: op.Phase, address: str, data: bytes, cred: TLSIdentity | None) -> None:
    """One node's write of a phase: in try mode when the provider can (then it awaits confirm())."""
    trial = runner.provider.capabilities.trial
    if trial is not None and runner.trial:
        runner.unconfirmed[address] = phase.name  # before the call: a lost answer may still have landed
        await trial.write_trial(runner.refs[address], data, credential=cred, timeout=try_timeout(runner, phase))
    else:
        await runner.provider.write(runner.refs[address], data, credential=cred)

async def fresh(runner: PhaseRunner, phase: op.Phase, address: str, cred: TLSIdentity | None) -> None:
    """No lost update: read the node again just before writing it. A change outside the CA fields
    (another admin's certSAN, say) is kept, the CA edit made on top of it, and recorded; a change
    to a CA field stops the apply naming the node and the field."""
    if not runner.reread:
        return
    known = runner.configs[address]
    got = await runner.provider.read(runner.refs[address], cred)
    if got.digest == known.digest:
        return
    live = MachineConfig(got.data, f"node {address} (live machine config)")
    for pki_name in runner.plan.managed:
        if live.ca_fields(pki_name) != known.ca_fields(pki_name):
            message = (
                f"node {address} changed under this apply: its {pki_name} CA fields are no longer what the "
                f"plan was made from ({_ca_change(known, live, pki_name)}); someone else is changing its CAs"
            )
            runner.record(phase.name, "foreign", "stopped", node=address, message=message)
            raise ForeignChangeError(message, hint="find out who changed it, then make a new plan")
    detail = f"config changed by someone else since the plan was read ({_diff_size(known, live)}); kept, " \
             "the CA edit applied on top of it"
    runner.reporter.note(f"{phase.name}: {address}: {detail}")
    runner.record(phase.name, "foreign", "kept", node=address, detail=detail)
    runner.configs[address] = live


def outputs_seen(runner: PhaseRunner) -> dict[str, bytes | None]:
    """The output files as the apply found them (read again before each is written)."""
    seen: dict[str, bytes | None] = {}
    for path in runner.desired.output_paths().values():
        if path is not None:
            seen[str(path)] = _read(path)
    return seen


def _read(path: object) -> bytes | None:
    from pathlib import Path

    try:
        return Path(str(path)).read_bytes()
    except OSError:
        return None


def _certs(data: bytes | None) -> object:
    import yaml

    from trustplan.system.safeyaml import FastLoader

    try:
        doc = yaml.load(data or b"", Loader=FastLoader)  # noqa: S506 - the safe loader
    except yaml.YAMLError:
        return None
    return doc.get("certs") if isinstance(doc, dict) else None


def check_output(runner: PhaseRunner, kind: str, path: object) -> None:
    """No lost update for the files apply writes: one changed by someone else since the apply began
    is said and recorded; the talosconfig and kubeconfig it replaces stay as `<name>.backup`, and
    secrets.yaml keeps everything but the CA entries apply sets. A foreign change to the CA entries
    of secrets.yaml stops the apply, as a foreign change to a node's CA fields does."""
    key = str(path)
    before, now = runner.outputs_seen.get(key), _read(path)
    if key not in runner.outputs_seen or now == before:
        return
    if kind == "secrets" and _certs(now) != _certs(before):
        message = f"{path} changed under this apply: its CA entries (certs) are no longer what apply read"
        runner.record("outputs", "foreign", "stopped", detail=f"{kind} {path}", message=message)
        raise ForeignChangeError(message, hint="find out who changed it, then make a new plan")
    how = "its other entries kept" if kind == "secrets" else f"the file replaced is kept as {path}.backup"
    detail = f"{kind} {path} changed by someone else since apply began; {how}"
    runner.reporter.note(f"outputs: {detail}")
    runner.record("outputs", "foreign", "kept", detail=detail)


def unconfirmed_note(runner: PhaseRunner) -> str:
    """For the message of a stopped apply: the try-mode writes no confirmation followed, which the
    nodes revert on their own (the rollback's own writes cancel that for the nodes it reaches)."""
    nodes = sorted(runner.unconfirmed)
    if not nodes:
        return ""
    phases = sorted(set(runner.unconfirmed.values()))
    return (f"; {len(nodes)} {'write' if len(nodes) == 1 else 'writes'} of the {', '.join(phases)} phase were not "
            f"confirmed ({', '.join(nodes)}): unless a rollback rewrote them, those nodes return to their config of "
            "before on their own once the try timeout passes")

"""Before a rollback: read every node again, so the way back is made on top of what the nodes run now
(another admin's edits kept), and refuse it when the cluster's CAs changed under this apply.

Two working copies with separate states can apply at once; the one that fails must not "roll back"
over the other's rotation. A node that issues from or trusts a CA that neither this plan nor the
state knows, or that no longer accepts this apply's credentials, means someone else rotated: the
rollback is not attempted, and the message says so and what to use instead (issue 20, finding 4).

    reread_before_rollback(applier, known) -> str | None     None: go on; else why not
"""

from __future__ import annotations

from trustplan.engine.runner import PhaseRunner
from trustplan.errors import TrustplanError
from trustplan.talos import pki
from trustplan.talos.machineconfig import MachineConfig

MOVED = "no rollback: the cluster's CAs changed under this apply"


def _refused(text: str) -> bool:
    """A read refused for trust (either side's certificate), not for a network problem."""
    return any(w in text for w in ("TLS trust failure", "unknown authority", "handshake failed", "bad certificate",
                                   "certificate required"))


def _fingerprints(cfg: MachineConfig, pki_name: str) -> list[str]:
    issuing, accepted = cfg.ca_fields(pki_name).cas(cfg.source)  # type: ignore[arg-type]
    return [c.fingerprint for c in (issuing, *accepted) if c is not None]


async def reread_before_rollback(applier: PhaseRunner, known: set[str]) -> str | None:
    """Read each node of the plan with the credential of the last phase this run started; keep what
    it runs now in `applier.configs` (so the reverse edits land on top of it). Returns why a rollback
    must not run: a CA on a node outside `known` (this plan's and the state's CAs, and what the nodes
    had when the apply started), or a node that refuses this apply's credential as an unknown authority."""
    started = {s.phase for s in applier.steps}
    phases = [p for p in applier.plan.phases if p.name in started and p.edits] or list(applier.plan.phases[:1])
    cred = applier.phase_credential(phases[-1]) if phases else applier.operator
    for address in list(applier.configs):
        try:
            got = await applier.provider.read(applier.refs[address], cred)
        except TrustplanError as exc:
            if _refused(str(exc)):
                return (f"{MOVED}: node {address} no longer accepts this apply's credentials ({exc}); another "
                        "apply (a working copy with its own state?) probably rotated it")
            continue  # unreachable: the rollback's own reads and writes will say so
        if got.digest == applier.configs[address].digest:
            continue
        live = MachineConfig(got.data, f"node {address} (live machine config)")
        for pki_name in applier.plan.managed:
            strange = [fp for fp in _fingerprints(live, pki_name) if fp not in known]
            if strange:
                return (f"{MOVED}: node {address} has the {pki_name} CA {pki.short(strange[0])}, which neither this "
                        "plan nor the state knows; another apply (a working copy with its own state?) probably ran")
        applier.configs[address] = live
    return None


def moved_hint(state: str) -> str:
    return (f"do not plan from {state}: use the state and the talosconfig of the run that changed the CAs (the other "
            "working copy), and plan and apply from there; its plan finishes the job")

"""What the encryption-at-rest key's swap needs besides its config gate: every Secret rewritten
through the Kubernetes API, so each is stored under the new first key before the old one is removed
(Kubernetes' documented rotation: add the key second, move it first, rewrite all Secrets, remove)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from trustplan.planner import Credential
from trustplan.planner import ops as op

if TYPE_CHECKING:
    from trustplan.engine.runner import PhaseRunner


def kube_credential(runner: PhaseRunner, phase: op.PhaseName) -> Credential:
    """The Kubernetes admin credential that works after `phase`: the phase's own Kubernetes gate's,
    else the control planes' Kubernetes issuer (trustplan holds its key: it is in their configs)."""
    for p in runner.plan.phases:
        for g in p.gates if p.name == phase else ():
            if g.pki == "kubernetes":
                return g.credential
    cp = next(n for n in runner.plan.nodes if n.role == "controlplane")
    issuer = cp.kubernetes.issuer
    assert issuer is not None
    return Credential(issuer, (issuer,))


async def rewrite_secrets(runner: PhaseRunner, gate: op.Gate) -> None:
    """After the encryption key's swap (and its gates): rewrite every Secret through one API server."""
    from trustplan.providers.kubernetes import rewrite_secrets as rewrite

    cred = runner.mint("kubernetes", kube_credential(runner, gate.after))
    cps = [n.address for n in runner.plan.nodes if n.role == "controlplane"]
    server = runner.desired.kube_servers(cps)[0]
    runner.reporter.note(f"{gate.after}: rewriting every Secret through {server} (stored under the new key)")
    count = await asyncio.to_thread(rewrite, server, cred)
    runner.record(gate.after, "rewrite", "ok", pki=gate.pki, detail=f"{count} Secrets rewritten through {server}")

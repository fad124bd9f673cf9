"""What the encryption-at-rest key's swap needs besides its config gate: every Secret rewritten
through the Kubernetes API, so each is stored under the new first key before the old one is removed
(Kubernetes' documented rotation: add the key second, move it first, rewrite all Secrets, remove)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from trustplan.errors import GateFailedError
from trustplan.planner import Credential
from trustplan.planner import ops as op
from trustplan.talos import certgen, pki

if TYPE_CHECKING:
    from trustplan.engine.runner import PhaseRunner
    from trustplan.providers.base import TLSIdentity


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


async def rewrite_before_remove(runner: PhaseRunner, phase: op.Phase) -> None:
    """A plan that removes an encryption key it did not swap away from (an apply stopped or killed
    after the swap, before or during its rewrite) rewrites every Secret first: none may stay stored
    under the key it removes. (A plan that swaps it rewrote them after the swap's gates.)"""
    removes = any(e.pki == "encryption" and e.kind == "remove" for e in phase.edits)
    swapped = any(e.pki == "encryption" and e.kind == "swap" for p in runner.plan.phases for e in p.edits)
    if removes and not swapped and runner.provider.capabilities.kubernetes_api:
        cred = kube_credential(runner, phase.name)
        await rewrite_secrets(runner, op.Gate("encryption", phase.name, cred, ()))


async def api_gate(runner: PhaseRunner, gate: op.Gate) -> None:
    """The aggregator's / service-account key's gate answered by every API server (issue 22 item 3):
    front-proxy certs from each of the gate's accepted CAs authenticate (SelfSubjectReview) and the
    extension-apiserver-authentication ConfigMap carries them; tokens signed with each accepted key
    are accepted, and TokenRequest signs with the issuing key. Retried until the Kubernetes timeout."""
    from trustplan.providers import kubegates as kg

    admin = runner.mint("kubernetes", kube_credential(runner, gate.after))
    cps = [n.address for n in runner.plan.nodes if n.role == "controlplane"]
    servers = runner.desired.kube_servers(cps)
    trusted = [(fp, runner.keys.material_for(gate.pki, fp)) for fp in gate.credential.trusted]
    checks: list[Callable[[], None]] = []
    if gate.pki == "aggregator":
        for fp, m in trusted:
            assert m.secret is not None
            ca = pki.load_cert_pem(m.public, runner.plan.label(fp))
            cert, key = certgen.issue_client_cert(
                ca,
                pki.load_key_pem(m.secret, "aggregator CA key"),
                GATE_GROUP,
                runner.now,
                common_name=kg.FRONT_PROXY_CN,
            )
            crt_pem, key_pem = pki.cert_to_pem(cert), pki.key_to_pem(key)
            checks += [partial(kg.front_proxy_user, s, admin.ca_bundle_pem, crt_pem, key_pem) for s in servers]
        want = {pki.fingerprint(pki.load_cert_pem(m.public, fp)) for fp, m in trusted}
        checks.append(partial(_configmap_has, kg, servers[0], admin, want))
    else:
        # TokenRequest signs with an accepted key; from the swap on, with the gate's issuer
        kids = {kg.key_id(m.public) for fp, m in trusted if gate.after != "swap" or fp == gate.credential.issuer}
        for s in servers:
            checks.append(partial(_signs_with, kg, s, admin, kids))
            for fp, m in trusted:
                if m.secret is not None:
                    checks.append(partial(_resigned_accepted, kg, s, admin, m.secret, runner.plan.label(fp)))
    timeout = runner.desired.rollout.timeout("kubernetes")
    try:
        await asyncio.gather(*(_until(check, timeout, f"{gate.after}: the {gate.pki} gate") for check in checks))
    except GateFailedError as exc:
        runner.record(gate.after, "gate", "failed", pki=gate.pki, message=str(exc))
        raise
    what = "front-proxy requests" if gate.pki == "aggregator" else "tokens"
    detail = f"{what} with {len(trusted)} accepted authorities on {len(servers)} API servers (Kubernetes API)"
    runner.record(gate.after, "gate", "ok", pki=gate.pki, detail=detail)


GATE_GROUP = "trustplan:gates"


def _configmap_has(kg: Any, server: str, admin: TLSIdentity, want: set[str]) -> None:
    have = {pki.fingerprint(c) for c in kg.configmap_cas(server, admin)}
    if want - have:
        raise kg.CheckFailed(f"extension-apiserver-authentication lacks {len(want - have)} accepted aggregator CA(s)")


def _signs_with(kg: Any, server: str, admin: TLSIdentity, kids: set[str]) -> None:
    if kg.token_kid(kg.token_request(server, admin)) not in kids:
        raise kg.CheckFailed(f"{server}: TokenRequest signs with a key the gate does not expect")


def _resigned_accepted(kg: Any, server: str, admin: TLSIdentity, secret: bytes, label: str) -> None:
    token = kg.resign(kg.token_request(server, admin), secret)
    kg.token_accepted(server, admin.ca_bundle_pem, token, label)


async def _until(check: Callable[[], None], timeout: float, what: str) -> None:
    from trustplan.providers.kubegates import CheckFailed

    deadline, delay = time.monotonic() + timeout, 0.1
    while True:
        try:
            await asyncio.to_thread(check)
            return
        except CheckFailed as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GateFailedError(
                    f"{what} did not pass on the Kubernetes API within {timeout:g} s: {exc}",
                    hint="rollout.verify.timeout sets how long to wait",
                ) from None
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

"""The Kubernetes API side of the gates of the aggregator CA, the service-account key and the
encryption-at-rest key (issue 22): what the engine asks of every API server, of the nodes' Talos
API and of etcd after the config read-back (`PhaseRunner.shared_gate`) passed. The checks
themselves are `trustplan.providers.kubechecks`; this module picks the servers, mints the
credentials (in memory) and records the outcome in the apply journal.

- aggregator: front-proxy requests signed by each accepted CA authenticate; the
  extension-apiserver-authentication ConfigMap carries them; after the swap, every API server's own
  front-proxy client certificate (read over the Talos API) comes from the new CA.
- serviceaccount: TokenRequest signs with an accepted key (the issuer's from the swap on); tokens
  signed with each accepted private key are accepted.
- encryption: after the swap every Secret is rewritten through the API, then etcd, read directly,
  must hold every Secret under the new key's name (before the remove phase may drop the old key);
  after the remove, every Secret still decrypts through every API server and etcd holds none under
  another key.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from cryptography import x509

from trustplan.errors import GateFailedError, TrustplanError
from trustplan.planner import Credential
from trustplan.planner import ops as op
from trustplan.talos import certgen, kubecreds, machineconfig, pki

if TYPE_CHECKING:
    import datetime as dt

    from trustplan.engine.live import LiveCluster
    from trustplan.engine.runner import PhaseRunner
    from trustplan.formats.desired import DesiredState
    from trustplan.planner.model import DesiredTrust
    from trustplan.providers.base import Provider

GATE_GROUP = "trustplan:gates"
ETCD_PORT = 2379  # as on Talos: every control plane's etcd serves clients on its address:2379


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


def _controlplanes(runner: PhaseRunner) -> list[str]:
    return [n.address for n in runner.plan.nodes if n.role == "controlplane"]


async def _all(runner: PhaseRunner, gate: op.Gate, checks: list[Callable[[], None]], detail: str) -> None:
    """Run the checks (each retried until the Kubernetes timeout); record the gate's outcome."""
    from trustplan.providers.kubechecks.api import until

    timeout = runner.desired.rollout.timeout("kubernetes")
    what = f"{gate.after}: the {gate.pki} gate"
    try:
        await asyncio.gather(*(until(check, timeout, what) for check in checks))
    except GateFailedError as exc:
        runner.record(gate.after, "gate", "failed", pki=gate.pki, message=str(exc))
        raise
    runner.record(gate.after, "gate", "ok", pki=gate.pki, detail=detail)


async def api_gate(runner: PhaseRunner, gate: op.Gate) -> None:
    """The aggregator's / service-account key's gate answered by every API server (issue 22 item 3),
    retried until the Kubernetes timeout."""
    from trustplan.providers.kubechecks import aggregator as agg
    from trustplan.providers.kubechecks import serviceaccount as sa

    admin = runner.mint("kubernetes", kube_credential(runner, gate.after))
    servers = runner.desired.kube_servers(_controlplanes(runner))
    trusted = [(fp, runner.keys.material_for(gate.pki, fp)) for fp in gate.credential.trusted]
    checks: list[Callable[[], None]] = []
    if gate.pki == "aggregator":
        for fp, m in trusted:
            assert m.secret is not None
            ca = pki.load_cert_pem(m.public, runner.plan.label(fp))
            cert, key = certgen.issue_client_cert(
                ca, pki.load_key_pem(m.secret, "aggregator CA key"), GATE_GROUP, runner.now,
                common_name=agg.FRONT_PROXY_CN,
            )
            crt_pem, key_pem = pki.cert_to_pem(cert), pki.key_to_pem(key)
            checks += [partial(agg.front_proxy_user, s, admin.ca_bundle_pem, crt_pem, key_pem) for s in servers]
        want = {pki.fingerprint(pki.load_cert_pem(m.public, fp)) for fp, m in trusted}
        checks.append(partial(agg.configmap_has, servers[0], admin, want))
    else:
        # TokenRequest signs with an accepted key; from the swap on, with the gate's issuer
        kids = {sa.key_id(m.public) for fp, m in trusted if gate.after != "swap" or fp == gate.credential.issuer}
        for s in servers:
            checks.append(partial(sa.signs_with, s, admin, kids))
            for fp, m in trusted:
                if m.secret is not None:
                    checks.append(partial(sa.resigned_accepted, s, admin, m.secret, runner.plan.label(fp)))
    what = "front-proxy requests" if gate.pki == "aggregator" else "tokens"
    detail = f"{what} with {len(trusted)} accepted authorities on {len(servers)} API servers (Kubernetes API)"
    await _all(runner, gate, checks, detail)
    if gate.pki == "aggregator" and gate.after in ("swap", "remove"):
        await own_proxy_certs(runner, gate)


async def own_proxy_certs(runner: PhaseRunner, gate: op.Gate) -> None:
    """After the swap: every control plane's kube-apiserver runs with a front-proxy client cert
    (--proxy-client-cert-file) issued by the gate's issuer, as the node's Talos API serves it
    (secrets/KubernetesDynamicCerts). Skipped (and said so) when the provider cannot read it."""
    from trustplan.providers.kubechecks import aggregator as agg

    reader = runner.provider.capabilities.apiserver_certs
    if reader is None:
        runner.reporter.note(f"{gate.after}: the API servers' own front-proxy certs cannot be read here")
        return
    phase = next(p for p in runner.plan.phases if p.name == gate.after)
    cred = runner.phase_credential(phase)
    issuer = gate.credential.issuer
    ca_pem, label = runner.keys.material_for(gate.pki, issuer).public, runner.plan.label(issuer)
    loop = asyncio.get_running_loop()

    def check(address: str) -> None:
        crt = asyncio.run_coroutine_threadsafe(reader.front_proxy_cert(runner.refs[address], cred), loop).result()
        agg.own_proxy_cert_from(address, crt, ca_pem, label)

    cps = _controlplanes(runner)
    detail = f"the own front-proxy client certs of {len(cps)} API servers come from {label} (Talos API)"
    await _all(runner, gate, [partial(check, a) for a in cps], detail)


async def encryption_gate(runner: PhaseRunner, gate: op.Gate) -> None:
    """After the swap: rewrite every Secret, then etcd holds each under the new key (before the old
    key may go). After the remove: every Secret decrypts on every API server, and etcd still holds
    each under the new key."""
    from trustplan.providers.kubechecks import encryption as enc

    if gate.after not in ("swap", "remove"):
        return
    admin = runner.mint("kubernetes", kube_credential(runner, gate.after))
    servers = runner.desired.kube_servers(_controlplanes(runner))
    if gate.after == "swap":
        note = f"{gate.after}: rewriting every Secret through {servers[0]} (stored under the new key)"
        runner.reporter.note(note)
        count = await asyncio.to_thread(enc.rewrite_secrets, servers[0], admin)
        detail = f"{count} Secrets rewritten through {servers[0]}"
        runner.record(gate.after, "rewrite", "ok", pki=gate.pki, detail=detail)
    address, name, etcd = etcd_client(runner, gate)
    url = f"https://{address}:{ETCD_PORT}" if ":" not in address else f"https://[{address}]:{ETCD_PORT}"
    def in_etcd() -> None:
        enc.all_under(url, *etcd, name)

    checks: list[Callable[[], None]] = [in_etcd]
    if gate.after == "remove":
        checks += [partial(enc.all_decrypt, s, admin) for s in servers]
    detail = f"etcd at {address}:{ETCD_PORT} holds every Secret under {name}"
    if gate.after == "remove":
        detail += f"; every Secret decrypts on {len(servers)} API servers"
    await _all(runner, gate, checks, detail)


def etcd_client(runner: PhaseRunner, gate: op.Gate) -> tuple[str, str, tuple[bytes, bytes, bytes]]:
    """(a control plane's address, the name of the gate's issuing key as its live config names it,
    (CA bundle, client cert, client key) for its etcd): the client cert is minted in memory from
    the etcd CA that control plane's live config carries (`cluster.etcd.ca`: its first block and
    key issue, every block is trusted), never written anywhere."""
    address = _controlplanes(runner)[0]
    cfg = runner.configs[address]
    issuer = machineconfig.kind_fields(cfg, "encryption").issuer
    if issuer is None or not issuer.name or kubecreds.fingerprint("encryption", issuer) != gate.credential.issuer:
        raise GateFailedError(f"node {address}: the encryption configuration does not encrypt with "
                              f"{runner.plan.label(gate.credential.issuer)}")
    ca = ((cfg.v1alpha1.get("cluster") or {}).get("etcd") or {}).get("ca") or {}
    try:
        bundle, key_pem = base64.b64decode(str(ca["crt"])), base64.b64decode(str(ca["key"]))
        ca_cert = x509.load_pem_x509_certificates(bundle)[0]  # Talos issues from the first block
        ca_key = pki.load_key_pem(key_pem, "cluster.etcd.ca.key")
    except (KeyError, ValueError, TrustplanError) as exc:
        raise GateFailedError(f"node {address}: cannot read cluster.etcd.ca to reach etcd: {exc}") from None
    cert, key = certgen.issue_client_cert(ca_cert, ca_key, GATE_GROUP, runner.now, common_name="trustplan-gate")
    return address, issuer.name, (bundle, pki.cert_to_pem(cert), pki.key_to_pem(key))


async def legacy_tokens(
    desired: DesiredState, provider: Provider, live: LiveCluster, desired_trust: tuple[DesiredTrust, ...],
    now: dt.datetime,
) -> tuple[tuple[str, ...], list[str]]:
    """At plan time: the legacy token Secrets (type kubernetes.io/service-account-token) signed with
    a service-account key the desired state drops, read from the cluster through the first control
    plane's API server with an admin cert minted in memory from its live Kubernetes issuer. Returns
    (namespace/name of each, notes); nothing to read (no such key, no Kubernetes API): ((), [])."""
    from trustplan.formats.outputs import admin_credentials
    from trustplan.providers.base import TLSIdentity
    from trustplan.providers.kubechecks import serviceaccount as sa
    from trustplan.providers.kubechecks.api import CheckFailed

    want = next((d for d in desired_trust if d.pki == "serviceaccount"), None)
    cps = [n.address for n in live.nodes if n.role == "controlplane" and n.address in live.configs]
    if want is None or not provider.capabilities.kubernetes_api or not cps:
        return (), []
    kept = {want.issuer, *want.accepted}
    dropped: dict[str, bytes] = {}
    for address in cps:
        fields = machineconfig.kind_fields(live.configs[address], "serviceaccount")
        for m in (*([fields.issuer] if fields.issuer else []), *fields.accepted):
            fp = kubecreds.fingerprint("serviceaccount", m)
            if fp not in kept:
                dropped[fp] = m.public
    kube = live.configs[cps[0]].ca_fields("kubernetes")
    if not dropped or kube.issuer is None or kube.issuer_key is None:
        return (), []
    ca = pki.CACert.from_pem(kube.issuer, f"node {cps[0]}")
    crt, key = admin_credentials(ca, pki.load_key_pem(kube.issuer_key, "Kubernetes CA key"), "kubernetes", now)
    bundle = pki.pem_bundle([kube.issuer, *kube.accepted])
    admin = TLSIdentity("kubernetes", ca.fingerprint, (ca.fingerprint,), crt, key, bundle)
    server = desired.kube_servers(cps)[0]
    try:
        found = await asyncio.to_thread(sa.legacy_tokens, server, admin, list(dropped.values()))
    except CheckFailed as exc:
        return (), [f"warning: could not list the legacy service-account token Secrets: {exc}"]
    return tuple(found), []


__all__ = ["api_gate", "encryption_gate", "etcd_client", "kube_credential", "legacy_tokens", "own_proxy_certs"]

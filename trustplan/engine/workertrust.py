"""Learn which client certificates each worker's apid accepts, by asking the worker itself.

A worker's client-trust bundle is not in its machine config: it is what a control plane's trustd
returned at the worker's last certificate request
(docs/talos-model.md: worker trust through trustd). After a rotation that
another tool left half done, or a control plane reverted by hand, the planner's guess (what every
control plane trusts now) can be wrong in either direction. So when the cluster's Talos trust is not
uniform, each worker is probed directly (its own apid address, not through an endpoint's proxy)
with an admin certificate minted from each Talos CA some node trusts and whose key trustplan holds
(the keystore, an import, or a control plane's config); the answers go into the LiveNodes, where
they override the guess (planner.safety).

    probe_workers(desired, provider, live, resolved, keystore, now) -> (LiveCluster, notes)
    worker_trust_hint(inp, refusal, ports) -> str | None    the manual step for a refused plan
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re

from trustplan.engine.authorities import Resolved
from trustplan.engine.live import LiveCluster
from trustplan.errors import KeystoreError
from trustplan.formats.desired import DesiredState
from trustplan.formats.keystore import Keystore
from trustplan.formats.outputs import admin_credentials
from trustplan.planner import LiveNode, PlanInput
from trustplan.providers.base import NodeRef, Provider, TLSIdentity
from trustplan.talos import pki


def needs_probe(live: LiveCluster) -> bool:
    """True when the nodes' Talos trust differs between nodes (a half-done state): only then can a
    worker's bundle differ from what every control plane trusts now."""
    shapes = {(n.talos.issuer, n.talos.trusted) for n in live.nodes if n.role == "controlplane"}
    workers = {n.talos.trusted for n in live.nodes if n.role == "worker"}
    if not workers:
        return False
    cp_trust = {t for _, t in shapes}
    return len(shapes) > 1 or workers != cp_trust


def _candidates(live: LiveCluster, resolved: Resolved, keystore: Keystore, now: dt.datetime) -> list[TLSIdentity]:
    from trustplan.providers.talos.talosconfig import make_credential

    talos = sorted(fp for fp, c in live.cas.items() if c.pki == "talos")
    bundle = b"".join(live.cas[fp].ca.pem for fp in talos)
    out = []
    for fp in talos:
        material = resolved.material.get(fp)
        key = material.key if material is not None else None
        if key is None:
            try:
                _, key = keystore.load(fp)
            except KeystoreError:
                continue  # no key anywhere: this CA cannot be probed (the planner keeps its guess)
        crt, key_pem = admin_credentials(live.cas[fp].ca, key, "talos", now)
        out.append(make_credential(crt, key_pem, bundle, source=f"probe certificate from {pki.short(fp)}"))
    return out


async def probe_workers(
    desired: DesiredState,
    provider: Provider,
    live: LiveCluster,
    resolved: Resolved,
    keystore: Keystore,
    now: dt.datetime,
) -> tuple[LiveCluster, list[str]]:
    """The cluster with each worker's probed client trust filled in, and notes saying what was
    learned (or why nothing could be). Does nothing for a uniform cluster, for a provider that
    cannot ask a worker directly (files), or when trustplan does not manage the Talos API CA."""
    prober = provider.capabilities.client_trust
    if prober is None or "talos" not in desired.trust or not needs_probe(live):
        return live, []
    credentials = _candidates(live, resolved, keystore, now)
    if not credentials:
        return live, []
    refs = {r.address: r for r in desired.nodes}
    workers = [n for n in live.nodes if n.role == "worker"]
    answers = await asyncio.gather(
        *(prober.probe_client_trust(refs.get(n.address) or NodeRef(n.address), credentials) for n in workers)
    )
    seen: dict[str, LiveNode] = {}
    notes: list[str] = []
    for node, answer in zip(workers, answers, strict=True):
        accepts = tuple(c.issuer for c, ok in zip(credentials, answer, strict=True) if ok is True)
        refuses = tuple(c.issuer for c, ok in zip(credentials, answer, strict=True) if ok is False)
        seen[node.address] = dataclasses.replace(node, probed_accepts=accepts, probed_refuses=refuses)
        if accepts or refuses:
            notes.append(
                f"note: worker {node.address} (probed directly, its trust comes from trustd): its apid accepts "
                f"client certificates from {_names(accepts)}, refuses {_names(refuses)}"
            )
        else:
            notes.append(
                f"warning: worker {node.address} could not be probed directly on port "
                f"{(refs.get(node.address) or NodeRef(node.address)).port}: its client trust is guessed "
                "from the control planes' configs"
            )
    nodes = tuple(seen.get(n.address, n) for n in live.nodes)
    return dataclasses.replace(live, nodes=nodes), notes


def _names(fps: tuple[str, ...]) -> str:
    return "[" + ", ".join(pki.short(f) for f in fps) + "]" if fps else "[nothing]"


def worker_trust_hint(inp: PlanInput, refusal: str, ports: dict[str, int]) -> str | None:
    """For a plan refused because a worker would refuse a control plane's proxy certificate: the
    manual step that makes a safe plan (the worker asking trustd for a new certificate, now that the
    control planes trust the new CA), and what trustplan knows about that worker's trust."""
    match = re.search(r"node (\S+) would refuse the proxy certificate", refusal)
    node = next((n for n in inp.nodes if match and n.address == match.group(1)), None)
    if node is None or node.role != "worker":
        return None
    address = node.address
    step = (
        f"make {address} request a new certificate from trustd, now that the control planes trust the new CA, "
        "by changing its certificate inputs (adding its own address to machine.certSANs does no harm): "
        f"`talosctl -n {address} patch mc --mode=no-reboot --patch "
        f"'[{{\"op\":\"add\",\"path\":\"/machine/certSANs/-\",\"value\":\"{address}\"}}]'`; then plan again"
    )
    if node.probed_refuses:
        return (
            f"Worker {address}'s apid refuses client certificates from {_names(node.probed_refuses)} (probed "
            f"directly: the client-trust bundle it got from trustd is older than the control planes' trust): {step}"
        )
    if not node.probed_accepts:
        return (
            f"trustplan could not learn which client CAs worker {address} accepts (its trustd bundle is not in its "
            f"config, and it did not answer a direct probe on {address}:{ports.get(address, 50000)}); let this "
            f"machine reach that port and plan again, or {step}"
        )
    return None

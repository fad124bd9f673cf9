"""What each running etcd member trusts, for a plan that rotates the etcd CA (docs/etcd-ca.md).

A member takes up its `cluster.etcd.ca` field only when it restarts, so its config can say more than it
runs: an apply stopped between a control plane's write and its reboot (or a member that did not come
back) leaves a field the member has not loaded. The plan is made from what the member runs: each
member is asked, over TLS, whether it serves a client certificate from each etcd CA trustplan holds a
key for (minted in memory). A CA its field lists but the member refuses is not trusted yet (the accept
is planned again: the same field, then the reboot); a CA the member still serves that its field no
longer lists is still trusted (the remove is planned again). A member that does not answer is taken
at its config's word, with a note.

Only with a provider whose control planes run etcd members (capabilities.reboot, the Talos API).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from trustplan.engine.authorities import Resolved
from trustplan.engine.live import LiveCluster
from trustplan.planner import LiveNode, LiveTrust
from trustplan.providers.base import Provider
from trustplan.providers.etcd import EtcdClient
from trustplan.talos import certgen, pki


def _client(cert_pem: bytes, key_pem: bytes, bundle: bytes, now: dt.datetime) -> EtcdClient:
    ca = pki.load_cert_pem(cert_pem, "etcd CA")
    crt, key = certgen.issue_client_cert(ca, pki.load_key_pem(key_pem, "etcd CA key"), "trustplan", now,
                                         common_name="trustplan")
    return EtcdClient(pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key), bundle)


def effective(trust: LiveTrust, answers: dict[str, bool | None]) -> LiveTrust:
    """The field as the running member holds it: listed CAs it refuses dropped, unlisted ones it serves
    added (after the listed ones). The issuer stays: leaves are loaded at every handshake."""
    accepted = [fp for fp in trust.accepted if answers.get(fp) is not False]
    accepted += [fp for fp, ok in answers.items() if ok and fp not in trust.trusted]
    return LiveTrust(trust.issuer, trust.issuer_has_key, tuple(accepted))


async def probe_etcd(
    provider: Provider, live: LiveCluster, resolved: Resolved, now: dt.datetime
) -> tuple[LiveCluster, list[str]]:
    """`live` with each control plane's etcd trust as its running member holds it, and notes."""
    holders = [n for n in live.nodes if "etcd" in dict(n.others)]
    if provider.capabilities.reboot is None or not holders:
        return live, []
    known = dict.fromkeys(fp for n in holders for fp in n.trust("etcd").trusted)
    for d in resolved.desired:
        if d.pki == "etcd":
            known.update(dict.fromkeys((d.issuer, *d.accepted)))
    pems = {fp: k.material for fp, k in resolved.keys.items() if k.pki == "etcd" and fp in known}
    bundle = pki.pem_bundle([m.public for m in pems.values()])
    clients = {fp: _client(m.public, m.secret, bundle, now) for fp, m in pems.items() if m.secret is not None}
    notes: list[str] = []
    nodes: list[LiveNode] = []
    for node in live.nodes:
        if node not in holders:
            nodes.append(node)
            continue
        found = await asyncio.gather(*(asyncio.to_thread(c.accepts, node.address) for c in clients.values()))
        answers = dict(zip(clients, found, strict=True))
        if all(a is None for a in answers.values()):
            notes.append(f"note: etcd member {node.address} does not answer: planned from its config alone")
            nodes.append(node)
            continue
        trust = node.trust("etcd")
        ran = effective(trust, answers)
        if ran != trust:
            notes.append(f"note: etcd member {node.address} runs another etcd CA field than its config says (it "
                         "has not restarted since the field was written): planned from what it runs")
        others = tuple((k, ran if k == "etcd" else t) for k, t in node.others)
        nodes.append(dataclasses.replace(node, others=others))
    return dataclasses.replace(live, nodes=tuple(nodes)), notes

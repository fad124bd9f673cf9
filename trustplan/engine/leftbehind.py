"""Members left behind: cluster members outside cluster.nodes whose trust no longer matches the
listed nodes' (issue 20, finding 2). `plan` and `status` name each one, whether or not the plan
revokes anything: a worker that joined during an earlier rotation keeps only the CAs it had, and a
plan that changes nothing would otherwise say "No changes" while that node refuses the talosconfig.

    left_behind(desired, provider, live, reader) -> list[str]      one warning per such member
"""

from __future__ import annotations

from trustplan.engine.live import LiveCluster
from trustplan.errors import ProviderError, TrustplanError
from trustplan.formats.desired import DesiredState
from trustplan.providers.base import NodeRef, Provider, TLSIdentity
from trustplan.talos import pki
from trustplan.talos.machineconfig import MachineConfig

_HINT = "add it under cluster.nodes and run `trustplan plan` again: the plan brings it to the listed nodes' CAs"


async def left_behind(
    desired: DesiredState, provider: Provider, live: LiveCluster, reader: TLSIdentity | None
) -> list[str]:
    lister = provider.capabilities.members
    if lister is None or "talos" not in desired.trust:
        return []
    try:
        members = await lister.members(reader)
    except ProviderError:
        return []  # plan's own member check says when the list cannot be read
    listed = {n.address for n in desired.nodes} | {n.address for n in live.nodes}
    issuers = {n.talos.issuer for n in live.nodes if n.role == "controlplane" and n.talos.issuer}
    kept = {fp for n in live.nodes for fp in n.talos.trusted}
    out: list[str] = []
    for address, role, host in members:
        if address in listed:
            continue
        who = f"member {address} ({role} {host}) is not in cluster.nodes"
        try:
            got = await provider.read(NodeRef(address), reader)
        except TrustplanError as exc:
            out.append(f"warning: {who} and cannot be read with the credentials that read the listed nodes "
                       f"({exc}): it probably still trusts a CA the listed nodes no longer use (left out of an "
                       f"earlier rotation); {_HINT}")
            continue
        cfg = MachineConfig(got.data, f"node {address} (live machine config)")
        issuing, accepted = cfg.ca_fields("talos").cas(cfg.source)
        trusted = {c.fingerprint for c in (issuing, *accepted) if c is not None}
        removed = sorted(trusted - kept)
        missing = sorted(issuers - trusted)
        if removed or missing:
            what = []
            if removed:
                names = ", ".join(pki.short(f) for f in removed)
                what.append(f"still trusts {names}, which no listed node trusts")
            if missing:
                what.append("does not trust " + ", ".join(pki.short(f) for f in missing)
                            + ", which the control planes issue from")
            out.append(f"warning: {who} and {' and '.join(what)}; {_HINT}")
    return out

"""The status report as data: the trust matrix (nodes x CAs) of the live cluster and its drift from
the state, one entry per field that differs. `trustplan status --format json` prints it as is;
trustplan.render.status draws it as a table or Markdown."""

from __future__ import annotations

from typing import Any

from trustplan.engine.live import LiveCluster
from trustplan.planner import PKIS
from trustplan.state import StateDocument, TrustRecord
from trustplan.talos import pki

#: the config fields of each PKI's issuer and accepted CAs, as drift lines name them
FIELDS = {"talos": ("machine.ca", "machine.acceptedCAs"), "kubernetes": ("cluster.ca", "cluster.acceptedCAs")}


def build_report(live: LiveCluster, state: StateDocument) -> dict[str, Any]:
    names = {fp: a.name for fp, a in state.authorities.items()}
    cas: list[dict[str, Any]] = []
    for fp, lca in sorted(live.cas.items(), key=lambda kv: (kv[1].pki, kv[1].ca.not_before)):
        cas.append(
            {
                "fingerprint": fp,
                "name": names.get(fp),
                "pki": lca.pki,
                "subject": lca.ca.subject,
                "algorithm": lca.ca.algorithm,
                "not_after": f"{lca.ca.not_after:%Y-%m-%d}",
                "issuing_on": [],
                "accepted_on": [],
            }
        )
    by_fp = {c["fingerprint"]: c for c in cas}
    nodes = []
    drift = []
    for n in live.nodes:
        row: dict[str, Any] = {"address": n.address, "role": n.role, "config_digest": n.config_digest, "cas": {}}
        for pki_name in PKIS:
            t = n.trust(pki_name)
            if t.issuer:
                row["cas"][t.issuer] = "issuing+key" if t.issuer_has_key else "issuing"
                by_fp[t.issuer]["issuing_on"].append(n.address)
            for a in t.accepted:
                row["cas"].setdefault(a, "accepted")
                by_fp[a]["accepted_on"].append(n.address)
        recorded = state.nodes.get(n.address)
        if state.serial > 0:
            if recorded is None:
                drift.append({"node": n.address, "reason": "not in the state"})
            else:
                for pki_name, t in n.trusts().items():
                    then = recorded.trust(pki_name)
                    if then is None:
                        continue
                    now = TrustRecord(t.issuer, tuple(t.accepted))
                    if then != now and (t.issuer or then.issuer):
                        drift += _drift(n.address, pki_name, then, now, names, state.serial)
        nodes.append(row)
    return {"cluster": state.cluster, "serial": state.serial, "authorities": cas, "nodes": nodes, "drift": drift}


def _drift(
    node: str, pki_name: str, then: TrustRecord, now: TrustRecord, names: dict[str, str | None], serial: int
) -> list[dict[str, Any]]:
    """One drift entry per field that differs, naming the node, the field and both values."""
    field = FIELDS[pki_name]

    def show(value: str | list[str] | None) -> str:
        if value is None:
            return "none"
        if isinstance(value, list):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return f"{names[value]} ({pki.short(value)})" if names.get(value) else pki.short(value)

    entries = []
    fields = ((field[0], then.issuer, now.issuer), (field[1], list(then.accepted), list(now.accepted)))
    for path, was, is_ in fields:
        if was != is_:
            entries.append(
                {
                    "node": node,
                    "pki": pki_name,
                    "field": path,
                    "state": was,
                    "live": is_,
                    "reason": f"{path}: state (serial {serial}) has {show(was)}, live has {show(is_)}",
                }
            )
    return entries

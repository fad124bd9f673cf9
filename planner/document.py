"""The plan as a JSON-ready document (schemas/plan.schema.json) and back. Pure; no I/O.

Ordering is stable: phases in order, edits as planned (control planes first, then by address),
authorities by PKI and name, keys sorted when serialized.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, assert_never

from trustplan.planner.drain import Deferred
from trustplan.planner.etcd import EtcdStep, rolling_steps
from trustplan.planner.model import KINDS, PKI, PKIS, Authority, Credential, LiveNode, LiveTrust
from trustplan.planner.ops import AcceptCA, Edit, Gate, MoveToDocument, Phase, RemoveCA, SwapIssuer, WriteOutput
from trustplan.planner.result import NodeTarget, Plan, PlanWarning
from trustplan.planner.timestamps import iso_time, parse_time

FORMAT_VERSION = 1


def _trust(t: LiveTrust) -> dict[str, Any]:
    return {"issuer": t.issuer, "issuer_key": t.issuer_has_key, "accepted": list(t.accepted)}


def _untrust(d: dict[str, Any]) -> LiveTrust:
    return LiveTrust(d["issuer"], bool(d["issuer_key"]), tuple(d["accepted"]))


def _cred(c: Credential | None) -> dict[str, Any] | None:
    return None if c is None else {"issuer": c.issuer, "trusted": list(c.trusted)}


def _uncred(d: dict[str, Any] | None) -> Credential | None:
    return None if d is None else Credential(d["issuer"], tuple(d["trusted"]))


def edit_document(e: Edit) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": e.kind, "node": e.node, "role": e.role, "pki": e.pki, "destructive": e.destructive}
    match e:
        case AcceptCA(ca=ca) | RemoveCA(ca=ca):
            base["ca"] = ca
        case SwapIssuer(new=new, old=old):
            base["new"], base["old"], base["with_key"] = new, old, e.with_key
        case MoveToDocument():
            pass
        case _:
            assert_never(e)
    return base


def _edit(d: dict[str, Any]) -> Edit:
    match d["kind"]:
        case "accept":
            return AcceptCA(d["node"], d["role"], d["pki"], d["ca"])
        case "remove":
            return RemoveCA(d["node"], d["role"], d["pki"], d["ca"])
        case "swap":
            return SwapIssuer(d["node"], d["role"], d["pki"], d["new"], d["old"])
        case "move":
            return MoveToDocument(d["node"], d["role"], d["pki"])
    raise ValueError(f"unknown edit kind {d['kind']!r}")


def _rolling(steps: tuple[EtcdStep, ...], phase: str) -> dict[str, Any]:
    """A phase's etcd steps, in apply's order (only in a plan that rotates the etcd CA)."""
    mine = [s for s in steps if s.phase == phase]
    if not mine:
        return {}
    return {"etcd_rolling": [
        {"member": s.member, "restart": s.restart, "members": s.members, "up_during": s.up_during,
         "quorum": s.quorum, "issuer": s.issuer, "accepted": list(s.accepted)}
        for s in mine
    ]}


def to_document(plan: Plan) -> dict[str, Any]:
    """The plan's own content (the shell adds bindings: digests, lineage, expiry)."""
    rolling = rolling_steps(plan)
    targets: dict[str, dict[str, Any]] = {}
    for t in plan.targets:
        targets.setdefault(t.node, {})[t.pki] = {"before": _trust(t.before), "after": _trust(t.after)}
    kinds = [e.kind for e in plan.edits]
    changes = Counter(e.node for e in plan.edits)
    new = {a.fingerprint for a in plan.new_authorities}
    return {
        "cluster": plan.cluster,
        "managed": list(plan.managed),
        "authorities": [
            {
                "fingerprint": a.fingerprint,
                "name": a.name,
                "pki": a.pki,
                "source": a.source,
                "subject": a.subject,
                "algorithm": a.algorithm,
                "not_before": iso_time(a.not_before),
                "not_after": iso_time(a.not_after),
                "certificate": a.cert_pem,
                "key_available": a.key_available,
                "new": a.fingerprint in new,
            }
            for a in plan.authorities
        ],
        "nodes": [
            {
                "address": n.address,
                "role": n.role,
                "declared_role": n.declared_role,
                "config_digest": n.config_digest,
                "live": {pki: _trust(t) for pki, t in n.trusts().items()},
                "legacy": list(n.legacy),
                "talos_version": n.talos_version,
                "targets": targets.get(n.address, {}),
                "changes": changes[n.address],
            }
            for n in plan.nodes
        ],
        "phases": [
            {
                "name": p.name,
                "credential": _cred(p.credential),
                "edits": [edit_document(e) for e in p.edits],
                "gates": [
                    {
                        "kind": g.kind,
                        "pki": g.pki,
                        "after": g.after,
                        "credential": _cred(g.credential),
                        "nodes": list(g.nodes),
                    }
                    for g in p.gates
                ],
                "outputs": [{"kind": o.kind, "output": o.output, "pki": o.pki, "ca": o.ca} for o in p.outputs],
                **({"recertify": list(p.recertify)} if p.recertify else {}),
                **_rolling(rolling, p.name),
            }
            for p in plan.phases
        ],
        "warnings": [w.message for w in plan.warnings],
        "deferred": [
            {
                "pki": d.pki,
                "cas": list(d.cas),
                "nodes": list(d.nodes),
                "drain_seconds": int(d.drain.total_seconds()),
                "since": iso_time(d.since) if d.since else None,
                "until": iso_time(d.until) if d.until else None,
            }
            for d in plan.deferred
        ],
        "warning_details": [
            {"code": w.code, "pki": w.pki, "fingerprint": w.fingerprint, "nodes": list(w.nodes), "message": w.message}
            for w in plan.warnings
        ],
        "summary": {
            "authorities_to_create": len(plan.new_authorities),
            "node_changes": len(kinds),
            "ca_changes": len(kinds),
            "config_writes": sum(len(p.nodes()) + len(p.recertify) for p in plan.phases if p.name != "outputs"),
            "accept": kinds.count("accept"),
            "swap": kinds.count("swap"),
            "remove": kinds.count("remove"),
            "gates": len(plan.gates),
            "outputs": len(plan.outputs),
            "has_changes": plan.has_changes,
        },
    }


def from_document(doc: dict[str, Any]) -> Plan:
    authorities = tuple(
        Authority(
            fingerprint=a["fingerprint"],
            pki=a["pki"],
            source=a["source"],
            subject=a["subject"],
            algorithm=a["algorithm"],
            not_before=parse_time(a["not_before"]),
            not_after=parse_time(a["not_after"]),
            cert_pem=a["certificate"],
            key_available=a["key_available"],
            name=a["name"],
        )
        for a in doc["authorities"]
    )
    nodes = tuple(
        LiveNode(
            n["address"],
            n["role"],
            n["config_digest"],
            _untrust(n["live"]["talos"]),
            _untrust(n["live"]["kubernetes"]),
            n["declared_role"],
            others=tuple((p, _untrust(n["live"][p])) for p in PKIS if p in n["live"] and KINDS[p].holders != "all"),
            legacy=tuple(n.get("legacy", ())),
            talos_version=n.get("talos_version"),
        )
        for n in doc["nodes"]
    )
    targets = tuple(
        NodeTarget(n["address"], n["role"], pki, _untrust(t["before"]), _untrust(t["after"]))
        for n in doc["nodes"]
        for pki, t in sorted(n["targets"].items(), key=lambda kv: PKIS.index(kv[0]))
    )
    phases = tuple(
        Phase(
            p["name"],
            tuple(_edit(e) for e in p["edits"]),
            tuple(
                Gate(g["pki"], g["after"], _uncred(g["credential"]) or Credential("", ()), tuple(g["nodes"]))
                for g in p["gates"]
            ),
            _uncred(p["credential"]),
            tuple(WriteOutput(o["output"], o["pki"], o["ca"]) for o in p["outputs"]),
            tuple(p.get("recertify", ())),
        )
        for p in doc["phases"]
    )
    managed: tuple[PKI, ...] = tuple(doc["managed"])
    if "warning_details" in doc:
        warnings = tuple(
            PlanWarning(w["code"], w["pki"], w["fingerprint"], tuple(w["nodes"]), w["message"])
            for w in doc["warning_details"]
        )
    else:  # a format 1.0 document: the messages only
        warnings = tuple(PlanWarning("message", None, None, (), m) for m in doc["warnings"])
    deferred = tuple(
        Deferred(
            d["pki"],
            tuple(d["cas"]),
            tuple(d["nodes"]),
            dt.timedelta(seconds=d["drain_seconds"]),
            parse_time(d["since"]) if d["since"] else None,
            parse_time(d["until"]) if d["until"] else None,
        )
        for d in doc.get("deferred", [])
    )
    return Plan(doc["cluster"], managed, authorities, nodes, targets, phases, warnings, deferred)

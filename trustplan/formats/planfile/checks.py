"""The structural checks of a plan document, run by the decoder before it builds a SavedPlan, so
`show` and `apply` never build a plan from nonsense.

    check_structure(doc, source)    every node, CA and PKI a step names exists; certificates match
                                    their fingerprints and descriptions; no control characters in
                                    any text a renderer may print; PlanFileError otherwise

Whether the plan is the one the desired state asks for is trustplan.engine.planverify's question.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from trustplan.errors import CAError, PlanFileError
from trustplan.planner.model import KINDS
from trustplan.planner.timestamps import iso_time, parse_time
from trustplan.talos import kubecreds, pki


def _fail(source: str, message: str) -> PlanFileError:
    return PlanFileError(f"{source}: {message}", hint="re-create it with `trustplan plan -o ...`; nothing was changed")


def _fps_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Every CA fingerprint a step of the plan names, with where."""
    out: list[tuple[str, str]] = []
    for i, phase in enumerate(doc["phases"]):
        for j, e in enumerate(phase["edits"]):
            for key in ("ca", "new", "old"):
                if e.get(key):
                    out.append((e[key], f"phases[{i}].edits[{j}].{key}"))
        for j, g in enumerate(phase["gates"]):
            out.append((g["credential"]["issuer"], f"phases[{i}].gates[{j}].credential.issuer"))
            out += [(fp, f"phases[{i}].gates[{j}].credential.trusted") for fp in g["credential"]["trusted"]]
        for j, o in enumerate(phase["outputs"]):
            out.append((o["ca"], f"phases[{i}].outputs[{j}].ca"))
    return out


def _check_key(a: dict[str, Any], source: str, where: str) -> None:
    """A signing key names its public key (its fingerprint must match); a secretbox key shows nothing."""
    kind = a["pki"]
    if KINDS[kind].material == "secretbox":
        if a["certificate"]:
            raise _fail(source, f"{where}.certificate: a secretbox key has no public part")
        return
    try:
        fp = kubecreds.fingerprint(kind, kubecreds.Material(a["certificate"].encode("utf-8", "surrogatepass")))
    except (ValueError, TypeError) as exc:
        raise _fail(source, f"{where}.certificate: not a PEM public key ({exc})") from None
    if fp != a["fingerprint"]:
        raise _fail(source, f"{where}: the public key's fingerprint is {fp}, not {a['fingerprint']}")


def check_structure(doc: dict[str, Any], source: str) -> None:
    """Refuse a schema-valid document whose parts do not fit together (PlanFileError, never a crash)."""
    _check_text(doc, source, "")
    for key in ("created", "expires"):
        _time(doc[key], source, key)
    fps: dict[str, str] = {}
    for i, a in enumerate(doc["authorities"]):
        where = f"authorities[{i}]"
        if a["fingerprint"] in fps:
            raise _fail(source, f"{where}: CA {a['fingerprint']} is listed twice")
        if KINDS[a["pki"]].material != "ca":
            _check_key(a, source, where)
            fps[a["fingerprint"]] = a["pki"]
            continue
        try:
            ca = pki.CACert.from_pem(a["certificate"].encode("utf-8", "surrogatepass"), f"{source}: {where}")
        except CAError as exc:
            raise _fail(source, f"{where}.certificate: {exc}") from None
        if ca.fingerprint != a["fingerprint"]:
            raise _fail(source, f"{where}: the certificate's fingerprint is {ca.fingerprint}, not {a['fingerprint']}")
        facts = {"subject": ca.subject, "algorithm": ca.algorithm,
                 "not_before": iso_time(ca.not_before), "not_after": iso_time(ca.not_after)}
        for key, value in facts.items():  # what reviewers read is what the certificate says
            if a[key] != value:
                raise _fail(source, f"{where}.{key}: {a[key]!r} is not what the certificate says ({value!r})")
        fps[a["fingerprint"]] = a["pki"]
    if len(set(doc["managed"])) != len(doc["managed"]):
        raise _fail(source, "managed: a PKI is listed twice")
    roles: dict[str, str] = {}
    targets: set[tuple[str, str]] = set()
    for i, n in enumerate(doc["nodes"]):
        if n["address"] in roles:
            raise _fail(source, f"nodes[{i}]: node {n['address']} is listed twice")
        roles[n["address"]] = n["role"]
        targets |= {(n["address"], p) for p in n["targets"]}
        for pki_name in n["targets"]:
            if pki_name not in doc["managed"]:
                raise _fail(source, f"nodes[{i}].targets.{pki_name}: not a managed PKI")
    seen: set[str] = set()
    for i, phase in enumerate(doc["phases"]):
        if phase["name"] in seen:
            raise _fail(source, f"phases[{i}]: phase {phase['name']} appears twice")
        seen.add(phase["name"])
        for j, e in enumerate(phase["edits"]):
            where = f"phases[{i}].edits[{j}]"
            if e["node"] not in roles:
                raise _fail(source, f"{where}: node {e['node']} is not one of the plan's nodes")
            if roles[e["node"]] != e["role"]:
                raise _fail(source, f"{where}: node {e['node']} is a {roles[e['node']]}, not a {e['role']}")
            if e["pki"] not in doc["managed"]:
                raise _fail(source, f"{where}: the {e['pki']} PKI is not managed by this plan")
            if (e["node"], e["pki"]) not in targets:
                raise _fail(source, f"{where}: node {e['node']} has no {e['pki']} target")
        for j, g in enumerate(phase["gates"]):
            unknown = [a for a in g["nodes"] if a not in roles]
            if unknown:
                raise _fail(source, f"phases[{i}].gates[{j}]: unknown nodes {', '.join(unknown)}")
    for fp, where in _fps_of(doc):
        if fp not in fps:
            raise _fail(source, f"{where}: CA {fp} is not among the plan's authorities")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _check_text(value: Any, source: str, where: str) -> None:
    """No control characters (terminal escapes, bidi overrides) in any string a renderer may print."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise _fail(source, f"{where or '(top level)'}: holds control characters")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, source, where)
            _check_text(v, source, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, source, f"{where}[{i}]")


def _time(text: str, source: str, where: str) -> dt.datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise _fail(source, f"{where}: {text!r} is not a UTC time like 2026-01-31T12:00:00Z") from None

"""Apply trusts only what it can recompute: check a decoded plan against the live cluster and the
desired state before any node is touched.

    check_structure(doc, source)        the document is internally consistent (every node, CA and
                                        PKI a step names exists; certificates match their
                                        fingerprints); PlanFileError otherwise. Run by the decoder,
                                        so `show` and `apply` never build a plan from nonsense.
    verified_plan(doc, ...) -> Plan     re-run the safety check on the decoded plan, re-derive the
                                        plan the desired state asks for from the live configs, and
                                        refuse (naming what differs) unless both are the same plan;
                                        returns the recomputed plan, whose CA certificates come from
                                        the desired state, the keystore and the nodes, not the file.

The plan file's SHA-256 proves only that the bytes were not damaged: anyone who can change the file
can recompute it. A signature proves who made a plan; this module proves what it does.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, assert_never

from trustplan.engine.authorities import Resolved
from trustplan.engine.credentials import check_outputs, planned_outputs
from trustplan.engine.live import LiveCluster
from trustplan.errors import CAError, KeystoreError, PlanFileError, UnsafePlanError
from trustplan.formats.desired import DesiredState
from trustplan.planner import (
    OperatorCredential,
    Plan,
    PlanInput,
    PlanningError,
    UnsafePlan,
    check_plan,
    make_plan,
)
from trustplan.planner import ops as op
from trustplan.planner.document import from_document, to_document
from trustplan.providers.base import Credential, Provider
from trustplan.talos import pki

_HINT = "nothing was sent to any node; make a new plan with `trustplan plan -o plan.bin` and review it"


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
        try:
            ca = pki.CACert.from_pem(a["certificate"].encode("utf-8", "surrogatepass"), f"{source}: {where}")
        except CAError as exc:
            raise _fail(source, f"{where}.certificate: {exc}") from None
        if ca.fingerprint != a["fingerprint"]:
            raise _fail(source, f"{where}: the certificate's fingerprint is {ca.fingerprint}, not {a['fingerprint']}")
        facts = {"subject": ca.subject, "algorithm": ca.algorithm,
                 "not_before": ca.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "not_after": ca.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}
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
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise _fail(source, f"{where}: {text!r} is not a UTC time like 2026-01-31T12:00:00Z") from None


# --- comparing a decoded plan with the recomputed one -------------------------------------------------


def _edit_text(plan: Plan, e: op.Edit) -> str:
    match e:
        case op.AcceptCA(ca=ca):
            return f"accept {plan.label(ca)} ({ca}) on {e.node} ({e.pki})"
        case op.RemoveCA(ca=ca):
            return f"remove {plan.label(ca)} ({ca}) from {e.node} ({e.pki})"
        case op.SwapIssuer(new=new):
            return f"make {plan.label(new)} ({new}) the issuer on {e.node} ({e.pki})"
        case _:
            assert_never(e)


def _gate_text(plan: Plan, g: op.Gate) -> str:
    return f"gate after {g.after} ({g.pki} API with {plan.label(g.credential.issuer)})"


def _listing(items: list[str], most: int = 5) -> str:
    return "; ".join(items[:most]) + (f" (and {len(items) - most} more)" if len(items) > most else "")


def _differences(got: Plan, want: Plan, got_doc: dict[str, Any], want_doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    got_phases = [p.name for p in got.phases]
    want_phases = [p.name for p in want.phases]
    if sorted(got_phases) == sorted(want_phases) and got_phases != want_phases:
        out.append(f"phases are reordered: {' -> '.join(got_phases)} (the planner's order: {' -> '.join(want_phases)})")
    elif got_phases != want_phases:
        out.append(f"phases {', '.join(got_phases) or 'none'}, where the desired state asks for "
                   f"{', '.join(want_phases) or 'none'}")
    want_swaps = {(e.node, e.pki): e.new for e in want.edits if isinstance(e, op.SwapIssuer)}
    for e in got.edits:
        if isinstance(e, op.SwapIssuer) and want_swaps.get((e.node, e.pki), e.new) != e.new:
            new = want_swaps[(e.node, e.pki)]
            out.append(f"issuer changed on {e.node} ({e.pki}): {got.label(e.new)} ({e.new}), but the desired state "
                       f"asks for {want.label(new)} ({new})")
    got_edits, want_edits = set(got.edits), set(want.edits)
    extra = [_edit_text(got, e) for e in got.edits if e not in want_edits]
    missing = [_edit_text(want, e) for e in want.edits if e not in got_edits]
    if extra:
        out.append("steps the desired state does not ask for: " + _listing(extra))
    if missing:
        out.append("steps the desired state asks for are missing: " + _listing(missing))
    moved = [(p.name, e) for p in got.phases for e in p.edits] != [(p.name, e) for p in want.phases for e in p.edits]
    if not extra and not missing and got_phases == want_phases and moved:
        out.append("edits are moved between phases or reordered")
    got_gates, want_gates = list(got.gates), list(want.gates)
    dropped = [g for g in want_gates if g not in got_gates]
    added = [g for g in got_gates if g not in want_gates]
    if dropped:
        out.append("gates dropped: " + "; ".join(_gate_text(want, g) for g in dropped))
    if added:
        out.append("gates the planner does not make: " + "; ".join(_gate_text(got, g) for g in added))
    if set(got.outputs) != set(want.outputs):
        out.append("outputs differ: " + ", ".join(f"{o.output} from {got.label(o.ca)}" for o in got.outputs)
                   + " (expected: " + ", ".join(f"{o.output} from {want.label(o.ca)}" for o in want.outputs) + ")")
    if not out:
        for key in sorted(want_doc):
            if got_doc.get(key) != want_doc[key]:
                out.append(f"its {key!r} section differs from the plan the desired state makes")
    return out


def verified_plan(
    doc: dict[str, Any],
    source: str,
    desired: DesiredState,
    live: LiveCluster,
    resolved: Resolved,
    operator: OperatorCredential | None,
    now: dt.datetime,
) -> Plan:
    """The plan to apply: the one recomputed from the live configs and the desired state, after
    proving the decoded one is that very plan and passes the safety check. Raises otherwise."""
    check_structure(doc, source)
    for pki_name, spec in desired.trust.items():
        for ref in (spec.issuer, *spec.accepted):
            if not ref.startswith("sha256:") and ref not in resolved.refs:
                raise KeystoreError(
                    f"{source}: the key of authority {ref!r} ({pki_name}), generated when the plan was made, is "
                    f"missing from the keystore {desired.keystore}",
                    hint="restore the keystore from its backup, or make a new plan; nothing was changed",
                )
    got = from_document(doc)
    known = set(resolved.material)
    foreign = [a for a in got.authorities if a.fingerprint not in known]
    if foreign:
        names = "; ".join(f"{a.label} ({a.fingerprint}, {a.subject})" for a in foreign)
        raise PlanFileError(
            f"{source}: refusing to apply: the plan names CAs that neither {desired.path} names nor any node "
            f"trusts: {names}",
            hint=_HINT,
        )
    inp = PlanInput(
        cluster=desired.cluster,
        nodes=live.nodes,
        desired=resolved.desired,
        authorities=resolved.authorities(),
        now=now,
        outputs=planned_outputs(desired, check_outputs(desired, live, now)),
        operator=operator,
    )
    unsafe: str | None = None
    try:
        check_plan(got, inp)
    except UnsafePlan as exc:
        unsafe = str(exc)
    except (KeyError, ValueError) as exc:
        unsafe = f"the plan is inconsistent ({exc})"
    try:
        want = make_plan(inp)
    except (PlanningError, UnsafePlan) as exc:
        raise UnsafePlanError(
            f"{source}: refusing to apply: {desired.path} no longer makes a safe plan from the live configs: {exc}",
            hint=_HINT,
        ) from None
    want_doc = to_document(want)
    paths = {"talosconfig": desired.talosconfig_output, "kubeconfig": desired.kubeconfig_output,
             "secrets": desired.secrets}
    for phase in want_doc["phases"]:
        for out in phase["outputs"]:
            out["path"] = str(paths[out["output"]])
    got_doc = {k: doc.get(k) for k in want_doc}
    if got_doc != want_doc:  # every step, gate, output, CA, node, summary line and warning
        differences = _differences(got, want, got_doc, want_doc)
        if unsafe:
            differences.append(f"and the safety check refuses it: {unsafe}")
        raise PlanFileError(
            f"{source}: refusing to apply: the plan is not the one {desired.path} asks for: " + "; ".join(differences),
            hint=_HINT,
        )
    if unsafe:
        raise UnsafePlanError(f"{source}: refusing to apply: the safety check fails: {unsafe}", hint=_HINT)
    preflight_outputs(desired, want)
    return want


def preflight_outputs(desired: DesiredState, plan: Plan) -> None:
    """Before any node changes: every output can be written (a file path whose folder exists or can
    be made), secrets.yaml is a secrets bundle, a kubeconfig to merge into is one. Finding out after
    the last gate would leave the new CA's only copies in the keystore."""
    from trustplan.formats.outputs import read_secrets
    from trustplan.system.safeio import check_writable

    paths = {"talosconfig": desired.talosconfig_output, "kubeconfig": desired.kubeconfig_output,
             "secrets": desired.secrets}
    for out in plan.outputs:
        path = paths[out.output]
        if path is None:
            continue
        check_writable(path, f"the {out.output} output")
        if out.output == "secrets":
            read_secrets(path)
        if out.output == "kubeconfig" and desired.kubeconfig_merge and path.exists():
            from trustplan.system.safeio import read_regular
            from trustplan.talos.machineconfig import load_yaml

            try:
                existing = load_yaml(read_regular(path, what="kubeconfig to merge into"))
            except Exception as exc:  # noqa: BLE001 - reported as the input error it is
                raise PlanFileError(f"{path}: cannot merge the new kubeconfig into it: {exc}", hint=_HINT) from None
            if existing is not None and not isinstance(existing, dict):
                raise PlanFileError(f"{path}: cannot merge the new kubeconfig into it: not a kubeconfig", hint=_HINT)


def operator_of(
    desired: DesiredState, provider: Provider, live: LiveCluster, reader: Credential | None
) -> OperatorCredential | None:
    """The credential the plan's accept phase was made for (as engine.make derives it)."""
    if reader is not None:
        return OperatorCredential(reader.issuer, reader.trusted)
    from trustplan.engine.planning import _operator

    return _operator(desired, provider, live)


__all__ = ["check_structure", "operator_of", "verified_plan"]

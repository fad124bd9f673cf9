"""Apply trusts only what it can recompute: check a decoded plan against the live cluster and the
desired state before any node is touched.

    verified_plan(saved, ...) -> Plan   re-run the safety check on the decoded plan, re-derive the
                                        plan the desired state asks for from the live configs, and
                                        refuse (naming what differs) unless both are the same plan;
                                        returns the recomputed plan, whose CA certificates come from
                                        the desired state, the keystore and the nodes, not the file.

The plan file's SHA-256 proves only that the bytes were not damaged: anyone who can change the file
can recompute it. A signature proves who made a plan; this module proves what it does. (That the
document's parts fit together is checked by the decoder: trustplan.formats.planfile.checks.)
"""

from __future__ import annotations

import datetime as dt
from typing import assert_never

from trustplan.engine.authorities import Resolved
from trustplan.engine.live import LiveCluster
from trustplan.engine.planning import plan_input
from trustplan.errors import KeystoreError, PlanFileError, UnsafePlanError
from trustplan.formats.desired import DesiredState
from trustplan.formats.planfile.savedplan import SavedPlan, differing_sections
from trustplan.planner import (
    Credential,
    Plan,
    PlanningError,
    UnsafePlan,
    check_plan,
    make_plan,
)
from trustplan.planner import ops as op
from trustplan.planner.model import PKI
from trustplan.providers.base import Provider, TLSIdentity

_HINT = "nothing was sent to any node; make a new plan with `trustplan plan -o plan.bin` and review it"


# --- comparing a decoded plan with the recomputed one -------------------------------------------------


def _edit_text(plan: Plan, e: op.Edit) -> str:
    match e:
        case op.AcceptCA(ca=ca):
            return f"accept {plan.label(ca)} ({ca}) on {e.node} ({e.pki})"
        case op.RemoveCA(ca=ca):
            return f"remove {plan.label(ca)} ({ca}) from {e.node} ({e.pki})"
        case op.SwapIssuer(new=new):
            return f"make {plan.label(new)} ({new}) the issuer on {e.node} ({e.pki})"
        case op.MoveToDocument():
            return f"move {e.pki} into its 1.14 document on {e.node}"
        case _:
            assert_never(e)


def _gate_text(plan: Plan, g: op.Gate) -> str:
    return f"gate after {g.after} ({g.pki} API with {plan.label(g.credential.issuer)})"


def _listing(items: list[str], most: int = 5) -> str:
    return "; ".join(items[:most]) + (f" (and {len(items) - most} more)" if len(items) > most else "")


def _differences(got: Plan, want: Plan, sections: tuple[str, ...]) -> list[str]:
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
        out += [f"its {key!r} section differs from the plan the desired state makes" for key in sections]
    return out


def verified_plan(
    saved: SavedPlan,
    source: str,
    desired: DesiredState,
    live: LiveCluster,
    resolved: Resolved,
    operator: Credential | None,
    now: dt.datetime,
    swaps: tuple[tuple[PKI, dt.datetime], ...] = (),
    tokens: tuple[str, ...] = (),
) -> Plan:
    """The plan to apply: the one recomputed from the live configs and the desired state, after
    proving the decoded one is that very plan and passes the safety check. Raises otherwise."""
    for pki_name, spec in desired.trust.items():
        for ref in (spec.issuer, *spec.accepted):
            if not ref.startswith("sha256:") and ref not in resolved.refs:
                raise KeystoreError(
                    f"{source}: the key of authority {ref!r} ({pki_name}), generated when the plan was made, is "
                    f"missing from the keystore {desired.keystore}",
                    hint="restore the keystore from its backup, or make a new plan; nothing was changed",
                )
    got = saved.plan
    known = set(resolved.material) | set(resolved.keys)
    foreign = [a for a in got.authorities if a.fingerprint not in known]
    if foreign:
        names = "; ".join(f"{a.label} ({a.fingerprint}, {a.subject})" for a in foreign)
        raise PlanFileError(
            f"{source}: refusing to apply: the plan names CAs that neither {desired.path} names nor any node "
            f"trusts: {names}",
            hint=_HINT,
        )
    inp = plan_input(desired, live, resolved, operator, now, None, swaps, tokens)
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
    # every step, gate, output, CA, node, summary line and warning
    sections = differing_sections(saved, want, desired.saved_output_paths())
    if sections:
        differences = _differences(got, want, sections)
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

    paths = desired.output_paths()
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
    desired: DesiredState, provider: Provider, live: LiveCluster, reader: TLSIdentity | None
) -> Credential | None:
    """The credential the plan's accept phase was made for (as engine.make derives it)."""
    if reader is not None:
        return Credential(reader.issuer, reader.trusted)
    from trustplan.engine.access import operator_credential

    return operator_credential(desired, provider, live)


__all__ = ["operator_of", "verified_plan"]

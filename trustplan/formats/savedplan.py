"""The saved plan, typed: what `plan.bin` holds, read once by the codec (trustplan.formats.planfile)
and from then on only by its fields.

    SavedPlan    the Plan (steps, CAs, nodes, typed warnings), its Bindings, where each output is
                 written, the rollout apply runs with, who signed the file, and the canonical JSON
    Bindings     what the plan was made from and for: tool, time window, provider, desired-state
                 digest, state lineage and serial
    document(saved parts) -> dict / from_document(doc) -> SavedPlan: the mapping to and from the
                 plan document (schemas/plan.schema.json); only the codec calls them
    differing_sections(saved, plan, paths)   which sections of the document two plans disagree on

Every field a renderer, `show`, `apply` or a policy reads is here; the JSON text itself is kept as
bytes (`SavedPlan.document`), for `--format json` and for writing the file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trustplan.planner import Plan
from trustplan.planner import document as plandoc
from trustplan.planner.ops import OutputKind, WriteOutput
from trustplan.planner.timestamps import iso_time, parse_time

FORMAT_VERSION = 1
#: Additive changes within format 1 this trustplan writes (1.1: `new`, warning_details; 1.2: rollout).
FORMAT_MINOR = 2

Provider = Literal["files", "talos"]


#: providers whose verification gates check the configs themselves (a model of the nodes): no node is
#: contacted. Renderers label those gates as model checks.
OFFLINE_PROVIDERS: frozenset[str] = frozenset({"files"})


@dataclass(frozen=True)
class Bindings:
    """What a plan was computed from and is valid for; apply refuses it when any of these changed."""

    tool_version: str
    created: dt.datetime
    expires: dt.datetime
    provider: Provider
    desired_digest: str
    lineage: str | None
    serial: int

    @property
    def offline(self) -> bool:
        """The plan's gates are model checks of the configs (OFFLINE_PROVIDERS), not calls to nodes."""
        return self.provider in OFFLINE_PROVIDERS


@dataclass(frozen=True)
class PlanRollout:
    """How apply runs each phase, as the plan saved it: nodes at once per role (control planes
    first), canary workers, nodes a gate probes at once."""

    controlplane: int
    worker: int
    canary: int
    gates: int
    #: what one node's read took while planning (milliseconds, the first node to answer): the PR
    #: comment's duration estimate. None: not measured (plans of before, or made offline)
    read_ms: float | None = None


@dataclass(frozen=True)
class SavedOutput:
    """A file the plan writes after its last gate (before remove): the step and its path."""

    step: WriteOutput
    path: str | None


@dataclass(frozen=True)
class SavedPlan:
    """A plan as saved: built by the codec only (planfile.new for a fresh plan, planfile.decode for a
    file), so its fields and `document` always say the same thing."""

    plan: Plan
    bindings: Bindings
    outputs: tuple[SavedOutput, ...]  # the plan's outputs, in order, with their paths
    rollout: PlanRollout | None  # None: a plan made before rollouts were saved
    format_minor: int
    #: the SHA-256 fingerprint of the Ed25519 key that signed the file (None: unsigned, or not saved)
    signer: str | None = None
    #: top-level sections of the document that say something other than its steps: a doctored
    #: summary, or fields of a newer format. Shown as written; apply refuses the plan.
    inconsistent: tuple[str, ...] = ()
    #: the canonical JSON of the plan document (what the file holds, and `--format json` prints)
    document: bytes = field(default=b"", repr=False, compare=False)

    def path_of(self, output: OutputKind) -> str | None:
        return next((o.path for o in self.outputs if o.step.output == output), None)


def document(
    plan: Plan,
    bindings: Bindings,
    paths: Mapping[OutputKind, str],
    rollout: PlanRollout | None,
    format_minor: int = FORMAT_MINOR,
) -> dict[str, Any]:
    """The plan document: the plan's own content, its output paths, the bindings."""
    doc = _content(plan, paths)
    doc.update(
        format_version=FORMAT_VERSION,
        format_minor=format_minor,
        tool_version=bindings.tool_version,
        created=iso_time(bindings.created),
        expires=iso_time(bindings.expires),
        provider=bindings.provider,
        desired_digest=bindings.desired_digest,
        state={"lineage": bindings.lineage, "serial": bindings.serial},
    )
    if rollout is not None:
        doc["rollout"] = {"controlplane": rollout.controlplane, "worker": rollout.worker,
                          "canary": rollout.canary, "gates": rollout.gates}
        if rollout.read_ms is not None:
            doc["rollout"]["read_ms"] = round(rollout.read_ms, 1)
    return doc


def _content(plan: Plan, paths: Mapping[OutputKind, str | None]) -> dict[str, Any]:
    """What a plan says, in the document's words: every step, gate, output and its path, CA, node,
    summary line and warning (not the bindings)."""
    doc = plandoc.to_document(plan)
    for phase in doc["phases"]:
        for out in phase["outputs"]:
            if paths.get(out["output"]) is not None:
                out["path"] = paths[out["output"]]
    return doc


def differing_sections(saved: SavedPlan, plan: Plan, paths: Mapping[OutputKind, str | None]) -> tuple[str, ...]:
    """The top-level sections of `saved`'s document that would not be written for `plan` (with its
    outputs at `paths`): what apply names when a saved plan is not the one it recomputes."""
    got = _content(saved.plan, {o.step.output: o.path for o in saved.outputs})
    want = _content(plan, paths)
    return tuple(k for k in sorted(want) if got.get(k) != want[k] or k in saved.inconsistent)


def from_document(doc: dict[str, Any], canonical: bytes, signer: str | None) -> SavedPlan:
    """The typed plan of a schema-valid, structurally checked document (planfile.decode)."""
    plan = plandoc.from_document(doc)
    bindings = Bindings(
        tool_version=doc["tool_version"],
        created=parse_time(doc["created"]),
        expires=parse_time(doc["expires"]),
        provider=doc["provider"],
        desired_digest=doc["desired_digest"],
        lineage=doc["state"]["lineage"],
        serial=doc["state"]["serial"],
    )
    paths: dict[OutputKind, str] = {}
    for phase in doc["phases"]:
        for out in phase["outputs"]:
            if "path" in out:
                paths.setdefault(out["output"], out["path"])
    r = doc.get("rollout")
    rollout = PlanRollout(r["controlplane"], r["worker"], r["canary"], r["gates"], r.get("read_ms")) if r else None
    minor = doc.get("format_minor", 0)
    # what the typed plan says, serialized again: any section that differs was not written by the
    # planner from these steps (a summary edited to hide a remove, fields of a newer format)
    again = _content(plan, paths)
    inconsistent = tuple(k for k in sorted(again) if k in doc and doc[k] != again[k])
    return SavedPlan(
        plan=plan,
        bindings=bindings,
        outputs=tuple(SavedOutput(o, paths.get(o.output)) for o in plan.outputs),
        rollout=rollout,
        format_minor=minor,
        signer=signer,
        inconsistent=inconsistent,
        document=canonical,
    )

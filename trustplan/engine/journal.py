"""The journal of an apply: one Step per thing the runner did (a node's write, a gate, an output
file, a confirmation...), in order. The state's history records each as its document (to_document):
the keys it has, in this order, the same as before the journal was typed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast


@dataclass(frozen=True)
class Step:
    """`phase` the plan phase (a rollback's are prefixed `rollback `), `kind` what was done (write,
    gate, output, kubelet, confirm, recertify, members, foreign), `outcome` ok/failed (or kept/stopped
    for a foreign edit); the rest only when it applies."""

    phase: str
    kind: str
    outcome: str
    node: str | None = None
    pki: str | None = None
    detail: str | None = None
    message: str | None = None
    mode: str | None = None

    def to_document(self) -> dict[str, str]:
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_document(cls, doc: Mapping[str, object]) -> Step:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in doc.items() if k in names})

    def ok(self, kind: str) -> bool:
        return self.kind == kind and self.outcome == "ok"


Status = Literal["applied", "failed"]


@dataclass(frozen=True)
class HistoryEntry:
    """One apply as the state's history records it: `serial` the state serial it wrote, `status`
    applied or failed (`error` then says why), `steps` its journal in order."""

    serial: int
    plan_digest: str
    started: str
    finished: str
    status: Status
    steps: tuple[Step, ...]
    error: str | None = None

    def to_document(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "serial": self.serial,
            "plan_digest": self.plan_digest,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "steps": [s.to_document() for s in self.steps],
        }
        if self.error is not None:
            doc["error"] = self.error
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, object]) -> HistoryEntry:
        """From a history entry of a state that passed schemas/state.schema.json."""
        steps = cast(Sequence[Mapping[str, object]], doc["steps"])
        error = doc.get("error")
        return cls(
            serial=int(cast(int, doc["serial"])),
            plan_digest=str(doc["plan_digest"]),
            started=str(doc["started"]),
            finished=str(doc["finished"]),
            status="failed" if doc["status"] == "failed" else "applied",
            steps=tuple(Step.from_document(s) for s in steps),
            error=None if error is None else str(error),
        )

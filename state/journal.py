"""The journal of an apply: one Step per thing the runner did (a node's write, a gate, an output
file, a confirmation...), in order, and the HistoryEntry that records an apply in the state's history
(trustplan.state.document). Each is written as its document (to_document): the keys it has, the same
as before the journal was typed (tests/test_state_golden.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict


class StepJSON(TypedDict):
    phase: str
    kind: str
    outcome: str
    node: NotRequired[str]
    pki: NotRequired[str]
    detail: NotRequired[str]
    message: NotRequired[str]
    mode: NotRequired[str]


Status = Literal["applied", "failed"]


class HistoryJSON(TypedDict):
    serial: int
    plan_digest: str
    started: str
    finished: str
    status: Status
    steps: list[StepJSON]
    error: NotRequired[str]


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

    def to_document(self) -> StepJSON:
        doc: StepJSON = {"phase": self.phase, "kind": self.kind, "outcome": self.outcome}
        if self.node is not None:
            doc["node"] = self.node
        if self.pki is not None:
            doc["pki"] = self.pki
        if self.detail is not None:
            doc["detail"] = self.detail
        if self.message is not None:
            doc["message"] = self.message
        if self.mode is not None:
            doc["mode"] = self.mode
        return doc

    @classmethod
    def from_document(cls, doc: StepJSON) -> Step:
        return cls(doc["phase"], doc["kind"], doc["outcome"], doc.get("node"), doc.get("pki"), doc.get("detail"),
                   doc.get("message"), doc.get("mode"))

    def ok(self, kind: str) -> bool:
        return self.kind == kind and self.outcome == "ok"


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

    def to_document(self) -> HistoryJSON:
        doc: HistoryJSON = {
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
    def from_document(cls, doc: HistoryJSON) -> HistoryEntry:
        """From a history entry of a state that passed schemas/state.schema.json."""
        return cls(
            serial=doc["serial"],
            plan_digest=doc["plan_digest"],
            started=doc["started"],
            finished=doc["finished"],
            status=doc["status"],
            steps=tuple(Step.from_document(s) for s in doc["steps"]),
            error=doc.get("error"),
        )

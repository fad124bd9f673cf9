"""The journal of an apply: one Step per thing the runner did (a node's write, a gate, an output
file, a confirmation...), in order. The state's history records each as its document (to_document):
the keys it has, in this order, the same as before the journal was typed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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
    def from_document(cls, doc: dict[str, Any]) -> Step:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in doc.items() if k in names})

    def ok(self, kind: str) -> bool:
        return self.kind == kind and self.outcome == "ok"

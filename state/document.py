"""The state document: public data only (certificates and fingerprints), safe to commit.

{
  "version": 1, "lineage": "<uuid>", "serial": 3, "cluster": "demo",
  "authorities": {"sha256:..": {"name", "pki", "subject", "algorithm", "not_before", "not_after", "certificate"}},
  "nodes": {"10.5.0.2": {"role", "config_digest", "talos": {"issuer", "accepted"}, "kubernetes": {...}}},
  "swaps": {"talos": "<when its last swap finished>"},           (optional)
  "history_compacted": 4,                                         (optional)
  "history": [{"serial", "plan_digest", "started", "finished", "status", "steps": [...]}]
}

Typed twice, like the plan: the file's JSON as TypedDicts (StateJSON, what `parse` returns once
schemas/state.schema.json accepts it, and what `dump` writes), and the frozen dataclasses the tool
works with (StateDocument and its records, `from_document` / `to_document`). `load` and `encode` go
from bytes to a StateDocument and back; a file read and written back is byte-identical
(tests/test_state_golden.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

from trustplan.state.journal import HistoryEntry, HistoryJSON

from trustplan import schemas
from trustplan.errors import StateError

Role = Literal["controlplane", "worker"]


class TrustJSON(TypedDict):
    issuer: str | None
    accepted: list[str]


class NodeJSON(TypedDict):
    role: Role
    config_digest: str
    talos: TrustJSON
    kubernetes: TrustJSON


class AuthorityJSON(TypedDict):
    name: str | None
    pki: str
    subject: str
    algorithm: str
    not_before: str
    not_after: str
    certificate: str


class StateJSON(TypedDict):
    version: Literal[1]
    lineage: str | None
    serial: int
    cluster: str
    authorities: dict[str, AuthorityJSON]
    nodes: dict[str, NodeJSON]
    history: list[HistoryJSON]
    swaps: NotRequired[dict[str, str]]
    history_compacted: NotRequired[int]


@dataclass(frozen=True)
class TrustRecord:
    """What a node's config trusted for one PKI when the state was written: the issuing CA and the
    accepted CAs, by fingerprint."""

    issuer: str | None
    accepted: tuple[str, ...] = ()

    def to_document(self) -> TrustJSON:
        return {"issuer": self.issuer, "accepted": list(self.accepted)}

    @classmethod
    def from_document(cls, doc: TrustJSON) -> TrustRecord:
        return cls(doc["issuer"], tuple(doc["accepted"]))


@dataclass(frozen=True)
class NodeRecord:
    role: Role
    config_digest: str
    talos: TrustRecord
    kubernetes: TrustRecord

    def trust(self, pki: str) -> TrustRecord | None:
        """The recorded trust of `pki` (the state records the Talos and Kubernetes API CAs)."""
        return self.talos if pki == "talos" else self.kubernetes if pki == "kubernetes" else None

    def to_document(self) -> NodeJSON:
        return {"role": self.role, "config_digest": self.config_digest, "talos": self.talos.to_document(),
                "kubernetes": self.kubernetes.to_document()}

    @classmethod
    def from_document(cls, doc: NodeJSON) -> NodeRecord:
        return cls(doc["role"], doc["config_digest"], TrustRecord.from_document(doc["talos"]),
                   TrustRecord.from_document(doc["kubernetes"]))


@dataclass(frozen=True)
class AuthorityRecord:
    """A CA the state has seen: its name in the desired state (None when it had none), its PKI, and
    its public certificate (PEM); times as ISO 8601 UTC."""

    name: str | None
    pki: str
    subject: str
    algorithm: str
    not_before: str
    not_after: str
    certificate: str

    def to_document(self) -> AuthorityJSON:
        return {"name": self.name, "pki": self.pki, "subject": self.subject, "algorithm": self.algorithm,
                "not_before": self.not_before, "not_after": self.not_after, "certificate": self.certificate}

    @classmethod
    def from_document(cls, doc: AuthorityJSON) -> AuthorityRecord:
        return cls(doc["name"], doc["pki"], doc["subject"], doc["algorithm"], doc["not_before"], doc["not_after"],
                   doc["certificate"])


@dataclass(frozen=True)
class StateDocument:
    """The state of one cluster: `serial` counts the applies recorded (0: none yet, no `lineage`),
    `authorities` and `nodes` what the last one left, `history` every apply in order (the oldest
    `history_compacted` of them dropped by a size-limited backend), `swaps` when each credential
    kind's last swap finished everywhere (the service-account drain counts from it)."""

    cluster: str
    lineage: str | None = None
    serial: int = 0
    authorities: Mapping[str, AuthorityRecord] = field(default_factory=dict)
    nodes: Mapping[str, NodeRecord] = field(default_factory=dict)
    history: tuple[HistoryEntry, ...] = ()
    swaps: Mapping[str, str] | None = None
    history_compacted: int | None = None

    def to_document(self) -> StateJSON:
        doc: StateJSON = {
            "version": 1,
            "lineage": self.lineage,
            "serial": self.serial,
            "cluster": self.cluster,
            "authorities": {fp: a.to_document() for fp, a in self.authorities.items()},
            "nodes": {address: n.to_document() for address, n in self.nodes.items()},
            "history": [h.to_document() for h in self.history],
        }
        if self.swaps is not None:
            doc["swaps"] = dict(self.swaps)
        if self.history_compacted is not None:
            doc["history_compacted"] = self.history_compacted
        return doc

    @classmethod
    def from_document(cls, doc: StateJSON) -> StateDocument:
        """From a document schemas/state.schema.json accepted (`parse`)."""
        swaps = doc.get("swaps")
        return cls(
            cluster=doc["cluster"],
            lineage=doc["lineage"],
            serial=doc["serial"],
            authorities={fp: AuthorityRecord.from_document(a) for fp, a in doc["authorities"].items()},
            nodes={address: NodeRecord.from_document(n) for address, n in doc["nodes"].items()},
            history=tuple(HistoryEntry.from_document(h) for h in doc["history"]),
            swaps=dict(swaps) if swaps is not None else None,
            history_compacted=doc.get("history_compacted"),
        )


def empty_state(cluster: str) -> StateDocument:
    """The state before the first apply: serial 0, no lineage."""
    return StateDocument(cluster)


def parse(data: bytes, source: str) -> StateJSON:
    """The state file's JSON, once schemas/state.schema.json accepts it; else one StateError naming
    `source`, the field (its JSON path) and the rule it breaks."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"{source}: state file is not valid JSON ({exc})") from None
    except RecursionError:
        raise StateError(f"{source}: state file is nested too deeply to be a trustplan state") from None
    result: StateJSON = doc
    if schemas.is_valid("state", doc):
        return result
    import jsonschema  # ~0.1 s: only to word the error of an invalid document

    try:
        schemas.validator("state").validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise StateError(f"{source}: {where}: {exc.message} (schemas/state.schema.json)") from None
    except RecursionError:
        raise StateError(f"{source}: state file is nested too deeply to be a trustplan state") from None
    return result


def dump(doc: StateJSON) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def load(data: bytes, source: str) -> StateDocument:
    """A state file's bytes as a StateDocument (StateError naming `source` and the field when bad)."""
    return StateDocument.from_document(parse(data, source))


def encode(state: StateDocument) -> bytes:
    """The state file's bytes: canonical JSON (sorted keys, two-space indent, one final newline)."""
    return dump(state.to_document())

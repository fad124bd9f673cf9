"""The planner's inputs: authorities, live nodes, desired trust. Plain frozen data, no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

PKI = Literal["talos", "kubernetes"]
PKIS: tuple[PKI, ...] = ("talos", "kubernetes")
Role = Literal["controlplane", "worker"]
Source = Literal["generate", "import", "live"]

PKI_TITLE: dict[PKI, str] = {"talos": "Talos API", "kubernetes": "Kubernetes API"}


@dataclass(frozen=True)
class Authority:
    """A CA the plan refers to: public facts only (never a key)."""

    fingerprint: str
    pki: PKI
    source: Source
    subject: str
    algorithm: str
    not_before: dt.datetime
    not_after: dt.datetime
    cert_pem: str = field(repr=False)
    key_available: bool
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.fingerprint[: len("sha256:") + 12]


@dataclass(frozen=True)
class LiveTrust:
    """One PKI's CA fields on one node, by fingerprint."""

    issuer: str | None
    issuer_has_key: bool
    accepted: tuple[str, ...]

    @property
    def trusted(self) -> frozenset[str]:
        return frozenset(self.accepted) | ({self.issuer} if self.issuer else frozenset())


@dataclass(frozen=True)
class LiveNode:
    """A node as read from its live config."""

    address: str
    role: Role  # from machine.type (init counts as controlplane)
    config_digest: str
    talos: LiveTrust
    kubernetes: LiveTrust
    declared_role: Role | None = None  # from cluster.nodes, when the desired state lists roles
    #: Talos API client certs the node's own apid was seen to accept / refuse (workers, probed
    #: directly): a worker's client-trust bundle comes from trustd, not from its config
    probed_accepts: tuple[str, ...] = ()
    probed_refuses: tuple[str, ...] = ()

    def trust(self, pki: PKI) -> LiveTrust:
        return self.talos if pki == "talos" else self.kubernetes


@dataclass(frozen=True)
class DesiredTrust:
    """What one managed PKI should look like on every node once the plan has run."""

    pki: PKI
    issuer: str
    accepted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Credential:
    """A client identity, by fingerprint: a cert issued by `issuer`, trusting the server CAs
    `trusted`. The operator's (e.g. the talosconfig's cert, PlanInput.operator) and the ones a plan's
    phases are sent with and its gates prove (ops.Phase.credential, ops.Gate.credential) alike."""

    issuer: str  # a CA fingerprint (the operator's own CA for the operator's credential)
    trusted: tuple[str, ...]  # fingerprints of the server CAs the client accepts


@dataclass(frozen=True)
class Outputs:
    """Which outputs the desired state configures, and which of them do not work against the live
    cluster right now (`refresh`: refused, missing, expired, or a secrets.yaml with another CA):
    those are written even when no node changes."""

    talosconfig: bool = False
    kubeconfig: bool = False
    secrets: bool = False
    refresh: tuple[str, ...] = ()  # "talosconfig" | "kubeconfig" | "secrets"


@dataclass(frozen=True)
class PlanInput:
    """Everything the planner needs; the shell gathers it (reads files and nodes) and passes it in."""

    cluster: str
    nodes: tuple[LiveNode, ...]
    desired: tuple[DesiredTrust, ...]
    authorities: tuple[Authority, ...]
    now: dt.datetime
    outputs: Outputs = Outputs()
    operator: Credential | None = None  # None: files, where no credential is used

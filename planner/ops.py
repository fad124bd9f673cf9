"""The closed set of plan steps. Renderers, the applier and the safety check `match` on these.

Edit  = AcceptCA | SwapIssuer | RemoveCA     changes to one node's CA fields for one PKI
Gate                                        a verification between phases
WriteOutput                                 a file written after the last gate
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from trustplan.planner.model import PKI, Role

PhaseName = Literal["accept", "swap", "remove", "outputs"]
PHASES: tuple[PhaseName, ...] = ("accept", "swap", "remove", "outputs")
OutputKind = Literal["talosconfig", "kubeconfig", "secrets"]


@dataclass(frozen=True)
class AcceptCA:
    """Add `ca` to the node's accepted CAs, so the node trusts it before it is used."""

    node: str
    role: Role
    pki: PKI
    ca: str
    kind: ClassVar[str] = "accept"
    destructive: ClassVar[bool] = False

    def reverse(self) -> RemoveCA:
        return RemoveCA(self.node, self.role, self.pki, self.ca)


@dataclass(frozen=True)
class SwapIssuer:
    """Make `new` the node's issuing CA (with its key on control planes); `old` moves to accepted."""

    node: str
    role: Role
    pki: PKI
    new: str
    old: str | None
    kind: ClassVar[str] = "swap"
    destructive: ClassVar[bool] = False

    @property
    def with_key(self) -> bool:
        return self.role == "controlplane"

    def reverse(self) -> SwapIssuer | None:
        if self.old is None:
            return None
        return SwapIssuer(self.node, self.role, self.pki, self.old, self.new)


@dataclass(frozen=True)
class RemoveCA:
    """Drop `ca` from the node's accepted CAs: from then on the node refuses what it issued."""

    node: str
    role: Role
    pki: PKI
    ca: str
    kind: ClassVar[str] = "remove"
    destructive: ClassVar[bool] = True

    def reverse(self) -> AcceptCA:
        return AcceptCA(self.node, self.role, self.pki, self.ca)


Edit = AcceptCA | SwapIssuer | RemoveCA


@dataclass(frozen=True)
class Credential:
    """A client identity in the plan: a cert issued by `issuer` (or the operator's), trusting `trusted`."""

    issuer: str  # a CA fingerprint (the operator's own CA for the operator's credential)
    trusted: tuple[str, ...]  # fingerprints of the server CAs the client accepts


@dataclass(frozen=True)
class Gate:
    """Prove `credential` reaches every node in `nodes` over the `pki` API before going on."""

    pki: PKI
    after: PhaseName
    credential: Credential
    nodes: tuple[str, ...]
    kind: ClassVar[str] = "gate"
    destructive: ClassVar[bool] = False


@dataclass(frozen=True)
class WriteOutput:
    """Write a client config (or update secrets.yaml) for the CA that is now issuing."""

    output: OutputKind
    pki: PKI
    ca: str
    kind: ClassVar[str] = "output"
    destructive: ClassVar[bool] = False


Step = Edit | Gate | WriteOutput


@dataclass(frozen=True)
class Phase:
    """A barrier: every edit of the phase is applied, then every gate passes, before the next phase.

    `credential` is what the edits of this phase are sent with over the Talos API.
    """

    name: PhaseName
    edits: tuple[Edit, ...]
    gates: tuple[Gate, ...]
    credential: Credential | None
    outputs: tuple[WriteOutput, ...] = ()

    def nodes(self) -> tuple[str, ...]:
        """The nodes this phase changes, in order, each once."""
        return tuple(dict.fromkeys(e.node for e in self.edits))

    def edits_for(self, node: str) -> tuple[Edit, ...]:
        return tuple(e for e in self.edits if e.node == node)

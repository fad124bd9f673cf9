"""The closed set of plan steps. Renderers, the applier and the safety check `match` on these, with
`assert_never` in the last case, so mypy proves every kind handled wherever an op is interpreted.

Edit  = AcceptCA | SwapIssuer | RemoveCA     changes to one node's CA fields for one PKI
      | MoveToDocument                       a legacy single value moved into its 1.14 document
Gate                                        a verification between phases
WriteOutput                                 a file written after the last gate

    apply_edit(trust, edit)   what an edit does to a node's CA fields (the planner, the safety check
                              and the config rewrite all use this one rule)
    revokes(edit)             whether a node outside the plan can lose contact with the edited node
    new_issuer(edit)          the CA an edit makes the node issue from, if any
    key_needed(edit)          the CA whose private key an edit writes into the config, if any
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal, assert_never

from trustplan.planner.model import PKI, LiveTrust, Role
from trustplan.planner.model import Credential as Credential  # what Gate and Phase hold: `op.Credential`

PhaseName = Literal["move", "accept", "swap", "remove", "outputs"]
OutputKind = Literal["talosconfig", "kubeconfig", "secrets"]


@dataclass(frozen=True)
class AcceptCA:
    """Add `ca` to the node's accepted CAs, so the node trusts it before it is used."""

    node: str
    role: Role
    pki: PKI
    ca: str
    kind: ClassVar[Literal["accept"]] = "accept"
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
    kind: ClassVar[Literal["swap"]] = "swap"
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
    kind: ClassVar[Literal["remove"]] = "remove"
    destructive: ClassVar[bool] = True

    def reverse(self) -> AcceptCA:
        return AcceptCA(self.node, self.role, self.pki, self.ca)


@dataclass(frozen=True)
class MoveToDocument:
    """Move the node's legacy single value of `pki` (e.g. cluster.serviceAccount.key) into its 1.14
    document, unchanged: the same issuer, nothing accepted yet. Trust does not change; afterwards
    the node can accept a second authority."""

    node: str
    role: Role
    pki: PKI
    kind: ClassVar[Literal["move"]] = "move"
    destructive: ClassVar[bool] = False

    def reverse(self) -> None:
        return None  # the document means what the legacy value meant: nothing to undo


Edit = AcceptCA | SwapIssuer | RemoveCA | MoveToDocument


def apply_edit(trust: LiveTrust, edit: Edit, key_available: bool = True) -> LiveTrust:
    """The CA fields after one edit: the same rule the engine uses to rewrite a config."""
    match edit:
        case AcceptCA(ca=ca):
            if ca in trust.trusted:
                return trust
            return LiveTrust(trust.issuer, trust.issuer_has_key, trust.accepted + (ca,))
        case SwapIssuer(new=new, old=old):
            accepted = tuple(c for c in trust.accepted if c != new)
            if old is not None and old != new and old not in accepted:
                accepted += (old,)
            return LiveTrust(new, edit.with_key and key_available, accepted)
        case RemoveCA(ca=ca):
            return LiveTrust(trust.issuer, trust.issuer_has_key, tuple(c for c in trust.accepted if c != ca))
        case MoveToDocument():
            return trust
        case _:
            assert_never(edit)


def revokes(edit: Edit) -> bool:
    """Whether a node outside the plan, keeping its CAs, can lose contact with the edited node: the
    node issues from a new CA (swap) or stops trusting one (remove). Adding a CA cannot."""
    match edit:
        case AcceptCA() | MoveToDocument():
            return False
        case SwapIssuer() | RemoveCA():
            return True
        case _:
            assert_never(edit)


def new_issuer(edit: Edit) -> str | None:
    """The CA the edit makes the node's issuer (a swap), or None."""
    match edit:
        case AcceptCA() | RemoveCA() | MoveToDocument():
            return None
        case SwapIssuer(new=new):
            return new
        case _:
            assert_never(edit)


def key_needed(edit: Edit) -> str | None:
    """The CA whose private key the edit writes into the node's config (a control plane's swap), or None."""
    match edit:
        case AcceptCA() | RemoveCA() | MoveToDocument():
            return None
        case SwapIssuer(new=new):
            return new if edit.with_key else None
        case _:
            assert_never(edit)


@dataclass(frozen=True)
class Gate:
    """Prove `credential` reaches every node in `nodes` over the `pki` API before going on."""

    pki: PKI
    after: PhaseName
    credential: Credential
    nodes: tuple[str, ...]
    kind: ClassVar[Literal["gate"]] = "gate"
    destructive: ClassVar[bool] = False


@dataclass(frozen=True)
class WriteOutput:
    """Write a client config (or update secrets.yaml) for the CA that is now issuing."""

    output: OutputKind
    pki: PKI
    ca: str
    kind: ClassVar[Literal["output"]] = "output"
    destructive: ClassVar[bool] = False


@dataclass(frozen=True)
class Phase:
    """A barrier: every edit of the phase is applied, then every gate passes, before the next phase.

    `credential` is what the edits of this phase are sent with over the Talos API (None: the
    operator's own, e.g. no credential at all for configs on disk); the applier follows it.
    """

    name: PhaseName
    edits: tuple[Edit, ...]
    gates: tuple[Gate, ...]
    credential: Credential | None
    outputs: tuple[WriteOutput, ...] = ()
    #: workers whose trustd bundle lags their config (probed): after the phase's edits each gets a
    #: config write that changes no CA field, so it asks a control plane's trustd again, now that the
    #: control planes trust the new CA (the engine adds the node's address to machine.certSANs)
    recertify: tuple[str, ...] = ()

    def nodes(self) -> tuple[str, ...]:
        """The nodes this phase changes, in order, each once."""
        return tuple(self._by_node)

    def edits_for(self, node: str) -> tuple[Edit, ...]:
        return self._by_node.get(node, ())

    @cached_property
    def _by_node(self) -> dict[str, tuple[Edit, ...]]:
        """The edits grouped by node, nodes in order: built once, so that asking for every node's
        edits (the safety check, the renderers) stays linear in the size of the plan."""
        out: dict[str, list[Edit]] = {}
        for e in self.edits:
            out.setdefault(e.node, []).append(e)
        return {node: tuple(edits) for node, edits in out.items()}

    @property
    def destructive(self) -> bool:
        """Whether an edit of the phase revokes trust (no way back to the old CAs after it runs)."""
        return any(e.destructive for e in self.edits)

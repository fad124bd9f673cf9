"""The planner's inputs: authorities, live nodes, desired trust. Plain frozen data, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

#: The closed set of credential kinds a plan rotates (historically "PKIs", hence the name). Code that
#: treats kinds differently `match`es on this with `assert_never` in the last case, so mypy names
#: every place a new kind must be handled; everything else reads the kind's facts from `KINDS`.
PKI = Literal["talos", "kubernetes", "aggregator", "serviceaccount", "encryption", "etcd"]
Role = Literal["controlplane", "worker"]
Source = Literal["generate", "import", "live"]
#: What an authority of a kind is: a CA (certificate + key), a signing key (a key pair without a
#: certificate: nodes accept its public key), or a symmetric secretbox key (nodes hold all of it).
Material = Literal["ca", "signing-key", "secretbox"]
#: Which nodes hold a kind: every node (the control planes issue, workers trust the certificate), or
#: the control planes alone (workers hold nothing of it and are never edited for it).
Holders = Literal["all", "controlplane"]


@dataclass(frozen=True)
class KindInfo:
    """The facts about one credential kind that the planner, the safety check and the renderers
    share. Adding a kind: a value in `PKI`, an entry here, and the `match` arms mypy then asks for."""

    title: str  # "Kubernetes API": what it belongs to
    noun: str  # "CA" | "signing key" | "key": what one authority of it is
    material: Material
    holders: Holders
    field: str  # where the issuer lives in a machine config (1.14 layout), for messages
    issues: str = "issue from"  # what the issuer does, in a swap's description
    revokes: str = "revokes what it issued on this node"  # what a remove does, in its description

    @property
    def name(self) -> str:
        """e.g. "Kubernetes API CA", "service-account signing key"."""
        return f"{self.title} {self.noun}"


KINDS: Mapping[PKI, KindInfo] = MappingProxyType(
    {
        "talos": KindInfo("Talos API", "CA", "ca", "all", "machine.ca"),
        "kubernetes": KindInfo("Kubernetes API", "CA", "ca", "all", "cluster.ca"),
        "aggregator": KindInfo("aggregator", "CA", "ca", "controlplane", "KubeAggregatorCAConfig.issuingCA"),
        "serviceaccount": KindInfo(
            "service-account",
            "signing key",
            "signing-key",
            "controlplane",
            "KubeServiceAccountConfig.issuer",
            "sign tokens with",
            "tokens it signed stop working here",
        ),
        "encryption": KindInfo(
            "encryption-at-rest",
            "key",
            "secretbox",
            "controlplane",
            "KubeEtcdEncryptionConfig",
            "encrypt Secrets with",
            "what is still encrypted with it can no longer be read here",
        ),
        "etcd": KindInfo(
            "etcd",
            "CA",
            "ca",
            "controlplane",
            "cluster.etcd.ca",
            revokes="etcd certificates it issued are refused by this member once it restarts",
        ),
    }
)
PKIS: tuple[PKI, ...] = tuple(KINDS)
#: where a Talos before 1.14 keeps a single value of a kind (nothing can be accepted beside it)
LEGACY_FIELD: Mapping[PKI, str] = MappingProxyType(
    {
        "aggregator": "cluster.aggregatorCA",
        "serviceaccount": "cluster.serviceAccount.key",
        "encryption": "cluster.secretboxEncryptionSecret",
    }
)
#: the first Talos version whose configs take the documents of every control-plane-only kind
DOCUMENTS_SINCE = "v1.14.0"
PKI_TITLE: Mapping[PKI, str] = MappingProxyType({k: i.title for k, i in KINDS.items()})


def holds(role: Role, pki: PKI) -> bool:
    """Whether a node of `role` holds credentials of kind `pki` at all."""
    return KINDS[pki].holders == "all" or role == "controlplane"


@dataclass(frozen=True)
class Authority:
    """An authority the plan refers to (a CA, a signing key, a secretbox key): public facts only,
    never a key. For a signing key `cert_pem` is its public key (PEM); for a secretbox key it is
    empty, and the fingerprint is a digest of the key that cannot be turned back into it."""

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


NO_TRUST = LiveTrust(None, False, ())


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
    #: the control-plane-only kinds (KINDS[k].holders == "controlplane") this node holds, as read
    others: tuple[tuple[PKI, LiveTrust], ...] = ()
    #: of those, the kinds held in the legacy single value (LEGACY_FIELD): nothing can be accepted
    legacy: tuple[PKI, ...] = ()
    #: the Talos version the node runs (e.g. "v1.14.1"), None when unknown (configs on disk)
    talos_version: str | None = None

    def trust(self, pki: PKI) -> LiveTrust:
        """The node's fields for `pki` (NO_TRUST for a kind it does not hold)."""
        match pki:
            case "talos":
                return self.talos
            case "kubernetes":
                return self.kubernetes
            case _:
                return dict(self.others).get(pki, NO_TRUST)

    def holds(self, pki: PKI) -> bool:
        return holds(self.role, pki)

    def trusts(self) -> dict[PKI, LiveTrust]:
        """Every kind read from the node, in KINDS order."""
        others = dict(self.others)
        return {p: self.trust(p) for p in PKIS if KINDS[p].holders == "all" or p in others}


@dataclass(frozen=True)
class DesiredTrust:
    """What one managed kind should look like on every node holding it once the plan has run."""

    pki: PKI
    issuer: str
    accepted: tuple[str, ...] = ()
    #: a signing key's token drain: the old public key is removed only this long after the swap
    #: (None: no wait; tokens signed with the old key stay valid until they expire)
    drain: dt.timedelta | None = None


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
    #: when a swap of each kind last finished everywhere (the state's record; the drain counts from it)
    swapped_at: tuple[tuple[PKI, dt.datetime], ...] = ()
    #: legacy Secret-based service-account tokens (namespace/name) signed with a key being removed
    legacy_tokens: tuple[str, ...] = ()
    #: kinds whose legacy single value may be replaced in place on a Talos before DOCUMENTS_SINCE
    #: (`plan --allow-disruptive KIND`): what it signed or encrypted breaks (drain.disruption says how)
    allow_disruptive: tuple[PKI, ...] = ()

"""The one small Protocol every provider implements, and the values that cross it.

A provider knows how to read a node's live machine config, write a new one, and check that a given
credential reaches the node. Everything else (what to change, in which order, when it is safe) is the
planner's and the engine's job. What a provider can do beyond that it declares in its `capabilities`,
and the engine asks those (never which provider it is):

    Capabilities.needs_credential    reads and writes go over an API with a client credential
    Capabilities.dry_run             write(dry_run=True) validates a config without applying it
    Capabilities.kubernetes_api      the cluster serves a Kubernetes API the gates can reach
    Capabilities.endpoints           nodes are reached through the talosconfig's endpoints
    Capabilities.kubelet             a KubeletWatcher (the kubelet's restart can be watched), or None
    Capabilities.members             a MemberLister (the cluster's own member list), or None
    Capabilities.client_trust        a ClientTrustProber (a worker's apid asked directly), or None
    Capabilities.file_modes          a ModeNotes (config files whose modes a write tightens), or None
    Capabilities.verify_many         a ManyVerifier (verify() on many nodes in one call), or None
    Capabilities.trial               a TrialWriter (a write the node reverts on its own unless
                                     confirmed: Talos's apply mode TRY), or None
    Capabilities.apiserver_certs     an ApiServerCerts (the certs a kube-apiserver runs with), or None

Implementations: files (configs on disk), memory (configs in a dict, for fast tests), talos.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from trustplan.errors import GateFailedError
    from trustplan.talos.machineconfig import Role  # only a type: the simulator imports this module
from trustplan.talos.pki import PKI


@dataclass(frozen=True)
class NodeRef:
    """A node as the desired state names it: its address (the key everywhere) and declared role."""

    address: str
    role: Role | None = None  # from cluster.nodes; None when the topology comes from the configs
    port: int = 50000

    @property
    def name(self) -> str:
        return self.address


@dataclass(frozen=True)
class NodeConfig:
    """A node's live machine config: the exact bytes and their digest (`sha256:<hex>`)."""

    node: NodeRef
    data: bytes = field(repr=False)
    digest: str
    source: str = ""  # where it came from, for messages (a file path, or "" for a node)


@dataclass(frozen=True)
class TLSIdentity:
    """A TLS client identity (cert + key PEM) and the CA bundle it trusts servers with.

    `key_pem` is standard PKCS#8 PEM. A credential is never printed: its repr names the issuer only.
    """

    pki: PKI
    issuer: str  # fingerprint of the CA that issued cert_pem
    trusted: tuple[str, ...]  # fingerprints of the CAs in ca_bundle_pem
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_bundle_pem: bytes = field(repr=False)


class Provider(Protocol):
    """What the engine needs from a cluster. Implementations: files, memory, talos."""

    @property
    def capabilities(self) -> Capabilities:
        """What this provider can do beyond read, write and verify."""
        ...

    async def read(self, node: NodeRef, credential: TLSIdentity | None) -> NodeConfig:
        """The node's live machine config. Raises NodeUnreachableError or ProviderError."""
        ...

    async def write(self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None, dry_run: bool = False) -> str:
        """Submit a full machine config (dry_run: only validate). Returns the node's message."""
        ...

    async def verify(self, node: NodeRef, credential: TLSIdentity) -> str:
        """Prove `credential` reaches the node and the node's server cert is trusted by it.

        Returns a short description (e.g. the Talos version). Raises GateFailedError.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class KubeletRestart(Protocol):
    """An open watch of one node's kubelet, from KubeletWatcher.kubelet_restart."""

    async def wait(self) -> None:
        """Until the kubelet restarted and is running and healthy again; raises after the timeout."""
        ...


class KubeletWatcher(Protocol):
    """Watches a node's kubelet restart (talos); the files provider cannot."""

    def kubelet_restart(
        self, node: NodeRef, credential: TLSIdentity | None, timeout: float
    ) -> AbstractAsyncContextManager[KubeletRestart]:
        """Open the watch; entering fails when the kubelet is not healthy right now."""
        ...


class MemberLister(Protocol):
    """Lists the cluster's members as the cluster itself sees them (talos: the discovery service)."""

    async def members(self, credential: TLSIdentity | None = None) -> list[tuple[str, str, str]]:
        """(address, role, hostname) of each member. Raises ProviderError."""
        ...


class ClientTrustProber(Protocol):
    """Asks a node's own API which client certificates it accepts (a worker's trustd bundle)."""

    async def probe_client_trust(self, node: NodeRef, credentials: list[TLSIdentity]) -> list[bool | None]:
        """Per credential: True accepted, False refused, None unknown."""
        ...


class ModeNotes(Protocol):
    """Config files on disk whose mode a write changes (files holding CA keys lose group/other bits)."""

    def tightened_modes(self, written: list[str]) -> list[str]:
        """A note per node of `written` whose file apply will write with a tighter mode."""
        ...


class ManyVerifier(Protocol):
    """verify() on many nodes with one call (talos: the endpoint fans a `nodes`-targeted call out)."""

    async def verify_many(
        self, nodes: Sequence[NodeRef], credential: TLSIdentity | None
    ) -> list[str | GateFailedError]:
        """Per node, in order: its description (as verify() returns it) or its GateFailedError."""
        ...


class ApiServerCerts(Protocol):
    """Reads the certificates a control plane's kube-apiserver runs with (talos: the COSI resource
    secrets/KubernetesDynamicCerts); the files provider cannot."""

    async def front_proxy_cert(self, node: NodeRef, credential: TLSIdentity | None = None) -> bytes:
        """Its own front-proxy client certificate (--proxy-client-cert-file), PEM; b"" when none."""
        ...


class TrialWriter(Protocol):
    """Writes a config the node reverts on its own after `timeout` seconds unless a later ordinary
    write() confirms it (talos: ApplyConfiguration mode TRY with try_mode_timeout; a later NO_REBOOT
    apply cancels the revert). The files provider cannot: a file has no timer."""

    async def write_trial(self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None, timeout: float) -> str:
        """Submit a full machine config in try mode. Returns the node's message."""
        ...


class Rebooter(Protocol):
    """Reboots a node gracefully (talos: MachineService/Reboot in its default mode: every service stops
    first, etcd hands leadership on). What restarts a Talos node's etcd: ServiceRestart refuses it."""

    async def reboot(self, node: NodeRef, credential: TLSIdentity | None) -> None:
        """Ask the node to reboot; returns once it accepted (it goes down afterwards). Raises ProviderError."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond read/write/verify. The engine asks these; it never asks which
    provider it has. The optional abilities are the provider itself, typed by what it can do."""

    needs_credential: bool  # reads/writes are sent with a client credential (the operator's talosconfig)
    dry_run: bool  # write(dry_run=True) validates without applying
    kubernetes_api: bool  # a live Kubernetes API exists: its gates go through it, not through verify()
    endpoints: bool  # nodes are reached through the talosconfig's endpoints (a new talosconfig keeps them)
    kubelet: KubeletWatcher | None = None
    members: MemberLister | None = None
    client_trust: ClientTrustProber | None = None
    file_modes: ModeNotes | None = None
    verify_many: ManyVerifier | None = None
    trial: TrialWriter | None = None
    apiserver_certs: ApiServerCerts | None = None
    #: reboots nodes, and its control planes run etcd members reachable on their address (port 2379)
    reboot: Rebooter | None = None

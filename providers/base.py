"""The one small Protocol every provider implements, and the values that cross it.

A provider knows how to read a node's live machine config, write a new one, and check that a given
credential reaches the node. Everything else (what to change, in which order, when it is safe) is the
planner's and the engine's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from trustplan.errors import GateFailedError

Role = Literal["controlplane", "worker"]


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
class Credential:
    """A TLS client identity (cert + key PEM) and the CA bundle it trusts servers with.

    `key_pem` is standard PKCS#8 PEM. A credential is never printed: its repr names the issuer only.
    """

    pki: Literal["talos", "kubernetes"]
    issuer: str  # fingerprint of the CA that issued cert_pem
    trusted: tuple[str, ...]  # fingerprints of the CAs in ca_bundle_pem
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_bundle_pem: bytes = field(repr=False)


class Provider(Protocol):
    """What the engine needs from a cluster. Implementations: files, talos (and a fake in tests)."""

    async def read(self, node: NodeRef, credential: Credential | None) -> NodeConfig:
        """The node's live machine config. Raises NodeUnreachableError or ProviderError."""
        ...

    async def write(self, node: NodeRef, data: bytes, *, credential: Credential | None, dry_run: bool = False) -> str:
        """Submit a full machine config (dry_run: only validate). Returns the node's message."""
        ...

    async def verify(self, node: NodeRef, credential: Credential) -> str:
        """Prove `credential` reaches the node and the node's server cert is trusted by it.

        Returns a short description (e.g. the Talos version). Raises GateFailedError.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class ManyVerifier(Protocol):
    """A provider that can verify many nodes with one call (talos: apid's `nodes` fan-out)."""

    async def verify_many(self, nodes: Sequence[NodeRef], credential: Credential | None) -> list[str | GateFailedError]:
        """verify() on each node, in one call: per node, in order, its description or its error."""
        ...


class KubeletRestart(Protocol):
    """An open watch of one node's kubelet, from KubeletWatcher.kubelet_restart."""

    async def wait(self) -> None:
        """Until the kubelet restarted and is running and healthy again; raises after the timeout."""
        ...


@runtime_checkable
class KubeletWatcher(Protocol):
    """A provider that can watch a node's kubelet restart (talos); the files provider cannot."""

    def kubelet_restart(
        self, node: NodeRef, credential: Credential | None, timeout: float
    ) -> AbstractAsyncContextManager[KubeletRestart]:
        """Open the watch; entering fails when the kubelet is not healthy right now."""
        ...

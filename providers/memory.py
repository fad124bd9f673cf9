"""The in-memory provider: each node's machine config is bytes in a dict. For fast tests of the engine
(httpx's MockTransport idea): no disk, no network, and a journal of every write to assert on.

It keeps the files provider's rules (a write is validated with the Talos rules first; a gate is
decided from the configs, providers.offline). With `needs_credential=True` it also plays a node's
API: a write sent with a credential is refused unless the node's current config trusts the client
cert and the client trusts the node's server cert (None is the operator's own, always let in).
"""

from __future__ import annotations

from dataclasses import dataclass

from trustplan.providers.base import Capabilities, NodeConfig, NodeRef, TLSIdentity
from trustplan.providers.offline import check_gate

from trustplan.errors import GateFailedError, ProviderError
from trustplan.talos import machineconfig, validation


@dataclass(frozen=True)
class Write:
    """One write the provider was asked for: the node, the credential's identity (None: the
    operator's own), whether it was a dry run, and the bytes."""

    node: str
    issuer: str | None
    trusted: tuple[str, ...]
    dry_run: bool
    data: bytes


class MemoryProvider:
    """Nodes held in memory: `configs` maps each node address to its machine config bytes."""

    def __init__(self, configs: dict[str, bytes], *, needs_credential: bool = False) -> None:
        self.configs = dict(configs)
        self.writes: list[Write] = []
        self._needs_credential = needs_credential

    @property
    def capabilities(self) -> Capabilities:
        """No live API: a dry run is validated here; there is no Kubernetes API, kubelet or member list."""
        return Capabilities(needs_credential=self._needs_credential, dry_run=True, kubernetes_api=False,
                            endpoints=False)

    def _config(self, node: NodeRef) -> bytes:
        try:
            return self.configs[node.address]
        except KeyError:
            raise ProviderError(f"unknown node {node.address}: not in the in-memory cluster") from None

    def _parsed(self, address: str) -> machineconfig.MachineConfig:
        return machineconfig.parse(self.configs[address], f"node {address} (in memory)")

    async def read(self, node: NodeRef, credential: TLSIdentity | None = None) -> NodeConfig:
        data = self._config(node)
        return NodeConfig(node, data, machineconfig.digest(data), source=f"node {node.address} (in memory)")

    async def write(
        self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None = None, dry_run: bool = False
    ) -> str:
        self._config(node)
        where = f"node {node.address} (in memory)"
        cfg = machineconfig.parse(data, where)
        problems = validation.validate(cfg)
        if problems:
            raise ProviderError(f"{where}: the new config fails Talos validation: " + "; ".join(problems))
        if self._needs_credential and credential is not None:
            try:
                await self.verify(node, credential)
            except GateFailedError as exc:
                raise ProviderError(f"{node.address} refused the connection: {exc}") from None
        issuer, trusted = (credential.issuer, credential.trusted) if credential is not None else (None, ())
        self.writes.append(Write(node.address, issuer, trusted, dry_run, data))
        if dry_run:
            return "valid"
        self.configs[node.address] = data
        return "written"

    async def verify(self, node: NodeRef, credential: TLSIdentity) -> str:
        """Offline gate: the node's config is valid, trusts the credential, and serves a trusted cert."""
        self._config(node)
        cps = [(f"node {a} (in memory)", cfg) for a in self.configs if (cfg := self._parsed(a)).role == "controlplane"]
        check_gate(node.address, f"node {node.address} (in memory)", self._parsed(node.address), cps, credential)
        return "config trusts the credential"

    async def close(self) -> None:
        return None

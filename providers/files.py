"""The files provider: machine configs as YAML files on disk (talosctl gen config / talhelper output).

Reads are file reads; writes validate the new config with the Talos rules and replace the file
atomically; a gate checks, offline, that the node's config on disk trusts the credential and that
the credential trusts the certificate the node would serve.
"""

from __future__ import annotations

import os
from pathlib import Path

from trustplan.providers.base import Capabilities, NodeConfig, NodeRef, TLSIdentity
from trustplan.providers.offline import check_gate

from trustplan.errors import ProviderError
from trustplan.system import safeio, safeyaml
from trustplan.system.atomic import write_atomic
from trustplan.talos import machineconfig, validation


def holds_key(cfg: machineconfig.MachineConfig) -> bool:
    """Whether a machine config carries a CA private key (a control plane's machine.ca / cluster.ca key)."""
    return any(cfg.ca_fields(p).issuer_key is not None for p in machineconfig.READ_KINDS)


def config_mode(path: Path, cfg: machineconfig.MachineConfig) -> int:
    """The mode to write a machine config with: its current one, without group/other bits when it
    holds a CA private key (0600 for a new file)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return 0o600
    return (mode & 0o700 or 0o600) if holds_key(cfg) else mode


def tightened_modes(configs: dict[str, Path], written: list[str]) -> list[str]:
    """A note for each control plane's file that apply will write without group/other bits (it
    holds CA private keys), listing its mode now; `written` are the control planes the plan changes."""
    out = []
    for address in written:
        path = configs.get(address)
        try:
            mode = os.stat(path).st_mode & 0o777 if path is not None else 0
        except OSError:
            continue
        if mode & 0o077:
            out.append(
                f"note: {path} holds CA private keys; apply writes it with mode {(mode & 0o700) or 0o600:04o} "
                f"(it is {mode:04o} now)"
            )
    return out


class FilesProvider:
    """Nodes are files: `configs` maps each node address to its machine-config path."""

    def __init__(self, configs: dict[str, Path]) -> None:
        self.configs = configs
        self._parsed: dict[Path, tuple[tuple[int, int, int], machineconfig.MachineConfig]] = {}

    @property
    def capabilities(self) -> Capabilities:
        """Files take no credential, validate a dry run offline, have no live Kubernetes API; a
        write may tighten a key-bearing file's mode."""
        return Capabilities(needs_credential=False, dry_run=True, kubernetes_api=False, endpoints=False,
                            file_modes=self)

    def tightened_modes(self, written: list[str]) -> list[str]:
        """A note per control plane of `written` whose file apply writes with a tighter mode."""
        return tightened_modes(self.configs, written)

    def _load(self, path: Path) -> machineconfig.MachineConfig:
        """The parsed config on disk, parsed again only when the file changed (gates read every
        control plane's config for every worker)."""
        st = path.stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # an atomic replace makes a new inode
        cached = self._parsed.get(path)
        if cached is None or cached[0] != stamp:
            data = safeio.read_regular(path, what="machine config file", limit=safeyaml.MAX_BYTES)
            cached = (stamp, machineconfig.parse(data, str(path)))
            self._parsed[path] = cached
        return cached[1]

    def _path(self, node: NodeRef) -> Path:
        try:
            return self.configs[node.address]
        except KeyError:
            raise ProviderError(f"unknown node {node.address}: not in cluster.machineConfigs") from None

    async def read(self, node: NodeRef, credential: TLSIdentity | None = None) -> NodeConfig:
        path = self._path(node)
        data = safeio.read_regular(
            path, what=f"machine config file for node {node.address}", limit=safeyaml.MAX_BYTES,
            hint="fix cluster.machineConfigs in the desired state",
        )
        return NodeConfig(node, data, machineconfig.digest(data), source=str(path))

    async def write(
        self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None = None, dry_run: bool = False
    ) -> str:
        path = self._path(node)
        cfg = machineconfig.parse(data, str(path))
        problems = validation.validate(cfg)
        if problems:
            raise ProviderError(
                f"{path}: the new config of {node.address} fails Talos validation: " + "; ".join(problems)
            )
        if dry_run:
            return "valid"
        write_atomic(path, data, mode=config_mode(path, cfg))
        return "written"

    async def verify(self, node: NodeRef, credential: TLSIdentity) -> str:
        """Offline gate: the config on disk is valid, trusts the credential, and serves a trusted cert."""
        path = self._path(node)
        cps = ((str(p), cfg) for p in self.configs.values() if (cfg := self._load(p)).role == "controlplane")
        check_gate(node.address, str(path), self._load(path), cps, credential)
        return "config trusts the credential"

    async def close(self) -> None:
        return None

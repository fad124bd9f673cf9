"""Read every node's live config through a provider and turn it into the planner's LiveNodes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from trustplan.errors import InputError
from trustplan.planner import LiveNode, LiveTrust
from trustplan.providers.base import NodeConfig, NodeRef, Provider, TLSIdentity
from trustplan.talos import machineconfig, pki
from trustplan.talos.machineconfig import MachineConfig


@dataclass
class LiveCA:
    """A CA found in some node's config (or a secrets file); `key_pem` when a control plane holds its
    key; `issuing_on`: where it was seen issuing (what `trustplan init` reports)."""

    ca: pki.CACert
    pki: str
    key_pem: bytes | None = field(default=None, repr=False)
    issuing_on: tuple[str, ...] = ()


@dataclass
class LiveCluster:
    nodes: tuple[LiveNode, ...]
    configs: dict[str, MachineConfig]
    raw: dict[str, NodeConfig]
    cas: dict[str, LiveCA]

    def digests(self) -> dict[str, str]:
        return {a: c.digest for a, c in self.raw.items()}


def _trust(cfg: MachineConfig, pki_name: str, cas: dict[str, LiveCA]) -> LiveTrust:
    fields = cfg.ca_fields(pki_name)  # type: ignore[arg-type]

    def note(ca: pki.CACert, path: str, key: bytes | None = None) -> str:
        entry = cas.setdefault(ca.fingerprint, LiveCA(ca, pki_name))
        if key is not None and entry.key_pem is None:
            k = pki.load_key_pem(key, cfg.source, path)
            if not pki.key_matches(ca.cert, k):
                raise InputError(cfg.source, "the CA key does not match the CA certificate", path=path)
            entry.key_pem = key
        return ca.fingerprint

    if pki_name == "talos":
        ca_path, accepted_path = "machine.ca", "machine.acceptedCAs"
    elif cfg.kube_ca_layout == "multidoc":
        ca_path, accepted_path = (
            f"{machineconfig.KUBE_CA_DOC_KIND}.issuingCA",
            f"{machineconfig.KUBE_CA_DOC_KIND}.acceptedCAs",
        )
    else:
        ca_path, accepted_path = "cluster.ca", "cluster.acceptedCAs"
    issuing, accepted_cas = fields.cas(cfg.source)
    issuer = note(issuing, ca_path, fields.issuer_key) if issuing is not None else None
    accepted = tuple(note(ca, accepted_path) for ca in accepted_cas)
    return LiveTrust(issuer, fields.issuer_key is not None, accepted)


def to_live(ref: NodeRef, cfg: MachineConfig, managed: tuple[str, ...], cas: dict[str, LiveCA]) -> LiveNode:
    """Both PKIs' trust (either Kubernetes CA layout); `managed` is kept for the callers' sake."""
    del managed
    talos = _trust(cfg, "talos", cas)
    kube = _trust(cfg, "kubernetes", cas)
    return LiveNode(ref.address, cfg.role, cfg.digest, talos, kube, ref.role)


async def read_cluster(
    provider: Provider,
    nodes: tuple[NodeRef, ...],
    managed: tuple[str, ...],
    credential: TLSIdentity | None = None,
    concurrency: int = 32,
    on_read: Callable[[str], None] | None = None,
) -> LiveCluster:
    """Read all nodes concurrently; the first failure (in node order) is raised. `on_read(address)`
    is called as each node's config arrives (progress)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(ref: NodeRef) -> NodeConfig:
        async with sem:
            config = await provider.read(ref, credential)
        if on_read is not None:
            on_read(ref.address)
        return config

    results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
    raw: dict[str, NodeConfig] = {}
    for n, r in zip(nodes, results, strict=True):
        if isinstance(r, BaseException):
            raise r
        raw[n.address] = r
    configs: dict[str, MachineConfig] = {}
    cas: dict[str, LiveCA] = {}
    live = []
    for ref in nodes:
        cfg = machineconfig.parse(raw[ref.address].data, _source(ref, raw[ref.address]))
        configs[ref.address] = cfg
        live.append(to_live(ref, cfg, managed, cas))
    return LiveCluster(tuple(live), configs, raw, cas)


def _source(ref: NodeRef, nc: NodeConfig) -> str:
    return nc.source or f"node {ref.address} (live machine config)"

"""Read every node's live config through a provider and turn it into the planner's LiveNodes."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from trustplan.errors import InputError
from trustplan.planner import LiveNode, LiveTrust
from trustplan.planner.model import KINDS, PKI, PKIS
from trustplan.providers.base import NodeConfig, NodeRef, Provider, TLSIdentity
from trustplan.talos import kubecreds, machineconfig, pki
from trustplan.talos.machineconfig import MachineConfig
from trustplan.talos.rewrite import kind_trust


@dataclass
class LiveCA:
    """A CA found in some node's config (or a secrets file); `key_pem` when a control plane holds its
    key; `issuing_on`: where it was seen issuing (what `trustplan init` reports)."""

    ca: pki.CACert
    pki: str
    key_pem: bytes | None = field(default=None, repr=False)
    issuing_on: tuple[str, ...] = ()


@dataclass
class LiveKey:
    """A control-plane-only authority found in some control plane's config (aggregator CA,
    service-account key, secretbox key); `material.secret` when a config holds the private part."""

    pki: PKI
    material: kubecreds.Material = field(repr=False)


@dataclass
class LiveCluster:
    nodes: tuple[LiveNode, ...]
    configs: dict[str, MachineConfig]
    raw: dict[str, NodeConfig]
    cas: dict[str, LiveCA]
    keys: dict[str, LiveKey] = field(default_factory=dict)

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


def to_live(
    ref: NodeRef,
    cfg: MachineConfig,
    managed: tuple[str, ...],
    cas: dict[str, LiveCA],
    keys: dict[str, LiveKey] | None = None,
) -> LiveNode:
    """Every kind's trust (either layout); a control plane's control-plane-only kinds are read
    only when managed (a config without them is not refused unless they are)."""
    talos = _trust(cfg, "talos", cas)
    kube = _trust(cfg, "kubernetes", cas)
    others: list[tuple[PKI, LiveTrust]] = []
    legacy: list[PKI] = []
    for kind in PKIS:
        if KINDS[kind].holders != "controlplane" or kind not in managed or cfg.role != "controlplane":
            continue
        fields = machineconfig.kind_fields(cfg, kind)
        if fields.layout == "absent":
            continue
        trust, found = kind_trust(kind, fields)
        others.append((kind, trust))
        legacy += [kind] if fields.layout == "legacy" else []
        for fp, m in found.items():
            entry = (keys if keys is not None else {}).setdefault(fp, LiveKey(kind, m))
            if entry.material.secret is None and m.secret is not None:
                entry.material = m
    version = install_version(cfg) if legacy else None
    return LiveNode(
        ref.address,
        cfg.role,
        cfg.digest,
        talos,
        kube,
        ref.role,
        others=tuple(others),
        legacy=tuple(legacy),
        talos_version=version,
    )


def install_version(cfg: MachineConfig) -> str | None:
    """The Talos version a config was installed with (machine.install.image's tag, e.g. v1.14.1):
    what a config on disk tells; a live node's own Version replaces it (with_versions)."""
    image = str(((cfg.v1alpha1.get("machine") or {}).get("install") or {}).get("image") or "")
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    return tag if tag.startswith("v") else None


def with_versions(live: LiveCluster, versions: dict[str, str]) -> LiveCluster:
    """The nodes with the Talos versions the nodes themselves reported (Version calls)."""
    nodes = tuple(
        dataclasses.replace(n, talos_version=versions[n.address])
        if re.fullmatch(r"v[0-9]+\.[0-9]+.*", versions.get(n.address, ""))
        else n
        for n in live.nodes
    )
    return dataclasses.replace(live, nodes=nodes)


#: how many nodes are read at once (benchmarks/rotate.py counts the read's round trips with it)
READ_CONCURRENCY = 32


async def read_cluster(
    provider: Provider,
    nodes: tuple[NodeRef, ...],
    managed: tuple[str, ...],
    credential: TLSIdentity | None = None,
    concurrency: int = READ_CONCURRENCY,
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
    keys: dict[str, LiveKey] = {}
    live = []
    for ref in nodes:
        cfg = machineconfig.parse(raw[ref.address].data, _source(ref, raw[ref.address]))
        configs[ref.address] = cfg
        live.append(to_live(ref, cfg, managed, cas, keys))
    return LiveCluster(tuple(live), configs, raw, cas, keys)


def _source(ref: NodeRef, nc: NodeConfig) -> str:
    return nc.source or f"node {ref.address} (live machine config)"

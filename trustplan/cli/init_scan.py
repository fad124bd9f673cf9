"""What `trustplan init` reads: nodes and live CAs from machine-config files, secrets.yaml or a live node,
and the commented trustplan.yaml it writes from them (docs in trustplan/cli/init.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustplan.cli.common import err
from trustplan.engine.live import LiveCA
from trustplan.errors import InputError, UnsupportedError
from trustplan.system import safeio, safeyaml
from trustplan.talos import machineconfig, pki

#: where `init` writes the desired-state schema, relative to the file it writes: editors resolve the
#: `$schema` line offline (`trustplan schema desired -o` writes it again after an upgrade)
SCHEMA_FILE = ".trustplan/desired.schema.json"
PKI_NAMES = {"talos": ("talos", "Talos API CA (machine.ca)"), "kubernetes": ("k8s", "Kubernetes API CA (cluster.ca)")}


@dataclass(frozen=True)
class FoundNode:
    address: str
    role: str
    path: Path | None = None
    why: str = ""  # where the address came from


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def node_address(cfg: machineconfig.MachineConfig, path: Path) -> tuple[str, str]:
    """The address trustplan will use for a machine config, and where it came from."""
    machine = cfg.v1alpha1.get("machine") or {}
    for i, iface in enumerate((machine.get("network") or {}).get("interfaces") or []):
        for address in (iface or {}).get("addresses") or []:
            host = str(address).split("/")[0]
            if _is_ip(host):
                return host, f"machine.network.interfaces[{i}].addresses"
    for san in machine.get("certSANs") or []:
        if _is_ip(str(san)):
            return str(san), "machine.certSANs"
    return path.stem, "the file name"


def read_machine_configs(directory: Path) -> tuple[list[FoundNode], list[machineconfig.MachineConfig]]:
    if not directory.is_dir():
        raise InputError(str(directory), "not a directory of machine configs")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    nodes: list[FoundNode] = []
    configs: list[machineconfig.MachineConfig] = []
    seen: dict[str, Path] = {}
    for path in files:
        cfg = machineconfig.parse(safeio.read_regular(path, what="machine config"), str(path))
        address, why = node_address(cfg, path)
        if address in seen:
            raise InputError(str(path), f"node address {address} (from {why}) is also the address of {seen[address]}")
        seen[address] = path
        nodes.append(FoundNode(address, cfg.role, path, why))
        configs.append(cfg)
    if not nodes:
        raise InputError(str(directory), "no machine-config files (*.yaml, *.yml) found")
    return nodes, configs


def _ca(pki_name: str, pem: bytes, where: str, found: dict[str, LiveCA]) -> None:
    ca = pki.CACert.from_pem(pem, where)
    prev = found.get(ca.fingerprint)
    found[ca.fingerprint] = LiveCA(ca, pki_name, issuing_on=(prev.issuing_on if prev else ()) + (where,))


def live_cas(configs: list[tuple[str, machineconfig.MachineConfig]]) -> dict[str, list[LiveCA]]:
    """Per PKI, the issuing CAs found on the nodes (usually one), most widely used first."""
    found: dict[str, dict[str, LiveCA]] = {"talos": {}, "kubernetes": {}}
    for where, cfg in configs:
        for pki_name in machineconfig.READ_KINDS:
            fields = cfg.ca_fields(pki_name)
            if fields.issuer is not None:
                _ca(pki_name, fields.issuer, where, found[pki_name])
    return {p: sorted(cas.values(), key=lambda c: -len(c.issuing_on)) for p, cas in found.items()}


def live_cas_from_secrets(path: Path) -> dict[str, list[LiveCA]]:
    try:
        doc = safeyaml.load(safeio.read_regular(path, what="secrets file"))
    except yaml.YAMLError as exc:
        problem, line = safeyaml.problem(exc)
        raise InputError(str(path), problem, line=line) from None
    certs = doc.get("certs") if isinstance(doc, dict) else None
    if not isinstance(certs, dict) or not all(isinstance(certs.get(k) or {}, dict) for k in ("os", "k8s")):
        raise InputError(str(path), "not a Talos secrets bundle (no 'certs' mapping with os and k8s)", path="certs")
    out: dict[str, list[LiveCA]] = {"talos": [], "kubernetes": []}
    for pki_name, key in (("talos", "os"), ("kubernetes", "k8s")):
        crt = ((certs or {}).get(key) or {}).get("crt")
        if not crt:
            raise InputError(str(path), f"no certs.{key}.crt in the secrets file", path=f"certs.{key}.crt")
        found: dict[str, LiveCA] = {}
        _ca(pki_name, pki.b64decode_pem(crt, str(path), f"certs.{key}.crt"), str(path), found)
        out[pki_name] = list(found.values())
    return out


def live_cas_from_node(talosconfig: Path, context: str | None, address: str) -> dict[str, list[LiveCA]]:
    from trustplan.providers.base import NodeRef
    from trustplan.providers.talos.provider import TalosProvider

    async def go() -> bytes:
        provider = TalosProvider(talosconfig, context, [NodeRef(address, "controlplane")])
        try:
            return (await provider.read(NodeRef(address, "controlplane"))).data
        finally:
            await provider.close()

    data = asyncio.run(go())
    return live_cas([(address, machineconfig.parse(data, f"node {address}"))])


def relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def render_yaml(
    cluster: str,
    source: str,
    cluster_lines: list[str],
    cas: dict[str, list[LiveCA]],
    year: int,
    secrets: str | None,
) -> str:
    """The desired-state file, with a comment on every field."""
    new = {p: f"{PKI_NAMES[p][0]}-{year}" for p in machineconfig.READ_KINDS}
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_FILE}",
        f'# trustplan desired state for cluster "{cluster}", written by `trustplan init` from {source}.',
        "# It rotates both root CAs (Talos API and Kubernetes API) to new CAs that trustplan generates.",
        "# Next: `trustplan validate`, then `trustplan plan -o plan.bin`, review, `trustplan apply plan.bin`.",
        "version: v1alpha1                 # format version of this file",
        "",
        "cluster:",
        f"  name: {cluster}",
        *cluster_lines,
        "",
        "# The CAs live on the nodes today. A desired state can name a live CA by its fingerprint",
        "# (`issuer: sha256:...` or in `accepted`), e.g. to keep trusting it for a while.",
    ]
    for p in machineconfig.READ_KINDS:
        prefix, title = PKI_NAMES[p]
        for i, ca in enumerate(cas.get(p, [])):
            label = f"{prefix}-current" + (f"-{i + 1}" if i else "")
            lines.append(f"#   {label}: {ca.ca.fingerprint}")
            lines.append(
                f"#     {title}, {ca.ca.subject}, {ca.ca.algorithm}, valid until {ca.ca.not_after:%Y-%m-%d}, "
                f"issuing on {len(ca.issuing_on)} of the nodes read"
            )
        if len(cas.get(p, [])) > 1:
            lines.append(f"#   (more than one {title} issues today: a rotation may be half done; plan finishes it)")
    lines += [
        "",
        "authorities:",
        "  # New CAs, generated once at plan time; their keys go to the keystore before any node sees them,",
        "  # and a re-plan reuses them. Shaped like Talos's own: 10 years, O=talos / O=kubernetes.",
        f"  {new['talos']}: {{generate: {{algorithm: ed25519}}}}",
        f"  {new['kubernetes']}: {{generate: {{algorithm: ecdsa-p256}}}}",
        "",
        "trust:",
        "  # Per PKI: `issuer` signs the nodes' certs and your new client configs once the plan has run;",
        "  # `accepted` are further CAs the nodes keep trusting. Every CA named in neither (here: the",
        "  # *-current CAs above) is removed at the end, which revokes every talosconfig / kubeconfig it issued.",
        "  # To only pre-stage the new CA, use `issuer: sha256:<current>` and `accepted: [<new>]`.",
        f"  talos: {{issuer: {new['talos']}, accepted: []}}",
        f"  kubernetes: {{issuer: {new['kubernetes']}, accepted: []}}",
        "",
        "keystore: .trustplan/keys         # where new CA keys are kept (0700 / 0600): secret, back it up",
    ]
    if secrets is not None:
        lines.append(f"secrets: {secrets}   # Talos secrets.yaml: apply updates certs.os / certs.k8s")
    lines += [
        "state: trustplan.state.json       # which CA is trusted where (public data only; safe to commit)",
        "outputs:                          # client configs written from the new issuers after the last gate",
        "  talosconfig: talosconfig",
        "  kubeconfig: kubeconfig",
        "",
    ]
    return "\n".join(lines)


def split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def discover_members(talosconfig: Path, context: str | None) -> tuple[list[str], list[str]]:
    """Control planes and workers from the cluster's member list (the discovery service)."""
    import asyncio

    from trustplan.providers.talos.provider import TalosProvider

    async def go() -> list[tuple[str, str, str]]:
        async with TalosProvider(talosconfig, context) as provider:
            return await provider.members()

    members = asyncio.run(go())
    if not members:
        raise UnsupportedError(
            "the cluster's member list is empty (is discovery enabled?)",
            hint="list the nodes with --controlplane A,B,C --worker D,E",
        )
    err.print(
        f"found {len(members)} members: " + ", ".join(f"{h} {a} ({r})" for a, r, h in members)
        + "; check these addresses (discovery can list a VIP, talos#10357)",
        markup=False,
    )
    cps = [a for a, r, _ in members if r == "controlplane"]
    return cps, [a for a, r, _ in members if r == "worker"]


def cluster_name_of(configs: list[machineconfig.MachineConfig]) -> str | None:
    for cfg in configs:
        value: Any = (cfg.v1alpha1.get("cluster") or {}).get("clusterName")
        if value:
            return str(value)
    return None


def talosconfig_context(path: Path) -> str | None:
    try:
        doc = safeyaml.load(safeio.read_regular(path, what="talosconfig"))
    except (InputError, yaml.YAMLError):
        return None
    value = doc.get("context") if isinstance(doc, dict) else None
    return str(value) if value else None

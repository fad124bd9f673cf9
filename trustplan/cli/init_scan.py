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
KEYSTORE = ".trustplan/keys"  # where init's desired state keeps the CA keys, relative to it
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


def _documents(cfg: machineconfig.MachineConfig, kind: str) -> list[dict[str, Any]]:
    return [d for d in cfg.documents if isinstance(d, dict) and d.get("kind") == kind]


def _endpoint_host(cfg: machineconfig.MachineConfig) -> str | None:
    """The host of the cluster's control-plane endpoint (v1alpha1 cluster.controlPlane.endpoint, or
    the KubeClusterConfig document's `endpoint` that talosctl v1.13+ writes)."""
    from urllib.parse import urlsplit

    values = [((cfg.v1alpha1.get("cluster") or {}).get("controlPlane") or {}).get("endpoint")]
    values += [d.get("endpoint") for d in _documents(cfg, "KubeClusterConfig")]
    for value in values:
        if value:
            host = urlsplit(str(value)).hostname
            if host:
                return host
    return None


def node_address(
    cfg: machineconfig.MachineConfig, path: Path, sole_controlplane: bool = False
) -> tuple[str, str] | None:
    """The address trustplan will use for a machine config and where it came from; None when the
    file names none (talosctl gen config's output: the address is given with --address then)."""
    machine = cfg.v1alpha1.get("machine") or {}
    for i, iface in enumerate((machine.get("network") or {}).get("interfaces") or []):
        for address in (iface or {}).get("addresses") or []:
            host = str(address).split("/")[0]
            if _is_ip(host):
                return host, f"machine.network.interfaces[{i}].addresses"
    for doc in _documents(cfg, "LinkConfig"):
        for entry in doc.get("addresses") or []:
            host = str((entry or {}).get("address", "") if isinstance(entry, dict) else entry).split("/")[0]
            if _is_ip(host):
                return host, f"LinkConfig {doc.get('name', '')} addresses".replace("  ", " ")
    for san in machine.get("certSANs") or []:
        if _is_ip(str(san)):
            return str(san), "machine.certSANs"
    if cfg.hostname:
        return cfg.hostname, "machine.network.hostname"
    for doc in _documents(cfg, "HostnameConfig"):
        if doc.get("hostname"):
            return str(doc["hostname"]), "HostnameConfig hostname"
    if sole_controlplane and cfg.role == "controlplane":
        endpoint = _endpoint_host(cfg)
        if endpoint and _is_ip(endpoint):
            return endpoint, "the control-plane endpoint (the only control-plane config)"
    return None


def _kind_of_file(data: bytes) -> str | None:
    """"secrets" for a Talos secrets bundle, "talosconfig" for a talosconfig, "desired" for a trustplan
    desired state, None otherwise (a machine config, or something parse() will name)."""
    try:
        doc = safeyaml.load(data)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("certs"), dict) and "version" not in doc and "machine" not in doc:
        return "secrets"
    if isinstance(doc.get("contexts"), dict) and "version" not in doc:
        return "talosconfig"
    if "trust" in doc or "authorities" in doc:  # a trustplan desired state (init run again, with --force)
        return "desired"
    return None


@dataclass
class Scan:
    nodes: list[FoundNode]
    configs: list[machineconfig.MachineConfig]
    secrets: Path | None  # a secrets.yaml found among the files
    talosconfig: Path | None  # a talosconfig found among the files


def _ask(path: Path, role: str) -> str | None:
    import sys

    if not sys.stdin.isatty():
        return None
    answer = input(f"{path} ({role}) names no node address; its IP or DNS name: ").strip()
    return answer or None


def read_machine_configs(directory: Path, addresses: dict[str, str] | None = None) -> Scan:
    """The machine configs of a directory, each with its node address (`addresses`: file name ->
    address, given with --address, wins); a secrets.yaml or talosconfig among them is set aside."""
    addresses = dict(addresses or {})
    if not directory.is_dir():
        raise InputError(str(directory), "not a directory of machine configs")
    files = sorted(p for p in directory.iterdir()
                   if (p.suffix in (".yaml", ".yml") or p.name == "talosconfig") and p.is_file())
    parsed: list[tuple[Path, machineconfig.MachineConfig]] = []
    secrets = talosconfig = None
    for path in files:
        data = safeio.read_regular(path, what="machine config")
        kind = _kind_of_file(data)
        if kind == "secrets":
            secrets = secrets or path
            continue
        if kind == "talosconfig":
            talosconfig = talosconfig or path
            continue
        if kind == "desired":
            continue
        if path.name == "talosconfig":  # not a talosconfig after all: not a machine config either
            continue
        parsed.append((path, machineconfig.parse(data, str(path))))
    unknown = set(addresses) - {p.name for p, _ in parsed}
    if unknown:
        raise InputError(f"--address {sorted(unknown)[0]}=...", f"no machine config named {sorted(unknown)[0]} in "
                         f"{directory}", hint="give the file name as listed there, e.g. --address worker.yaml=10.5.0.5")
    sole = sum(1 for _, c in parsed if c.role == "controlplane") == 1
    nodes: list[FoundNode] = []
    seen: dict[str, Path] = {}
    for path, cfg in parsed:
        found = (addresses[path.name], "--address") if path.name in addresses else node_address(cfg, path, sole)
        if found is None:
            asked = _ask(path, cfg.role)
            found = (asked, "the answer to init's question") if asked else None
        if found is None:
            raise InputError(
                str(path),
                "names no node address (no machine.network.interfaces / LinkConfig address, certSANs IP or "
                "hostname), and a file name is not an address",
                hint=f"give it: trustplan init --machine-configs {directory} --address {path.name}=<IP or DNS name>",
            )
        address, why = found
        if address in seen:
            raise InputError(str(path), f"node address {address} (from {why}) is also the address of {seen[address]}")
        seen[address] = path
        nodes.append(FoundNode(address, cfg.role, path, why))
    if not nodes:
        raise InputError(str(directory), "no machine-config files (*.yaml, *.yml) found")
    return Scan(nodes, [c for _, c in parsed], secrets, talosconfig)


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


def node_config(talosconfig: Path, context: str | None, address: str) -> machineconfig.MachineConfig:
    """A node's live machine config, read over the Talos API."""
    from trustplan.providers.base import NodeRef
    from trustplan.providers.talos.provider import TalosProvider

    async def go() -> bytes:
        provider = TalosProvider(talosconfig, context, [NodeRef(address, "controlplane")])
        try:
            return (await provider.read(NodeRef(address, "controlplane"))).data
        finally:
            await provider.close()

    return machineconfig.parse(asyncio.run(go()), f"node {address}")


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
    outputs: dict[str, str] | None = None,
    kinds: tuple[list[str], list[str]] = ([], []),
    keystore: str = KEYSTORE,
) -> str:
    """The desired-state file, with a comment on every field; `kinds`: init_kinds.lines()."""
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
    lines += kinds[0]
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
        *kinds[1],
        "",
        f"keystore: {keystore}         # where CA keys are kept (0700 / 0600): secret, back it up, never commit",
    ]
    if secrets is not None:
        lines.append(f"secrets: {secrets}   # Talos secrets.yaml: apply updates certs.os / certs.k8s")
    lines += [
        "state: trustplan.state.json       # which CA is trusted where (public data only; safe to commit)",
        "outputs:                          # client configs written from the new issuers after the last gate",
        f"  talosconfig: {(outputs or {}).get('talosconfig', 'talosconfig')}",
        f"  kubeconfig: {(outputs or {}).get('kubeconfig', 'kubeconfig')}",
        "",
    ]
    return "\n".join(lines)


def parse_addresses(values: list[str] | None) -> dict[str, str]:
    """--address FILE=ADDR items (repeatable, comma-separated) as file name -> address."""
    out: dict[str, str] = {}
    for item in split_list(values):
        file, sep, address = item.partition("=")
        if not sep or not file.strip() or not address.strip():
            raise InputError(f"--address {item}", "expected FILE=ADDR, e.g. --address worker.yaml=10.5.0.5")
        out[Path(file.strip()).name] = address.strip()
    return out


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
        value = value or next((d.get("clusterName") for d in _documents(cfg, "KubeClusterConfig")), None)
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

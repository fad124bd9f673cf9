"""`trustplan sim up --from DIR`: a simulated cluster made from real `talosctl gen config` output.

DIR holds `controlplane.yaml` and `worker.yaml` as `talosctl gen config NAME https://IP:6443
--with-secrets secrets.yaml` writes them (any version: the v1.12 layout with everything in the
v1alpha1 document, or the Talos 1.14 documents), and optionally the `secrets.yaml` they were made
from. Each node gets its own config made from its role's file the way a user patches one per node
(`talosctl machineconfig patch`): its hostname (v1.12: `machine.network.hostname`; 1.14: the
`HostnameConfig` document's `hostname`, replacing `auto`), its address added to `machine.certSANs`,
and the cluster endpoint pointed at the first simulated control plane (v1.12:
`cluster.controlPlane.endpoint`; 1.14: `KubeClusterConfig.endpoint`). Only the documents patched are
re-encoded; every other document keeps talosctl's bytes, comments included.

The configs are read with the simulator's own oracle (oracle.py), never with trustplan's reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustplan_sim import configgen, oracle
from trustplan_sim.options import KubeCALayout

from trustplan.errors import InputError
from trustplan.system import safeio, safeyaml
from trustplan.talos import pki

FILES = ("controlplane.yaml", "worker.yaml")


@dataclass
class FromSecrets:
    """The part of ClusterSecrets the simulator uses, taken from a generated control-plane config:
    the Talos and Kubernetes CAs (for the talosconfig and kubeconfig it writes) and secrets.yaml."""

    os: configgen.CAPair
    k8s: configgen.CAPair
    secrets_yaml: bytes | None

    def to_yaml(self) -> bytes | None:
        return self.secrets_yaml


@dataclass
class Templates:
    controlplane: bytes
    worker: bytes
    layout: KubeCALayout
    secrets: FromSecrets
    cluster_name: str


def _pair(cas: oracle.CAs, source: str, what: str) -> configgen.CAPair:
    if cas.issuer is None or cas.issuer_key is None:
        raise InputError(source, f"the {what} CA has no certificate and key", hint="use `talosctl gen config` output")
    return configgen.CAPair(pki.load_cert_pem(cas.issuer, source), pki.load_key_pem(cas.issuer_key, source))


def load(directory: Path) -> Templates:
    """Read DIR's generated configs (InputError naming the file for a missing or unusable one)."""
    hint = "expected `talosctl gen config` output"
    data = {name: safeio.read_regular(directory / name, what="machine config", hint=hint) for name in FILES}
    parsed = {}
    for name, role in zip(FILES, ("controlplane", "worker"), strict=True):
        source = str(directory / name)
        try:
            parsed[name] = cfg = oracle.read(data[name])
        except oracle.ConfigError as exc:
            raise InputError(source, str(exc)) from None
        if cfg.role != role:
            raise InputError(source, f"machine.type is {cfg.machine_type!r}, expected {role}", path="machine.type")
        if errors := oracle.validate(cfg):
            raise InputError(source, "Talos would refuse this config: " + "; ".join(errors))
    cp = parsed["controlplane.yaml"]
    source = str(directory / "controlplane.yaml")
    secrets_path = directory / "secrets.yaml"
    secrets = FromSecrets(
        os=_pair(cp.ca_fields("talos"), source, "Talos API"),
        k8s=_pair(cp.ca_fields("kubernetes"), source, "Kubernetes API"),
        secrets_yaml=safeio.read_regular(secrets_path, what="secrets bundle") if secrets_path.is_file() else None,
    )
    layout: KubeCALayout = "multidoc" if cp.kube_ca_document else "legacy"
    return Templates(data["controlplane.yaml"], data["worker.yaml"], layout, secrets, cp.cluster_name or "sim")


def _split(text: str) -> list[str]:
    """The YAML stream's documents, each with its exact text (the `---` line starts the next)."""
    docs: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---":
            docs.append([])
        else:
            docs[-1].append(line)
    return ["".join(d) for d in docs if "".join(d).strip()]


def node_config(template: bytes, *, hostname: str, address: str, endpoint: str) -> bytes:
    """One node's config: `template` with this node's hostname, address and the cluster endpoint."""
    out = []
    for text in _split(template.decode("utf-8")):
        doc: Any = safeyaml.load(text)
        if not isinstance(doc, dict):
            out.append(text)
            continue
        if doc.get("version") == "v1alpha1":
            machine = doc.setdefault("machine", {})
            sans = machine.get("certSANs") or []
            machine["certSANs"] = [*sans, address] if address not in sans else sans
            cluster = doc.get("cluster") or {}
            if "controlPlane" in cluster:
                cluster["controlPlane"]["endpoint"] = endpoint
            if not any(_kind(t) == "HostnameConfig" for t in _split(template.decode("utf-8"))):
                network = machine.get("network") or {}
                network["hostname"] = hostname
                machine["network"] = network
        elif doc.get("kind") == "HostnameConfig":
            doc.pop("auto", None)
            doc["hostname"] = hostname
        elif doc.get("kind") == "KubeClusterConfig":
            doc["endpoint"] = endpoint
        else:
            out.append(text)
            continue
        out.append(configgen.dump_yaml_literal(doc))
    return "---\n".join(t if t.endswith("\n") else t + "\n" for t in out).encode()


def _kind(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("kind:"):
            return line.split(":", 1)[1].split("#", 1)[0].strip()
    return None

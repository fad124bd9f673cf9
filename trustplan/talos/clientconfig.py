"""The client configuration files people use to reach a cluster: a talosconfig (talosctl) and a
kubeconfig (kubectl), as documents: built here, read here (through trustplan.system), and the
kubeconfig's context looked up here. Writing them is trustplan.formats.outputs's (the simulator writes
its own talosconfig from talosconfig_yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustplan.system import safeyaml, yamlout
from trustplan.system.safeio import read_regular
from trustplan.talos import pki


def read_client_config(path: Path, what: str = "kubeconfig") -> Any:
    """A talosconfig or kubeconfig file as YAML data, read through trustplan.system (a regular file,
    size, alias and depth limits). InputError when it cannot be read, yaml.YAMLError when malformed."""
    return safeyaml.load(read_regular(path, what=what))


@dataclass(frozen=True)
class KubeContext:
    """The entries one context of a kubeconfig uses (mutable: a caller may edit and write them back)."""

    name: str
    cluster: dict[str, Any]
    user: dict[str, Any]


def kube_context(doc: Any, name: str | None = None, *, cluster: str | None = None) -> KubeContext | None:
    """Context `name`; without one, `admin@<cluster>` when the file has it (what trustplan and
    `talosctl kubeconfig` write), else the current context. None when the file has no such context
    or its cluster entry is missing; the user entry is {} when missing."""
    try:
        contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
        if name is None:
            name = f"admin@{cluster}" if f"admin@{cluster}" in contexts else doc.get("current-context")
        ctx = contexts[name]
        entry: Any = next(c["cluster"] for c in doc.get("clusters") or [] if c["name"] == ctx["cluster"])
        user: Any = next((u["user"] for u in doc.get("users") or [] if u["name"] == ctx.get("user")), {})
    except (KeyError, TypeError, AttributeError, StopIteration):
        return None
    if not isinstance(entry, dict) or not isinstance(user, dict) or not isinstance(name, str):
        return None
    return KubeContext(name, entry, user)


def talosconfig_document(
    context: str, endpoints: list[str], ca_pem: bytes, crt_pem: bytes, key_pem: bytes
) -> dict[str, Any]:
    """One context, like `talosctl rotate-ca -o`: endpoints kept, `ca` = the CA, no `nodes`."""
    return {
        "context": context,
        "contexts": {
            context: {
                "endpoints": endpoints,
                "ca": pki.b64encode_pem(ca_pem),
                "crt": pki.b64encode_pem(crt_pem),
                "key": pki.b64encode_pem(key_pem),
            }
        },
    }


def talos_key_pem(key_pem: bytes) -> bytes:
    """A key in Talos's own encoding (Ed25519 -> `ED25519 PRIVATE KEY`), whatever PEM it came in."""
    return pki.key_to_pem(pki.load_key_pem(key_pem, "<key>"))


def talosconfig_yaml(context: str, endpoints: list[str], ca_pem: bytes, crt_pem: bytes, key_pem: bytes) -> bytes:
    """The talosconfig file of talosconfig_document, its key in Talos's encoding."""
    return yamlout.dump(talosconfig_document(context, endpoints, ca_pem, crt_pem, talos_key_pem(key_pem))).encode()


def kubeconfig_document(cluster: str, server: str, ca_bundle: bytes, crt_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """One cluster, user and context named `admin@<cluster>`, like `talosctl kubeconfig`."""
    user = f"admin@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": pki.b64encode_pem(ca_bundle)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": pki.b64encode_pem(crt_pem),
                    "client-key-data": pki.b64encode_pem(key_pem),
                },
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": cluster, "namespace": "default", "user": user}}],
        "current-context": user,
        "preferences": {},
    }

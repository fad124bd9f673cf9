"""The client configuration files people use to reach a cluster: a talosconfig (talosctl) and a
kubeconfig (kubectl), as documents. Writing them is the caller's (system.atomic.replace_with_backup)."""

from __future__ import annotations

from typing import Any

from trustplan.talos import pki


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

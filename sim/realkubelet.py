"""What a simulated kubelet does against a real kube-apiserver (`trustplan sim up --k8s real`).

A kubelet holds a client certificate of its own, `CN=system:node:<hostname>, O=system:nodes`, issued
by the Kubernetes issuing CA of a control plane it trusts (on Talos a CSR signed by that cluster's
controller manager; here issued directly). With it, through the Node authorizer and the
NodeRestriction admission plugin, it creates its Node object and posts the Ready condition. After its
node's Kubernetes CA changed, it reports NotReady (best effort: its old certificate may no longer be
accepted), then re-joins: a new certificate from a control plane it trusts, Ready again. It verifies
the API server's serving certificate against the node's own Kubernetes trust (accepted + issuing CAs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustplan_sim import etcd
from trustplan_sim.kubelet import kube_trust

from trustplan.talos import certgen, pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

CALL_TIMEOUT = 5.0


def _files(node: SimNode) -> Path:
    assert node.cluster.real is not None
    return node.cluster.real.dir / node.name / "kubelet"


def _context(node: SimNode) -> ssl.SSLContext:
    d = _files(node)
    context = ssl.create_default_context(cafile=str(d / "ca.crt"))
    context.load_cert_chain(d / "kubelet.crt", d / "kubelet.key")
    return context


def _call(node: SimNode, server: str, method: str, path: str, body: dict[str, Any], ctype: str) -> int:
    """One HTTP call with the kubelet's credential; the HTTP status (0: no answer, TLS refused)."""
    request = urllib.request.Request(f"{server}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": ctype, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, context=_context(node), timeout=CALL_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def _issue(node: SimNode, cp: SimNode) -> None:
    """A fresh kubelet client cert from `cp`'s Kubernetes issuing CA; the node's trust as CA file."""
    fields = cp.parsed.ca_fields("kubernetes")
    assert fields.issuer and fields.issuer_key
    ca = pki.load_cert_pem(fields.issuer, cp.name)
    key = pki.load_key_pem(fields.issuer_key, cp.name)
    cert, cert_key = certgen.issue_client_cert(ca, key, "system:nodes", pki.utcnow(),
                                               common_name=f"system:node:{node.hostname}")
    d = _files(node)
    etcd.write_secret(d / "kubelet.crt", pki.cert_to_pem(cert))
    etcd.write_secret(d / "kubelet.key", pki.key_to_pkcs8_pem(cert_key))
    etcd.write_secret(d / "ca.crt", pki.pem_bundle(kube_trust(node.parsed)))


def _status(node: SimNode, ready: bool, message: str) -> dict[str, Any]:
    now = pki.iso_time(dt.datetime.now(dt.UTC))
    return {"status": {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady", "message": message,
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": node.address}, {"type": "Hostname", "address": node.hostname}],
    }}


def _register(node: SimNode, server: str) -> str | None:
    labels = {"kubernetes.io/hostname": node.hostname, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    code = _call(node, server, "POST", "/api/v1/nodes",
                 {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.hostname, "labels": labels}},
                 "application/json")
    if code not in (201, 409):
        return f"{node.name}: kubelet cannot register its Node at {server} (HTTP {code or 'no answer'}); retrying"
    code = _call(node, server, "PATCH", f"/api/v1/nodes/{node.hostname}/status",
                 _status(node, True, "kubelet is posting ready status"), "application/merge-patch+json")
    if code != 200:
        return f"{node.name}: kubelet cannot post Ready at {server} (HTTP {code or 'no answer'}); retrying"
    return None


async def join(node: SimNode) -> str | None:
    """Register the Node and post Ready through a serving API server this node trusts, with a new
    client cert from that control plane's CA. None on success, else why not (the caller retries)."""
    own = {pki.fingerprint(pki.load_cert_pem(p, node.name)) for p in kube_trust(node.parsed)}
    reason = f"{node.name}: kubelet cannot register: no serving API server is issued by a CA this node trusts"
    for cp in node.cluster.controlplanes:
        api = cp.apiserver
        if api is None or not api.serving or api.issuer_fingerprint not in own:
            continue
        _issue(node, cp)
        reason_here = await asyncio.to_thread(_register, node, f"https://{api.address}:{api.port}")
        if reason_here is None:
            return None
        reason = reason_here
    return reason


async def report_not_ready(node: SimNode, message: str) -> None:
    """Post Ready=False with the current credential wherever it is still accepted (best effort)."""
    if not (_files(node) / "kubelet.crt").exists():
        return
    for cp in node.cluster.controlplanes:
        api = cp.apiserver
        if api is None or not api.serving:
            continue
        code = await asyncio.to_thread(_call, node, f"https://{api.address}:{api.port}", "PATCH",
                                       f"/api/v1/nodes/{node.hostname}/status", _status(node, False, message),
                                       "application/merge-patch+json")
        if code == 200:
            return

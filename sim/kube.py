"""The simulated kube-apiserver of a control plane (the kubelet of every node is
trustplan_sim.kubelet).

Trust follows Talos (docs/talos-model.md: where each credential lives, Kubernetes trust):

- A control plane's kube-apiserver serves a cert issued by its current Kubernetes issuing CA
  (`cluster.ca`, or `issuingCA` of the KubeAPIServerCAConfig document) and accepts client certs
  issued by that CA or any of its accepted CAs. Authorization is a minimal RBAC: /version, /readyz,
  /livez and /healthz are open to any authenticated client (system:public-info-viewer); everything
  else needs Subject O=system:masters (403 otherwise).
- When a control plane's Kubernetes CA fields change, its API server restarts: the listener closes
  (connection refused) for `apiserver_restart_ms`, then comes back with a cert from the new issuer
  and the new trust.
- When any node's Kubernetes CA fields change, its kubelet restarts (trustplan_sim.kubelet)
  and rejoins once it can verify some control plane's API server. Meanwhile the node is NotReady.

The API server is a small HTTP/1.1 server on asyncio streams over stdlib `ssl` (keep-alive,
Content-Length bodies, JSON like kube-apiserver's), enough for `curl` and the `kubernetes` client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import uuid
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from trustplan.providers.talos.tls import server_context
from trustplan_sim import configgen
from trustplan_sim.kubelet import kube_trust

from trustplan.errors import TrustplanError
from trustplan.talos import certgen, pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

log = logging.getLogger("trustplan.sim")

MASTERS = "system:masters"
SERVICE_DNS = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
)
SERVICE_IP = "10.96.0.1"
MAX_HEADER_LINES = 100

@dataclass(frozen=True)
class Peer:
    """An authenticated client: user (Subject CN) and groups (Subject O values)."""

    user: str
    groups: tuple[str, ...]


def _peer(ssl_object: ssl.SSLObject | None) -> Peer | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    subject = x509.load_der_x509_certificate(der).subject
    cn = [str(a.value) for a in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME))
    return Peer(cn[0] if cn else "", orgs)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A meta/v1 Status, as kube-apiserver answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


class KubeAPIServer:
    """kube-apiserver of one control plane, on (node address, cluster.k8s_port)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.port = node.cluster.k8s_port
        self.server_cert: x509.Certificate | None = None
        self.issuer_fingerprint: str | None = None
        self.restarts = 0
        self._ctx: ssl.SSLContext | None = None
        self._listen_ctx: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._task: asyncio.Task[None] | None = None
        #: why the server could not (re)start (None: it serves, or is restarting)
        self.error: str | None = None

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def serving(self) -> bool:
        return self._server is not None

    def reload(self) -> None:
        """Issue the serving cert from the node's current Kubernetes issuing CA; load its trust."""
        node = self.node
        fields = node.parsed.ca_fields("kubernetes")
        if not fields.issuer or not fields.issuer_key:
            raise TrustplanError(f"{node.name}: no Kubernetes issuing CA with a key; kube-apiserver cannot start")
        ca_cert = pki.load_cert_pem(fields.issuer, node.name)
        ca_key = pki.load_key_pem(fields.issuer_key, node.name)
        ips = [node.address, "127.0.0.1", SERVICE_IP]
        dns = [*SERVICE_DNS, node.hostname]
        extra = [urlsplit(node.parsed.endpoint).hostname or "", *node.parsed.apiserver_cert_sans]
        for name in extra:
            if not name:
                continue
            try:
                ip_address(name)
            except ValueError:
                dns.append(name)
            else:
                ips.append(name)
        cert, key = certgen.issue_server_cert(
            ca_cert,
            ca_key,
            pki.utcnow(),
            ips=tuple(dict.fromkeys(ips)),
            dns=tuple(dict.fromkeys(dns)),
            common_name="kube-apiserver",
        )
        trust = pki.pem_bundle(kube_trust(node.parsed))
        ctx = server_context(pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key), trust)
        ctx.set_alpn_protocols(["http/1.1"])
        self._ctx = ctx
        self.server_cert = cert
        self.issuer_fingerprint = pki.fingerprint(ca_cert)

    def _sni(self, ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._ctx is not None:
            ssl_object.context = self._ctx

    async def start(self) -> None:
        """Listen (no-op when already listening). The listener defers to the current context."""
        if self._server is not None:
            return
        self.reload()
        assert self._ctx is not None
        if self._listen_ctx is None:
            self._listen_ctx = self._ctx
            self._listen_ctx.sni_callback = self._sni
        self._server = await asyncio.start_server(
            self._handle, self.address, self.port, ssl=self._listen_ctx, reuse_address=True
        )
        self.error = None

    def _close_now(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        self._cancel()
        self._close_now()

    def restart(self) -> None:
        """Go away now (connection refused), come back after `apiserver_restart_ms` with the new PKI.

        A restart during a restart starts the wait again."""
        self.restarts += 1
        self._cancel()
        self._close_now()
        self._task = asyncio.get_running_loop().create_task(self._come_back())

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def _come_back(self) -> None:
        try:
            await asyncio.sleep(self.node.cluster.apiserver_restart_ms / 1000.0)
            if not self.node.running:
                return  # the node itself is down; start() brings the API server back with it
            try:
                await self.start()
            except (TrustplanError, OSError) as exc:
                self.error = f"{self.node.name}: kube-apiserver did not come back: {exc}"
                log.warning("%s", self.error)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    # --- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = _peer(writer.get_extra_info("ssl_object"))
        try:
            if peer is None:
                return  # CERT_REQUIRED makes this unreachable; never serve an anonymous client
            while True:
                line = await reader.readline()
                if not line:
                    return
                parts = line.decode("latin-1").split()
                headers: dict[str, str] = {}
                for _ in range(MAX_HEADER_LINES):
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if len(parts) != 3:
                    await self._send(writer, 400, _status(400, "BadRequest", "malformed request line"), False)
                    return
                method, target, version = parts
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                code, body = self.route(method, target, peer)
                await self._send(writer, code, body, keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, code: int, body: dict[str, Any] | str, keep: bool) -> None:
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        head = (
            f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"Cache-Control: no-cache, private\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + data)
        await writer.drain()

    def route(self, method: str, target: str, peer: Peer) -> tuple[int, dict[str, Any] | str]:
        """Answer one request: (HTTP status, JSON document or text)."""
        path = urlsplit(target).path.rstrip("/") or "/"
        if method not in ("GET", "HEAD"):
            return 405, _status(405, "MethodNotAllowed", f"the server does not allow this method ({method})")
        if path in ("/readyz", "/livez", "/healthz"):
            return 200, "ok"
        if path == "/version":
            return 200, version_document()
        if MASTERS not in peer.groups:
            resource = path.rsplit("/", 1)[-1] if path.startswith("/api/v1/nodes") else path
            return 403, _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{peer.user}" cannot get path or resource "{path}" '
                "(the simulator's RBAC allows only group system:masters)",
            )
        cluster = self.node.cluster
        if path == "/api":
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.address}:{self.port}"}
                ],
            }
        if path == "/api/v1/nodes":
            return 200, {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(cluster.k8s_resource_version())},
                "items": [node_document(n) for n in cluster.nodes],
            }
        if path.startswith("/api/v1/nodes/"):
            name = path[len("/api/v1/nodes/") :]
            for n in cluster.nodes:
                if n.hostname == name:
                    return 200, {"kind": "Node", "apiVersion": "v1", **node_document(n)}
            return 404, _status(404, "NotFound", f'nodes "{name}" not found')
        return 404, _status(404, "NotFound", "the server could not find the requested resource")


def version_document() -> dict[str, str]:
    """GET /version, as kube-apiserver answers it."""
    git_version = configgen.KUBERNETES_VERSION
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(int(minor) - 1),
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-09-09T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def node_document(node: SimNode) -> dict[str, Any]:
    """A v1 Node (without kind/apiVersion, as NodeList items are) for a simulated node."""
    kubelet = node.kubelet
    ready = kubelet.ready
    if ready:
        condition = {"status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
    else:
        condition = {
            "status": "False",
            "reason": "KubeletNotReady",
            "message": kubelet.waiting or "kubelet is restarting",
        }
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.hostname,
        "kubernetes.io/os": "linux",
    }
    if node.role == "controlplane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    created = pki.iso_time(node.created)
    return {
        "metadata": {
            "name": node.hostname,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"trustplan-sim:{node.address}")),
            "resourceVersion": str(node.version * 1000 + kubelet.restarts),
            "creationTimestamp": created,
            "labels": labels,
        },
        "spec": {"podCIDR": f"10.244.{node.cluster.nodes.index(node)}.0/24"},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "lastHeartbeatTime": pki.iso_time(dt.datetime.now(dt.UTC)),
                    "lastTransitionTime": pki.iso_time(kubelet.transition),
                    **condition,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": node.address},
                {"type": "Hostname", "address": node.hostname},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot:{node.address}")),
                "containerRuntimeVersion": "containerd://2.1.4",
                "kernelVersion": "6.12.57-talos",
                "kubeProxyVersion": configgen.KUBERNETES_VERSION,
                "kubeletVersion": configgen.KUBERNETES_VERSION,
                "machineID": uuid.uuid5(uuid.NAMESPACE_URL, f"machine:{node.address}").hex,
                "operatingSystem": "linux",
                "osImage": f"Talos ({node.cluster.talos_version})",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system:{node.address}")),
            },
        },
    }

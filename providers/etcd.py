"""An etcd member's client port as trustplan asks it during an etcd CA rotation: health, status, and
whether it accepts a client certificate. Over TLS, always verified, with a client certificate minted
in memory (trustplan.system.secretfiles: nothing reaches the disk).

Talos runs etcd with `--listen-client-urls https://0.0.0.0:2379`, `--client-cert-auth` and
`--tls-min-version TLS1.3` (internal/app/machined/pkg/system/services/etcd.go); its server certificate
names the node's addresses (internal/pkg/etcd/certs.go). etcd's gRPC gateway answers JSON on the same
port: `GET /health` ({"health": "true"} when the member has a leader and its raft is working) and
`POST /v3/maintenance/status` (the member's id, the leader's id, the revision in its header).

    client = EtcdClient(cert_pem, key_pem, ca_bundle_pem)
    client.status(address)     EtcdStatus, or EtcdUnreachable / EtcdRefused
    client.accepts(address)    True: served; False: the member refused the certificate; None: no answer
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

from trustplan.providers.talos.tls import _load_chain

from trustplan.errors import TrustplanError

CLIENT_PORT = 2379


class EtcdUnreachable(TrustplanError):
    """Nothing answered on the member's client port (down, restarting, or not listening)."""


class EtcdRefused(TrustplanError):
    """The member answered, and refused the client certificate (or we refused its server certificate)."""


@dataclass(frozen=True)
class EtcdStatus:
    """One member's answer: its id, the leader it follows (0: none), its revision, its health."""

    address: str
    member_id: int
    leader: int
    revision: int
    raft_index: int
    healthy: bool


def client_context(cert_pem: bytes, key_pem: bytes, ca_bundle_pem: bytes) -> ssl.SSLContext:
    """A verifying mTLS client context for etcd's HTTP/1.1 gateway (TLS 1.3, as Talos's etcd demands)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True  # a member is dialled by IP: its server certificate names that IP
    ctx.load_verify_locations(cadata=ca_bundle_pem.decode("ascii"))
    _load_chain(ctx, cert_pem, key_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _refusal(exc: ssl.SSLError) -> bool:
    """Whether a TLS error means a refusal (either side), not a connection that went away."""
    text = f"{exc.reason or ''} {exc}".lower()
    return "alert" in text or "certificate" in text or "unknown ca" in text or "verify" in text


class EtcdClient:
    """Calls to etcd members with one client identity (a context built once, a connection per call)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, ca_bundle_pem: bytes, timeout: float = 3.0) -> None:
        self.context = client_context(cert_pem, key_pem, ca_bundle_pem)
        self.timeout = timeout

    def _call(self, address: str, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPSConnection(address, CLIENT_PORT, context=self.context, timeout=self.timeout)
        try:
            try:
                conn.connect()  # the handshake: the member's certificate is verified here
            except ssl.SSLCertVerificationError as exc:
                raise EtcdRefused(f"etcd {address}: its server certificate is not trusted: "
                                  f"{exc.verify_message}") from None
            except ssl.SSLError as exc:
                if _refusal(exc):
                    raise EtcdRefused(f"etcd {address}: refused the client certificate: {exc.reason or exc}") from None
                raise EtcdUnreachable(f"etcd {address}: {exc.reason or exc}") from None
            except OSError as exc:
                raise EtcdUnreachable(f"etcd {address}: {exc or type(exc).__name__}") from None
            try:
                body = b"{}" if method == "POST" else None
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                # TLS 1.3: the server checks the client certificate after the client's handshake is done,
                # and answers a refused one with an alert or by closing the connection
                raise EtcdRefused(f"etcd {address}: refused the client certificate "
                                  f"({getattr(exc, 'reason', None) or exc or type(exc).__name__})") from None
            except (OSError, http.client.HTTPException) as exc:
                raise EtcdUnreachable(f"etcd {address}: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        if response.status != 200:
            raise EtcdUnreachable(f"etcd {address}: {path} answered HTTP {response.status}")
        try:
            answer: dict[str, Any] = json.loads(data or b"{}")
        except ValueError:
            raise EtcdUnreachable(f"etcd {address}: {path} answered something that is not JSON") from None
        return answer

    def status(self, address: str) -> EtcdStatus:
        """The member's health and status (two calls). Raises EtcdUnreachable or EtcdRefused."""
        health = self._call(address, "GET", "/health")
        s = self._call(address, "POST", "/v3/maintenance/status")
        header = s.get("header") or {}
        return EtcdStatus(
            address,
            int(header.get("member_id", 0)),
            int(s.get("leader", 0)),
            int(header.get("revision", 0)),
            int(s.get("raftIndex", 0)),
            str(health.get("health")) == "true",
        )

    def accepts(self, address: str) -> bool | None:
        """Whether the member serves this client certificate: None when nothing answers."""
        try:
            self._call(address, "POST", "/v3/maintenance/status")
        except EtcdRefused:
            return False
        except EtcdUnreachable:
            return None
        return True

"""One simulated Talos node: its machine config, its apid certificates and trust, its listener.

The trust model follows Talos (reference/talos.md §2.3, §2.4):

- A control plane's apid serves a cert issued by `machine.ca` (it holds the key) and trusts client
  certs from `machine.acceptedCAs + machine.ca.crt`. It proxies `node`-targeted calls with an
  `os:impersonator` client cert issued by the same CA, and verifies upstream apids against the same
  accepted CAs.
- A worker has no CA key. Its cert comes from a control plane's "trustd": issued by that control
  plane's issuing CA, with that control plane's accepted CAs (issuing CA included) as the worker's
  client-trust bundle, fixed at the worker's last config change. A worker that does not trust the
  control plane's issuer (its own `acceptedCAs + ca.crt`) cannot get a new cert and keeps the old.
- Client certs must have EKU exactly [clientAuth], or the connection is dropped right after the
  handshake (apid's VerifyPeerCertificate). Roles come from the client cert's Subject O.

Certs are re-issued and trust reloaded on a config change that changes what they are made from (the
Talos CA fields, the hostname), without closing the listener: the listening SSLContext's
`sni_callback` swaps in the node's current context for each handshake.

A control plane's proxy connections are modelled, not dialled: a call to a target is served in this
process (direct.py) over a connection that is open, or that a handshake would open now: the target
runs, this control plane trusts the target's current server cert (signed by a CA in its trust, valid
now) and the target accepts the current proxy cert (signed by a CA in the target's client trust,
valid now, extended key usage [clientAuth]). When the model says the handshake would fail, the call
dials for real and the real handshake fails as apid's does, with the same error. Served in-process,
a proxied call costs no mutual-TLS handshake (~3 ms of CPU on each side, both in this one process),
no HTTP/2 and TLS framing on both ends of the hop; what the caller sees is the same (tests/sim).

A control plane's PKI change flushes its proxy connections, as apid's onPKIUpdate does: each is
re-checked at its next use the way the new handshake would check it; if it would fail, it is torn
down (and the call dials for real, failing like apid's); if it would pass, it is kept rather than
re-made with an equivalent one. A connection ends when its target stops; a target's own PKI change
does not end it (as in Talos). On a kept connection the target sees the role os:impersonator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.server import Server
from trustplan.providers.talos.tls import client_context, server_context
from trustplan_sim.etcd import EtcdMember
from trustplan_sim.kube import KubeAPIServer
from trustplan_sim.kubelet import Kubelet, kube_ca_state
from trustplan_sim.realk8s import RealAPIServer

from trustplan.talos import certgen, machineconfig, pki

if TYPE_CHECKING:
    from trustplan_sim.cluster import SimCluster

log = logging.getLogger("trustplan.sim")

PROXY_ROLE = "os:impersonator"


@dataclass
class Faults:
    """Failures a test can inject into one node."""

    #: ApplyConfiguration answers INTERNAL with this message (dry runs too) ...
    apply_error: str | None = None
    #: ... this many times (None: every time)
    apply_error_times: int | None = None
    #: apply the config, then stop the node before answering (a node that dies mid-apply)
    die_on_apply: bool = False
    #: after its next restart the kubelet never comes back (the node stays NotReady)
    kubelet_stuck: bool = False
    #: a restarted kubelet first comes back running but not healthy, then healthy one rejoin time
    #: later (CREATED, then UPDATED), as Talos reports a service whose health check has not passed yet
    kubelet_unhealthy_first: bool = False


@functools.lru_cache(maxsize=4096)
def eku_refusal(der: bytes) -> str | None:
    """Why apid would refuse this client cert for its extended key usage (None: acceptable).
    Cached by the DER bytes: the same few client certs connect again and again."""
    cert = x509.load_der_x509_certificate(der)
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return None
    except x509.ExtensionNotFound:
        pass
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    if usages != [ExtendedKeyUsageOID.CLIENT_AUTH]:
        return "client certificate extended key usage must be exactly [clientAuth]"
    return None


class _Server(Server):
    """A grpclib Server that refuses bad client certs right after the handshake and can drop
    every open connection (to simulate a node going away)."""

    def __init__(self, handlers: list[Any], node: SimNode) -> None:
        super().__init__(handlers)
        self._node = node
        self.transports: set[asyncio.Transport] = set()
        #: proxied calls this node is serving in-process (direct.py), cancelled when it drops its connections
        self.local_calls: set[asyncio.Future[Any]] = set()

    def _protocol_factory(self):  # type: ignore[no-untyped-def]
        protocol = super()._protocol_factory()
        made, lost = protocol.connection_made, protocol.connection_lost
        transports = self.transports
        node = self._node
        mine: list[asyncio.Transport] = []

        def connection_made(transport: asyncio.Transport) -> None:
            made(transport)
            transports.add(transport)
            mine.append(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            reason = eku_refusal(der) if der else "no client certificate"
            if reason:
                log.info("%s: refused a client: %s", node.name, reason)
                transport.abort()

        def connection_lost(exc: BaseException | None) -> None:
            for transport in mine:
                transports.discard(transport)
            lost(exc)

        protocol.connection_made = connection_made  # type: ignore[method-assign,assignment]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    def drop_connections(self) -> None:
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()
        loop = asyncio.get_running_loop()
        for call in list(self.local_calls):  # as grpclib cancels a lost connection's handlers: soon
            loop.call_soon(call.cancel)
        self.local_calls.clear()


class SimNode:
    """A simulated node. `config` is the exact bytes last applied (what COSI Get returns)."""

    def __init__(self, cluster: SimCluster, name: str, role: str, address: str, port: int, config: bytes) -> None:
        self.cluster = cluster
        self.name = name
        self.role = role
        self.address = address
        self.port = port
        self.faults = Faults()
        self.config = config
        self.parsed = machineconfig.parse(config, f"{name}: machine config")
        self.version = 1
        self.created = self.updated = dt.datetime.now(dt.UTC)
        self.changed = asyncio.Event()
        self.apply_lock = asyncio.Lock()
        self.trustd_error: str | None = None
        #: client-trust bundle of apid (PEM) and the fingerprints in it
        self.client_trust_pem = b""
        self.issuing: tuple[x509.Certificate, pki.PrivateKey] | None = None
        self.server_cert: x509.Certificate | None = None
        self._server_ctx: ssl.SSLContext | None = None  # built at the first handshake that needs it
        self._server_pems: tuple[bytes, bytes, bytes] | None = None  # what it is built from
        self._listen_ctx: ssl.SSLContext | None = None
        self._proxy_ctx: ssl.SSLContext | None = None
        self._made_from: tuple[object, ...] | None = None  # what the current certs were made from
        self._server_pair: tuple[tuple[object, ...], x509.Certificate, pki.PrivateKey] | None = None
        self._proxy_pair: tuple[tuple[object, ...], x509.Certificate, pki.PrivateKey] | None = None
        self._trust_cas: list[x509.Certificate] = []  # the CAs in client_trust_pem
        self._upstream: dict[str, Channel] = {}
        self._recheck: set[str] = set()  # flushed connections to re-check at their next use
        #: open proxy connections served in this process: address -> the target's listener it reached
        self._links: dict[str, _Server] = {}
        self._server: _Server | None = None
        #: the kubelet service (runtime/Services.v1alpha1.talos.dev/kubelet)
        self.kubelet = Kubelet(self)
        #: kube-apiserver, on control planes of a cluster started with k8s=True: the imitation, or
        #: with k8s_mode="real" the real one beside a real etcd member (trustplan_sim.realk8s)
        self.apiserver: KubeAPIServer | RealAPIServer | None = None
        self.etcd: EtcdMember | None = None
        if cluster.k8s and role == "controlplane":
            real = cluster.real
            self.apiserver = KubeAPIServer(self) if real is None else real.apiserver(self)
            self.etcd = None if real is None else real.member(self)

    # --- state ----------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.parsed.hostname or self.name

    @property
    def running(self) -> bool:
        return self._server is not None

    def set_config(self, data: bytes, parsed: machineconfig.MachineConfig) -> None:
        """Store a new active config and re-issue this node's certs (as machined + apid do).

        A change of the Kubernetes CA fields restarts the kubelet and, on a control plane, the API
        server (both come back later with the new PKI)."""
        kube_before = kube_ca_state(self.parsed)
        self.config = data
        self.parsed = parsed
        self.version += 1
        self.updated = dt.datetime.now(dt.UTC)
        if self._trust_inputs() != self._made_from or self.trustd_error is not None:
            self.reload_pki()  # certs and TLS contexts only when what they are made from changed
        kube_changed = kube_ca_state(parsed) != kube_before
        if kube_changed:
            log.info("%s: Kubernetes CA changed: restarting its kubelet (and kube-apiserver)", self.name)
            self.kubelet.restart()
        if self.cluster.real is not None:
            self.cluster.real.on_config_change(self, kube_changed)
        elif kube_changed and self.apiserver is not None:
            self.apiserver.restart()
        self.changed.set()
        self.changed = asyncio.Event()

    def _trust_inputs(self) -> tuple[object, ...]:
        """What this node's certs and TLS contexts are made from: its Talos CA fields and name, and
        for a worker what the control planes' trustd would answer (their trust, whether they run)."""
        fields = self.parsed.ca_fields("talos")
        own = (fields.issuer, fields.issuer_key, fields.accepted, self.hostname)
        if self.role == "controlplane":
            return own
        return own + tuple((cp.client_trust_pem, cp.running) for cp in self.cluster.controlplanes)

    def own_trust(self) -> list[bytes]:
        """OSRoot.AcceptedCAs: machine.acceptedCAs + machine.ca.crt (appended last)."""
        fields = self.parsed.ca_fields("talos")
        return list(fields.accepted) + ([fields.issuer] if fields.issuer else [])

    def reload_pki(self) -> None:
        """Re-issue the apid server cert (and, on a control plane, the proxy cert); reload trust.

        A cert is issued anew only when its issuing CA or names changed; the TLS contexts are always
        rebuilt (the trust in them may have changed)."""
        self._made_from = self._trust_inputs()
        now = pki.utcnow()
        sans = (self.address, "127.0.0.1")
        if self.role == "controlplane":
            fields = self.parsed.ca_fields("talos")
            assert fields.issuer and fields.issuer_key, "validated control-plane config has a CA key"
            issuing_from = (fields.issuer, fields.issuer_key)
            if self.issuing is None or self._proxy_pair is None or self._proxy_pair[0] != issuing_from:
                ca = pki.load_cert_pem(fields.issuer, self.name)
                self.issuing = (ca, pki.load_key_pem(fields.issuer_key, self.name))
            ca_cert, ca_key = self.issuing
            trust = pki.pem_bundle(self.own_trust())
            cert, key = self._server_cert(ca_cert, ca_key, issuing_from, now, sans)
            if self._proxy_pair is None or self._proxy_pair[0] != issuing_from:
                proxy_cert, proxy_key = certgen.issue_client_cert(
                    ca_cert, ca_key, PROXY_ROLE, now, validity=certgen.SERVER_VALIDITY
                )
                self._proxy_pair = (issuing_from, proxy_cert, proxy_key)
            self._recheck.update(self._upstream, self._links)  # flushed: each is re-checked at its next use
            _, proxy_cert, proxy_key = self._proxy_pair
            self._proxy_ctx = client_context(pki.cert_to_pem(proxy_cert), pki.key_to_pkcs8_pem(proxy_key), trust)
            for channel in self._upstream.values():
                channel._ssl = self._proxy_ctx  # noqa: SLF001 - a reconnect must use the new trust
        else:
            issued = self._trustd_certificate(now, sans)
            if issued is None:
                return  # keeps its old cert and trust, like a worker whose CSR fails
            cert, key, trust = issued
        self.server_cert = cert
        if trust != self.client_trust_pem:
            self._trust_cas = [pki.load_cert_pem(p, self.name) for p in pki.split_pem_bundle(trust)]
        self.client_trust_pem = trust
        self._server_pems = (pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key), trust)
        self._server_ctx = None  # most changes see no new connection before the next one: build it then

    def server_ctx(self) -> ssl.SSLContext | None:
        """The apid server context for new handshakes: this node's current cert and client trust."""
        if self._server_ctx is None and self._server_pems is not None:
            self._server_ctx = server_context(*self._server_pems)
        return self._server_ctx

    def _server_cert(
        self,
        ca_cert: x509.Certificate,
        ca_key: pki.PrivateKey,
        issuing_from: tuple[object, ...],
        now: dt.datetime,
        sans: tuple[str, ...],
    ) -> tuple[x509.Certificate, pki.PrivateKey]:
        """This node's apid server cert from this CA: the current one if it was made from the same
        CA for the same names, else a new one."""
        made_from = (*issuing_from, self.hostname, sans)
        if self._server_pair is None or self._server_pair[0] != made_from:
            cert, key = certgen.issue_server_cert(
                ca_cert, ca_key, now, ips=sans, dns=(self.hostname,), common_name=self.hostname
            )
            self._server_pair = (made_from, cert, key)
        return self._server_pair[1], self._server_pair[2]

    def _trustd_certificate(
        self, now: dt.datetime, sans: tuple[str, ...]
    ) -> tuple[x509.Certificate, pki.PrivateKey, bytes] | None:
        """A worker's CSR to a control plane's trustd: cert from its issuing CA, its accepted CAs."""
        own = {pki.CACert.from_pem(p, self.name).fingerprint for p in self.own_trust()}
        for cp in self.cluster.controlplanes:
            if cp.issuing is None or (self.cluster.started and not cp.running):
                continue
            ca_cert, ca_key = cp.issuing
            if pki.fingerprint(ca_cert) not in own:
                continue  # cannot verify that trustd's server cert: try another control plane
            cert, key = self._server_cert(ca_cert, ca_key, (cp.parsed.ca_fields("talos").issuer,), now, sans)
            self.trustd_error = None
            return cert, key, cp.client_trust_pem
        self.trustd_error = (
            f"{self.name}: no control plane's trustd is trusted by this worker "
            "(its machine.acceptedCAs + machine.ca.crt hold none of their issuing CAs); "
            "keeping the old certificate"
        )
        log.warning("%s", self.trustd_error)
        return None

    # --- listener -------------------------------------------------------------------------

    def _sni(self, ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        ctx = self.server_ctx()
        if ctx is not None:
            ssl_object.context = ctx

    async def start(self) -> None:
        """Listen on address:port (the listener's context defers to the current one per handshake)."""
        if self._server is not None:
            return
        if self._server_pems is None:
            self.reload_pki()
        if self._listen_ctx is None:
            self._listen_ctx = self.server_ctx()
            assert self._listen_ctx is not None
            self._listen_ctx.sni_callback = self._sni
        from trustplan_sim.router import install_router
        from trustplan_sim.services import handlers_for

        server = _Server(handlers_for(self), self)
        install_router(server, self)
        await server.start(self.address, self.port, ssl=self._listen_ctx, reuse_address=True)
        self._server = server
        if self.etcd is not None and self.cluster.started:
            await self.etcd.start(self.etcd.initial)  # a node coming back (the cluster starts etcd first)
        if self.apiserver is not None:
            await self.apiserver.start()
        self.kubelet.resume()

    async def stop(self) -> None:
        """Stop listening and drop every open connection: the node becomes unreachable."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        server.drop_connections()
        self._flush_upstream()
        if self.apiserver is not None:
            await self.apiserver.stop()
        if self.etcd is not None:
            await self.etcd.stop()
        self.kubelet.halt()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(server.wait_closed(), 5)

    # --- proxying -------------------------------------------------------------------------

    def upstream(self, address: str) -> Channel:
        """A cached mTLS channel to another node's apid, as this control plane's impersonator (for
        the calls local_target does not let through: their handshake fails like apid's)."""
        channel = self._upstream.get(address)
        if channel is None:
            assert self._proxy_ctx is not None
            port = self.cluster.port_of(address)
            channel = Channel(
                address, port, ssl=self._proxy_ctx, config=Configuration(ssl_target_name_override=address)
            )
            self._upstream[address] = channel
        return channel

    def local_target(self, address: str) -> SimNode | None:
        """The node that serves a proxied call to `address` in this process (direct.py): the one
        this control plane has an open connection to, or would have after a successful handshake.

        A connection is opened when the handshake would succeed (_would_connect) and lasts until the
        target stops or this node's PKI changes; then it is re-checked at its next use, and dropped
        if a new handshake would fail. None: no connection; the caller dials for real over
        upstream(), and that handshake fails the way apid's does."""
        target = self.cluster._by_key.get(address)  # noqa: SLF001 - the cluster's own index
        if address in self._recheck:
            self._recheck.discard(address)
            if not self._would_connect(address):
                self._links.pop(address, None)
                channel = self._upstream.pop(address, None)
                if channel is not None:
                    channel.close()  # the next call makes a real handshake, which fails like apid's
        server = self._links.get(address)
        if target is None or target._server is None:  # noqa: SLF001 - a node of the same cluster
            return None
        if server is target._server:  # noqa: SLF001
            return target
        if self._would_connect(address):
            self._links[address] = target._server  # noqa: SLF001
            return target
        self._links.pop(address, None)
        return None

    def _would_connect(self, address: str) -> bool:
        """Whether a new handshake to `address` with the current proxy cert would succeed now: the
        target runs, this node trusts the target's server cert, the target accepts the proxy cert
        (issued by a CA in its client trust, extended key usage [clientAuth])."""
        target = self.cluster._by_key.get(address)  # noqa: SLF001 - the cluster's own index
        if target is None or not target.running or target.server_cert is None or self._proxy_pair is None:
            return False
        proxy_cert = self._proxy_pair[1]
        now = dt.datetime.now(dt.UTC)
        for cert in (target.server_cert, proxy_cert):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return False
        if eku_refusal(proxy_cert.public_bytes(serialization.Encoding.DER)) is not None:
            return False
        return _issued_by_one_of(target.server_cert, self._trust_cas) and _issued_by_one_of(
            proxy_cert, target._trust_cas  # noqa: SLF001 - a node of the same cluster
        )

    def _flush_upstream(self) -> None:
        """apid flushes its proxy backends on a PKI change (onPKIUpdate)."""
        for channel in self._upstream.values():
            channel.close()
        self._upstream.clear()
        self._links.clear()
        self._recheck.clear()


def _issued_by_one_of(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    return any(ca.subject == cert.issuer and _signed_by(cert, ca) for ca in cas)


@functools.lru_cache(maxsize=8192)
def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """pki.verify_issued_by, remembered: the same proxy cert is checked against the same CAs on
    every node, and a node's cert against the same CAs at every flush."""
    return pki.verify_issued_by(cert, ca)

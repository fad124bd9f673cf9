"""A small Talos API client over grpclib: cached mTLS channels, `node` targeting, retries.

Every call goes to a control-plane endpoint with gRPC metadata `node: <address>`; the endpoint's
apid proxies it to the target (reference/talos.md §4.4). Calls that fail with UNAVAILABLE, a lost
connection or a refused TLS handshake are retried with exponential backoff until a deadline; other
gRPC errors are final.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from trustplan.providers.base import TLSIdentity
from trustplan.providers.talos.talosconfig import Endpoint
from trustplan.providers.talos.tls import client_context

from trustplan.system.tlserrors import trust_failure

log = logging.getLogger("trustplan.talos")
T = TypeVar("T")
S = TypeVar("S")

#: gRPC deadline of one call (the retry loop has its own, longer deadline)
CALL_TIMEOUT = 20.0
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
#: unary calls in flight on one connection at a time; the others queue, first come first served.
#: HTTP/2 servers should allow at least 100 concurrent streams (RFC 9113 §6.5.2) and grpclib/h2
#: servers allow exactly 100. Above the server's limit grpclib parks each extra call and wakes every
#: parked call whenever any stream closes: with hundreds of nodes in flight, CPU quadratic in nodes.
STREAMS_PER_CONNECTION = 100


class Transient(Exception):
    """A failure worth retrying; `kind` is 'tls', 'connect' or 'unavailable'."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def classify(exc: BaseException) -> Transient | None:
    """Map a transport-level exception to a Transient (None: not retryable)."""
    if isinstance(exc, GRPCError):
        if exc.status in (Status.UNAVAILABLE,):
            return Transient("unavailable", exc.message or "unavailable")
        if exc.status is Status.DEADLINE_EXCEEDED:
            return Transient("timeout", f"no answer within the {CALL_TIMEOUT:g} s deadline of one call")
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Transient("tls", trust_failure(exc))
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Transient("timeout", f"no answer within the {CALL_TIMEOUT:g} s deadline of one call")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)  # one raised by Python code has no reason
        return Transient("tls", f"TLS handshake refused ({reason})")
    if isinstance(exc, StreamTerminatedError | ProtocolError):
        # the server aborted the connection right after the handshake: it refused our client cert
        return Transient(
            "tls",
            f"TLS handshake refused by the server (client certificate not accepted: {type(exc).__name__} {exc})",
        )
    if isinstance(exc, ConnectionRefusedError):
        return Transient("connect", "connection refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Transient("tls", "TLS handshake refused: connection reset (client certificate not accepted?)")
    if isinstance(exc, OSError | asyncio.TimeoutError | ConnectionError):
        return Transient("connect", f"{type(exc).__name__}: {exc}".rstrip(": "))
    return None


class ChannelPool:
    """One grpclib Channel per (endpoint, credential), created on first use and reused."""

    def __init__(self, streams: int = STREAMS_PER_CONNECTION) -> None:
        self._channels: dict[tuple[Endpoint, TLSIdentity], Channel] = {}
        self._contexts: dict[TLSIdentity, ssl.SSLContext] = {}
        self._streams = streams
        self._slots: dict[tuple[Endpoint, TLSIdentity], asyncio.Semaphore] = {}
        self._stubs: dict[tuple[Endpoint, TLSIdentity, Callable[[Channel], object]], object] = {}

    @asynccontextmanager
    async def unary(
        self, endpoint: Endpoint, credential: TLSIdentity, stub: Callable[[Channel], S]
    ) -> AsyncIterator[S]:
        """`stub` (a generated service stub class) on the channel, for one unary call, once fewer
        than `streams` unary calls are in flight on it. Stubs are made once per channel (a stub
        builds a method object for every RPC of its service). Long-lived streams such as watches
        take `get` and no slot: they must not wait on the calls made inside them."""
        key = (endpoint, credential)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self._streams)
        async with slots:
            made = self._stubs.get((endpoint, credential, stub))
            if made is None:
                made = self._stubs[(endpoint, credential, stub)] = stub(self.get(endpoint, credential))
            yield made  # type: ignore[misc]  # made by `stub`, so an S

    def get(self, endpoint: Endpoint, credential: TLSIdentity) -> Channel:
        key = (endpoint, credential)
        channel = self._channels.get(key)
        if channel is None:
            ctx = self._contexts.get(credential)
            if ctx is None:
                ctx = self._contexts[credential] = client_context(
                    credential.cert_pem, credential.key_pem, credential.ca_bundle_pem
                )
            channel = Channel(
                endpoint.host,
                endpoint.port,
                ssl=ctx,
                config=Configuration(ssl_target_name_override=endpoint.host),
            )
            self._channels[key] = channel
        return channel

    def drop(self, endpoint: Endpoint, credential: TLSIdentity) -> None:
        """Forget (and close) a channel, e.g. after its connection went bad."""
        channel = self._channels.pop((endpoint, credential), None)
        if channel is not None:
            channel.close()
        self._slots.pop((endpoint, credential), None)
        self._stubs = {k: v for k, v in self._stubs.items() if k[:2] != (endpoint, credential)}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._contexts.clear()
        self._slots.clear()
        self._stubs.clear()


async def with_retry(
    attempt: Callable[[Endpoint], Awaitable[T]],
    endpoints: tuple[Endpoint, ...],
    timeout: float,
    on_failure: Callable[[Endpoint, Transient], None] | None = None,
    tls_timeout: float | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `attempt(endpoint)` until it succeeds, retrying Transient failures until `timeout`.

    Endpoints are tried in turn (the next one after a transport failure). Raises the last
    Transient when the time is up; any non-transient exception propagates at once. With
    `tls_timeout`, refused TLS handshakes are given up on sooner: outside the short window in which
    a node reloads its certs they do not heal by waiting. `clock` and `sleep` are time.monotonic and
    asyncio.sleep (tests pass a fake clock).
    """
    start = clock()
    deadline = start + timeout
    delay = BACKOFF_START
    index = 0
    while True:
        endpoint = endpoints[index % len(endpoints)]
        try:
            return await attempt(endpoint)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised if not transient
            transient = exc if isinstance(exc, Transient) else classify(exc)
            if transient is None:
                raise
            if on_failure is not None:
                on_failure(endpoint, transient)
            if transient.kind != "unavailable":
                index += 1  # the endpoint itself failed: try the next one
            now = clock()
            left = deadline - now
            if transient.kind == "tls" and tls_timeout is not None:
                left = min(left, start + tls_timeout - now)
            if left <= 0:
                log.info("%s: %s (%s); giving up", endpoint.host, transient.detail, transient.kind)
                raise transient from (exc if exc is not transient else None)
            log.info(
                "%s: %s (%s); retrying in %.1fs, %.0fs left",
                endpoint.host, transient.detail, transient.kind, min(delay, left), left,
            )
            await sleep(min(delay, left))
            delay = min(delay * 2, BACKOFF_MAX)

"""A proxied call served in this process, over a connection a real handshake has already proven.

A control plane proxies a `node`-targeted call to the target's apid over mutual TLS (router.py).
The first call on each connection goes over the wire: the handshake, the target's client-cert check
(EKU, trust) and the call are real. Once a call over that connection got an answer, the connection
is proven: as long as it stays open (same client protocol, not lost, the target still serving),
further calls on it are handed to the target's handler in this process instead of being encoded into
HTTP/2 frames, encrypted, decrypted and decoded again - the target would see nothing else on a kept
connection (the proxy cert's role, `talos-role` and `proxyfrom` metadata, no added latency). This
halves the simulator's per-call work on the proxied hop; both ends live in this process anyway.

What the caller observes is what the wire gives: the target's GRPCError unchanged; an error inside a
handler is UNKNOWN "Internal Server Error"; a unary handler that answers nothing fails the same way;
a target stopped mid-call (its connections dropped) ends the call as a lost connection
(StreamTerminatedError); the call's deadline raises TimeoutError. Anything that changes trust on
either side goes back to the wire: a control plane's PKI change re-checks or replaces its
connections (node.py), and a replaced or lost connection is not proven until a real call succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from multidict import MultiDict

if TYPE_CHECKING:
    from trustplan.providers.sim.node import SimNode

log = logging.getLogger("trustplan.sim")

Deliver = Callable[[Any], Awaitable[None]]


class _Peer:
    """The TLS peer the target sees: a control plane's proxy client cert (only its Subject O is read)."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self._cert = {"subject": tuple((("organizationName", role),) for role in roles)}

    def cert(self) -> dict[str, Any]:
        return self._cert


class LocalStream:
    """The target's side of one in-process call: what its handler reads and sends."""

    def __init__(
        self, cardinality: Cardinality, request: Any, metadata: MultiDict[str], peer: _Peer, deliver: Deliver
    ) -> None:
        self._streaming = cardinality.server_streaming
        self._request: Any = request
        self.metadata = metadata
        self.peer = peer
        self._deliver = deliver
        self.sent = 0

    async def recv_message(self) -> Any:
        request, self._request = self._request, None
        return request

    async def send_message(self, message: Any) -> None:
        if not self._streaming and self.sent:
            raise ProtocolError("Message was already sent")
        self.sent += 1
        await self._deliver(message)


async def serve(
    target: SimNode,
    method: str,
    request: Any,
    metadata: list[tuple[str, str]],
    roles: tuple[str, ...],
    deliver: Deliver,
    timeout: float,
) -> None:
    """Run `method` on `target` for a proxied call; every reply goes to `deliver`."""
    server = target._server  # noqa: SLF001 - the caller checked it serves
    assert server is not None
    handler = server._mapping.get(method)  # noqa: SLF001 - its method table (unknown: UNIMPLEMENTED)
    assert handler is not None, "the router's method table answers every method"
    stream = LocalStream(handler.cardinality, request, MultiDict(metadata), _Peer(roles), deliver)
    task = asyncio.ensure_future(handler.func(stream))
    server.local_calls.add(task)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and not (current is not None and current.cancelling()):
            raise StreamTerminatedError("Connection lost") from None  # the target dropped it
        raise
    except (GRPCError, TimeoutError):
        raise
    except Exception:
        log.exception("%s: application error in %s", target.name, method)
        raise GRPCError(Status.UNKNOWN, "Internal Server Error") from None
    finally:
        server.local_calls.discard(task)
        if not task.done():
            task.cancel()
    if not stream._streaming and not stream.sent:  # noqa: SLF001 - its own stream
        if target._server is not server:  # noqa: SLF001 - stopped while answering: the connection is gone
            raise StreamTerminatedError("Connection lost")
        raise GRPCError(Status.UNKNOWN, "Internal Server Error")

"""A proxied call served in this process: the target's handler, without the wire in between.

A control plane proxies a `node`-targeted call to the target's apid. When its connection to that
target is open or would open (the trust model in node.py: SimNode.local_target), the call is handed
to the target's handler here, instead of being dialled (a mutual-TLS handshake per new connection),
encoded into HTTP/2 frames, encrypted, decrypted and decoded again on both ends. The target sees what
it would see on that connection: the proxy cert's role (os:impersonator), `talos-role` and
`proxyfrom` metadata, no added latency. Both ends live in this process anyway.

What the caller observes is what the wire gives: the target's GRPCError unchanged; an error inside a
handler is UNKNOWN "Internal Server Error"; a unary handler that answers nothing fails the same way;
a target stopped mid-call (its connections dropped) ends the call as a lost connection
(StreamTerminatedError); the call's deadline raises TimeoutError. A connection the model refuses is
dialled for real, and fails like apid's.
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
    from trustplan_sim.node import SimNode

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
        #: what passing a reply on to the caller raised (the caller's own stream failing, say)
        self.delivery_error: BaseException | None = None

    async def recv_message(self) -> Any:
        request, self._request = self._request, None
        return request

    async def send_message(self, message: Any) -> None:
        if not self._streaming and self.sent:
            raise ProtocolError("Message was already sent")
        self.sent += 1
        try:
            await self._deliver(message)
        except Exception as exc:
            self.delivery_error = exc
            raise


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
    except Exception as exc:
        if exc is stream.delivery_error:
            raise  # the caller's side failed, as it would in the control plane's own forwarding
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

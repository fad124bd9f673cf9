"""apid's router, as the simulator runs it before every handler (talos internal/app/apid/pkg/director).

- `proxyfrom` metadata, or a call from another node's `os:impersonator`: served here.
- `node: <target>` (one value; several are INVALID_ARGUMENT): proxied one-to-one to the target's
  apid over mutual TLS with this control plane's `os:impersonator` cert; the reply passes unchanged.
- `nodes: <t1>, <t2>, ...` (what talosctl's `-n` sends): fanned out to every target, the replies
  joined into one, each message stamped with `metadata.hostname = <target>`; a target that fails
  contributes a message carrying `metadata.error` instead (apid's AppendInfo / BuildError). COSI
  methods cannot be fanned out (INVALID_ARGUMENT).
- A worker serves calls addressed to itself and refuses every other ("no request forwarding").
- Without either key the call is served here.
- A method no service here implements answers UNIMPLEMENTED (grpclib's own answer lacks the
  content-type header Go's gRPC client requires).

Proxied calls carry the caller's roles in `talos-role` metadata, believed only from an impersonator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.empty_pb2 import Empty
from grpclib import events
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.server import Server, Stream
from trustplan.providers.talos.proto import common_pb2, google_rpc_status_pb2
from trustplan_sim import direct

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

ROLE_KEY = "talos-role"
PROXY_ROLE = "os:impersonator"
UPSTREAM_TIMEOUT = 15.0

Forward = Callable[[Stream[Any, Any]], Awaitable[None]]


def peer_roles(stream: Stream[Any, Any]) -> list[str]:
    """Roles of the TLS peer: the Subject O values of its client cert."""
    return _roles_of_peer(stream.peer)


def _roles_of_peer(peer: Any) -> list[str]:
    cert = peer.cert() or {}
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "organizationName"]


class _Methods(dict[str, Handler]):
    """The server's method table; an unknown method gets a handler that answers UNIMPLEMENTED."""

    def get(self, key: str, default: Any = None) -> Handler:
        found = super().get(key)
        if found is not None:
            return found

        async def unimplemented(stream: Stream[Any, Any]) -> None:
            raise GRPCError(
                Status.UNIMPLEMENTED, f"unknown method {key.rsplit('/', 1)[-1]} for service {_service(key)}"
            )

        # the reply type only matters when fanning out: apid's error reply is an EmptyResponse
        return Handler(unimplemented, Cardinality.UNARY_UNARY, Empty, common_pb2.EmptyResponse)


def _service(method: str) -> str:
    return method.strip("/").split("/", 1)[0]


def install_router(server: Server, node: SimNode) -> None:
    """Route every request like apid: latency, `node`/`nodes` metadata, proxying, refusals."""
    methods = _Methods(server._mapping)  # noqa: SLF001 - grpclib keeps its method table there
    server._mapping = methods  # noqa: SLF001

    async def on_request(event: events.RecvRequest) -> None:
        proxied = PROXY_ROLE in _roles_of_peer(event.peer) or "proxyfrom" in event.metadata
        if node.cluster.latency and not proxied:
            await node.cluster.delay(node.cluster.latency)
        if proxied:
            return
        single = [str(t) for t in event.metadata.getall("node", [])]
        many = [str(t) for t in event.metadata.getall("nodes", [])]
        if len(single) > 1:
            raise GRPCError(Status.INVALID_ARGUMENT, "node metadata must be single-valued")
        local = (node.address, node.hostname)
        if node.role != "controlplane":  # no proxy client cert: only calls for itself
            if single and single[0] in local:
                single = []
            if len(many) == 1 and many[0] in local:
                many = []
            if single or many:
                raise GRPCError(Status.PERMISSION_DENIED, "no request forwarding")
            return
        handler = methods.get(event.method_name)
        if many:
            if event.method_name.startswith("/cosi."):
                raise GRPCError(Status.INVALID_ARGUMENT, "one-2-many proxying is not supported for COSI methods")
            event.method_func = _fan_out(node, many, event.method_name, handler)  # type: ignore[assignment]
        elif single and single[0] not in local:
            event.method_func = _proxy(node, single[0], event.method_name, handler)  # type: ignore[assignment]

    events.listen(server, events.RecvRequest, on_request)


def _upstream_metadata(stream: Stream[Any, Any], node: SimNode) -> list[tuple[str, str]]:
    return [(ROLE_KEY, role) for role in peer_roles(stream)] + [("proxyfrom", node.address)]


async def _call(
    node: SimNode,
    target: str,
    method: str,
    handler: Handler,
    request: Any,
    metadata: list[tuple[str, str]],
    deliver: direct.Deliver,
) -> None:
    """One proxied call from `node` to `target`'s apid; each reply goes to `deliver` (one for a unary
    method). In this process over an open (or openable) connection (direct.py), else dialled for real;
    either way the target's GRPCError, or a transport error, reaches the caller."""
    local = node.local_target(target)
    if local is not None:
        await direct.serve(local, method, request, metadata, (PROXY_ROLE,), deliver, UPSTREAM_TIMEOUT)
        return
    async with node.upstream(target).request(
        method,
        handler.cardinality,
        handler.request_type,
        handler.reply_type,
        metadata=metadata,
        timeout=UPSTREAM_TIMEOUT,
    ) as upstream:
        await upstream.send_message(request, end=True)
        if handler.cardinality is Cardinality.UNARY_UNARY:
            await deliver(await upstream.recv_message())
        else:
            while (reply := await upstream.recv_message()) is not None:
                await deliver(reply)


def _proxy(node: SimNode, target: str, method: str, handler: Handler) -> Forward:
    """One-to-one: the target's reply (or error) passes through unchanged."""

    async def forward(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        try:
            await _call(node, target, method, handler, request, _upstream_metadata(stream, node), stream.send_message)
        except GRPCError:
            raise
        except (TimeoutError, OSError, StreamTerminatedError, ProtocolError) as exc:
            raise GRPCError(Status.UNAVAILABLE, dial_error(target, node.cluster.port_of(target), exc)) from None

    return forward


def _fan_out(node: SimNode, targets: list[str], method: str, handler: Handler) -> Forward:
    """One-to-many (apid's aggregating director): every target's reply, stamped with its name."""
    streaming = handler.cardinality is not Cardinality.UNARY_UNARY

    async def one(request: Any, metadata: list[tuple[str, str]], target: str, out: asyncio.Queue[Any]) -> None:
        async def deliver(reply: Any) -> None:
            await out.put(_stamped(reply, target, streaming))

        try:
            await _call(node, target, method, handler, request, metadata, deliver)
        except GRPCError as exc:
            await out.put(_error_reply(handler.reply_type, target, exc.status, exc.message or "", streaming))
        except (TimeoutError, OSError, StreamTerminatedError, ProtocolError) as exc:
            message = dial_error(target, node.cluster.port_of(target), exc)
            await out.put(_error_reply(handler.reply_type, target, Status.UNAVAILABLE, message, streaming))

    async def forward(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        metadata = _upstream_metadata(stream, node)
        out: asyncio.Queue[Any] = asyncio.Queue()
        tasks = [asyncio.create_task(one(request, metadata, t, out)) for t in targets]
        done = asyncio.gather(*tasks)
        try:
            if streaming:
                while not (done.done() and out.empty()):
                    getter = asyncio.ensure_future(out.get())
                    await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        await stream.send_message(getter.result())
                    else:
                        getter.cancel()
            else:
                await done
                joined = handler.reply_type()
                while not out.empty():
                    joined.messages.extend(out.get_nowait().messages)
                await stream.send_message(joined)
        finally:
            for task in tasks:
                task.cancel()

    return forward


def _stamped(reply: Any, target: str, streaming: bool) -> Any:
    """apid's AppendInfo: merge `metadata {hostname: target}` into the reply's message."""
    if streaming:
        reply.metadata.hostname = target
    elif len(reply.messages):
        reply.messages[0].metadata.hostname = target
    return reply


def _error_reply(reply_type: Any, target: str, status: Status, message: str, streaming: bool) -> Any:
    """apid's BuildError: a message whose metadata carries the target's error."""
    metadata = common_pb2.Metadata(
        hostname=target,
        error=message,
        status=google_rpc_status_pb2.Status(code=status.value, message=message),
    )
    if streaming:
        return reply_type(metadata=metadata)
    reply = reply_type()
    reply.messages.add().metadata.CopyFrom(metadata)
    return reply


def dial_error(target: str, port: int, exc: BaseException) -> str:
    """How Go's gRPC client words a failed dial to `target`."""
    if isinstance(exc, ConnectionRefusedError):
        reason = f"dial tcp {target}:{port}: connect: connection refused"
    elif isinstance(exc, OSError) and exc.__class__.__module__ == "ssl":
        reason = f"authentication handshake failed: {getattr(exc, 'verify_message', None) or exc}"
    elif isinstance(exc, StreamTerminatedError | ProtocolError | ConnectionResetError):
        reason = "authentication handshake failed: remote error: tls: bad certificate"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return f'connection error: desc = "transport: {reason}"'

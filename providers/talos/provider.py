"""TalosProvider: read, write and verify node configs through the real Talos API.

- read:   COSI `State/Get` of `config/MachineConfigs.config.talos.dev/v1alpha1`; the spec's
          `proto_spec` is `MachineConfigSpec{yaml_marshalled}`: the config bytes exactly as applied.
- write:  `MachineService/ApplyConfiguration{data, mode=NO_REBOOT, dry_run}`.
- verify: `MachineService/Version` with the given credential (a verification gate).
- kubelet_restart: COSI `State/Watch` of `runtime/Services.v1alpha1.talos.dev/kubelet`, opened
          before a config change and waited on after it (talosctl's PatchNodeConfigWithKubeletRestart,
          reference/talos.md §1.2), with a timeout: talosctl can wait forever there (talos#10357).

All calls go to a control-plane endpoint from the talosconfig, with gRPC metadata `node: <address>`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.empty_pb2 import Empty
from grpclib.exceptions import GRPCError
from trustplan.providers.base import Capabilities, NodeConfig, NodeRef, TLSIdentity
from trustplan.providers.talos.client import CALL_TIMEOUT, ChannelPool, Transient, with_retry
from trustplan.providers.talos.proto import (
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
    resource_config_pb2,
    resource_v1alpha1_pb2,
)
from trustplan.providers.talos.resources import (
    CONFIG_ID,
    CONFIG_NAMESPACE,
    CONFIG_TYPE,
    MEMBERS_NAMESPACE,
    MEMBERS_TYPE,
    SERVICE_NAMESPACE,
    SERVICE_TYPE,
)
from trustplan.providers.talos.talosconfig import Endpoint, TalosConfig, load_talosconfig

from trustplan.errors import GateFailedError, NodeTimeoutError, NodeUnreachableError, ProviderError

KUBELET = "kubelet"
#: how client.classify names our refusal of a server cert (trustplan.system.tlserrors.trust_failure)
_SERVER_REFUSED = "TLS trust failure"
R = TypeVar("R")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TalosProvider:
    """The Provider Protocol over the Talos API (grpclib + mutual TLS; TLS is always verified).

    `credential=None` means the talosconfig's own client identity. Channels are cached per
    (endpoint, credential). Reads and writes retry UNAVAILABLE and connection failures for
    `retry_timeout` seconds (refused TLS handshakes only `tls_retry_timeout`, so that a caller can
    fall back to another credential quickly); verification gates retry for `verify_timeout` seconds.
    """

    def __init__(
        self,
        talosconfig_path: Path | str,
        context: str | None = None,
        nodes: Iterable[NodeRef] = (),
        verify_timeout: float = 60.0,
        retry_timeout: float = 10.0,
        *,
        tls_retry_timeout: float = 2.0,
        endpoints: Iterable[str] | None = None,
    ) -> None:
        self.config: TalosConfig = load_talosconfig(talosconfig_path, context)
        self.nodes = tuple(nodes)
        self.verify_timeout = verify_timeout
        self.retry_timeout = retry_timeout
        self.tls_retry_timeout = tls_retry_timeout
        if endpoints is not None:
            from trustplan.providers.talos.talosconfig import parse_endpoint

            self.endpoints: tuple[Endpoint, ...] = tuple(parse_endpoint(e) for e in endpoints)
        else:
            self.endpoints = self.config.endpoints
        self._own = self.config.credential()
        self._pool = ChannelPool()

    # --- Provider protocol ---------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """Everything: the Talos API takes a client credential through the talosconfig's endpoints,
        validates dry runs, and the cluster has a Kubernetes API, kubelets, members and workers'
        own apids to ask."""
        return Capabilities(needs_credential=True, dry_run=True, kubernetes_api=True, endpoints=True,
                            kubelet=self, members=self, client_trust=self)

    async def read(self, node: NodeRef, credential: TLSIdentity | None = None) -> NodeConfig:
        """The node's active machine config (exact bytes) and its digest."""
        cred = credential or self._own
        request = cosi_state_pb2.GetRequest(namespace=CONFIG_NAMESPACE, type=CONFIG_TYPE, id=CONFIG_ID)

        async def attempt(endpoint: Endpoint) -> cosi_state_pb2.GetResponse:
            stub = cosi_state_grpc.StateStub(self._pool.get(endpoint, cred))
            return await stub.Get(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        response = await self._call(node, "read the machine config", attempt, self.retry_timeout, cred)
        spec = response.resource.spec
        if spec.proto_spec:
            data = resource_config_pb2.MachineConfigSpec.FromString(spec.proto_spec).yaml_marshalled
        elif spec.yaml_spec:
            import yaml

            from trustplan.system.safeyaml import FastLoader

            data = str(yaml.load(spec.yaml_spec, Loader=FastLoader)).encode()
        else:
            raise ProviderError(f"node {node.address}: the MachineConfig resource has an empty spec")
        return NodeConfig(node=node, data=data, digest=_digest(data))

    async def write(
        self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None = None, dry_run: bool = False
    ) -> str:
        """ApplyConfiguration(mode=NO_REBOOT); returns the node's mode_details and warnings."""
        cred = credential or self._own
        request = machine_pb2.ApplyConfigurationRequest(
            data=data, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT, dry_run=dry_run
        )

        async def attempt(endpoint: Endpoint) -> machine_pb2.ApplyConfigurationResponse:
            stub = machine_grpc.MachineServiceStub(self._pool.get(endpoint, cred))
            return await stub.ApplyConfiguration(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        what = "validate the new config (dry run)" if dry_run else "apply the new config"
        response = await self._call(node, what, attempt, self.retry_timeout, cred)
        lines: list[str] = []
        for message in response.messages:
            if message.mode_details:
                lines.append(message.mode_details.rstrip("\n"))
            lines.extend(f"warning: {w}" for w in message.warnings)
        return "\n".join(lines)

    async def verify(self, node: NodeRef, credential: TLSIdentity | None = None) -> str:
        """Version through the endpoint with `credential`; returns the node's Talos tag.

        Retries (including refused TLS handshakes, which are expected for a moment while a node
        reloads its trust) until `verify_timeout`, then raises GateFailedError.
        """
        cred = credential or self._own
        failures: list[Transient] = []

        async def attempt(endpoint: Endpoint) -> machine_pb2.VersionResponse:
            stub = machine_grpc.MachineServiceStub(self._pool.get(endpoint, cred))
            return await stub.Version(Empty(), metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        try:
            response = await with_retry(attempt, self.endpoints, self.verify_timeout, lambda _e, t: failures.append(t))
        except Transient as exc:
            raise GateFailedError(
                f"node {node.address}: Version with the client cert issued by "
                f"{_short(cred.issuer)} failed for {self.verify_timeout:g}s: {exc.detail}{_trusting(cred)}",
                hint=_hint(exc),
            ) from None
        except GRPCError as exc:
            raise GateFailedError(
                f"node {node.address}: Version refused: {exc.status.name}: {exc.message or 'no message'}"
            ) from None
        tags = [m.version.tag for m in response.messages if m.version.tag]
        return tags[0] if tags else "unknown version"

    @asynccontextmanager
    async def kubelet_restart(
        self, node: NodeRef, credential: TLSIdentity | None = None, timeout: float = 180.0
    ) -> AsyncIterator[KubeletWatch]:
        """Watch the node's kubelet service around a config change that restarts it.

        On entry the Watch is open and its first event showed the kubelet running and healthy
        (else ProviderError "kubelet is not healthy on NODE", as talosctl). Apply the config inside
        the block, then `await watch.wait()`: it returns once the kubelet went down and came back
        running and healthy, or raises ProviderError after `timeout` seconds.
        """
        cred = credential or self._own
        request = cosi_state_pb2.WatchRequest(namespace=SERVICE_NAMESPACE, type=SERVICE_TYPE, id=KUBELET, api_version=1)

        async def attempt(endpoint: Endpoint) -> tuple[AsyncExitStack, _Events, Any]:
            stack = AsyncExitStack()
            try:
                stub = cosi_state_grpc.StateStub(self._pool.get(endpoint, cred))
                stream = await stack.enter_async_context(stub.Watch.open(metadata=self._metadata(node)))
                stack.push_async_callback(_cancel, stream)  # a watch never ends by itself: reset it
                await stream.send_message(request, end=True)
                events = _Events(stream)
                first = await asyncio.wait_for(events.next(), CALL_TIMEOUT)
            except BaseException:
                await stack.aclose()
                raise
            return stack, events, first

        stack, events, first = await self._call(node, "watch the kubelet service", attempt, self.retry_timeout)

        async def reopen() -> _Events:
            """A new Watch after the stream ended early; its first event is the current state."""
            more, again, current = await self._call(node, "watch the kubelet service", attempt, self.retry_timeout)
            stack.push_async_callback(more.aclose)
            again.push_front(current)
            return again

        async with stack:
            state = _service_state(first)
            if first is None or first.event_type == cosi_state_pb2.DESTROYED or state != (True, True):
                seen = (
                    "not running"
                    if first is None or first.event_type == cosi_state_pb2.DESTROYED
                    else (f"running={state[0]}, healthy={state[1]}")
                )
                raise ProviderError(
                    f"kubelet is not healthy on {node.address} ({seen}); not changing its Kubernetes CA",
                    hint="check it with `talosctl -n NODE service kubelet`; nothing was sent to this node",
                )
            yield KubeletWatch(node.address, events, timeout, reopen)

    async def members(self, credential: TLSIdentity | None = None) -> list[tuple[str, str, str]]:
        """The cluster's members as the discovery service sees them: (address, role, hostname).

        COSI List of `cluster/Members.cluster.talos.dev` on an endpoint (no `node` metadata). The
        first address counts, as in talosctl; `init` counts as controlplane. Discovery can be wrong
        (a VIP listed as a node's first address, talos#10357): the result is for a human to check.
        """
        import yaml

        from trustplan.system.safeyaml import FastLoader

        request = cosi_state_pb2.ListRequest(namespace=MEMBERS_NAMESPACE, type=MEMBERS_TYPE)

        async def attempt(endpoint: Endpoint) -> list[cosi_state_pb2.ListResponse]:
            stub = cosi_state_grpc.StateStub(self._pool.get(endpoint, credential or self._own))
            return list(await stub.List(request, timeout=CALL_TIMEOUT))

        responses = await self._call(NodeRef(str(self.endpoints[0].host)), "list the cluster members", attempt,
                                     self.retry_timeout)
        out = []
        for r in responses:
            spec = yaml.load(r.resource.spec.yaml_spec or "{}", Loader=FastLoader) or {}
            addresses = spec.get("addresses") or []
            if not addresses:
                continue
            role = "worker" if spec.get("machineType") == "worker" else "controlplane"
            out.append((str(addresses[0]), role, str(spec.get("hostname") or r.resource.metadata.id)))
        return out

    async def probe_client_trust(
        self, node: NodeRef, credentials: list[TLSIdentity], timeout: float = 3.0
    ) -> list[bool | None]:
        """Which client certs the node's own apid accepts: Version straight to `node.address`
        (not through an endpoint's proxy), once per credential. True: accepted; False: the node
        refused the client cert; None: unknown (not reachable directly, or we do not trust its
        server cert). A worker's client-trust bundle comes from a control plane's trustd at its last
        certificate request (reference/talos.md §2.4) and cannot be read any other way."""
        direct = (Endpoint(node.address, node.port),)

        async def one(cred: TLSIdentity) -> bool | None:
            async def attempt(endpoint: Endpoint) -> machine_pb2.VersionResponse:
                stub = machine_grpc.MachineServiceStub(self._pool.get(endpoint, cred))
                return await stub.Version(Empty(), timeout=timeout)

            try:
                await with_retry(attempt, direct, timeout, tls_timeout=min(timeout, self.tls_retry_timeout))
            except Transient as exc:
                # our own refusal of its server cert says nothing about its trust in ours
                return False if exc.kind == "tls" and not exc.detail.startswith(_SERVER_REFUSED) else None
            except GRPCError:
                return True  # the handshake passed: the call itself is another matter
            finally:
                self._pool.drop(direct[0], cred)
            return True

        return list(await asyncio.gather(*(one(c) for c in credentials)))

    async def close(self) -> None:
        """Close every cached channel."""
        self._pool.close()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _metadata(node: NodeRef) -> dict[str, str]:
        return {"node": node.address}

    async def _call(
        self,
        node: NodeRef,
        what: str,
        attempt: Callable[[Endpoint], Awaitable[R]],
        timeout: float,
        cred: TLSIdentity | None = None,
    ) -> R:
        try:
            return await with_retry(attempt, self.endpoints, timeout, tls_timeout=self.tls_retry_timeout)
        except Transient as exc:
            if exc.kind == "tls":
                message = f"node {node.address}: cannot {what}: {exc.detail}{_trusting(cred)}"
                raise ProviderError(message, hint=_hint(exc)) from None
            if exc.kind == "timeout":
                raise NodeTimeoutError(
                    f"node {node.address}: cannot {what}: timed out: {exc.detail} (retried for {timeout:g} s)",
                    hint="nothing answered within the deadline: the node may be overloaded, stuck, or behind a "
                    "network that drops packets; check it, then run the command again",
                ) from None
            endpoints = ", ".join(str(e) for e in self.endpoints)
            raise NodeUnreachableError(
                f"node {node.address}: cannot {what}: unreachable after {timeout:g}s (via {endpoints}): {exc.detail}",
                hint="check that the node is up and that its address in cluster.nodes is right",
            ) from None
        except GRPCError as exc:
            message = f"node {node.address}: cannot {what}: {exc.status.name}: {exc.message or 'no message'}"
            raise ProviderError(message) from None

    async def __aenter__(self) -> TalosProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _cancel(stream: Any) -> None:
    """Reset a client stream (RST_STREAM) so that leaving it does not wait for the server's end."""
    with contextlib.suppress(Exception):  # already ended, never sent, or the connection is gone
        await stream.cancel()


class _Events:
    """The events of a COSI Watch stream, one at a time (a WatchResponse may carry several)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer: collections.deque[Any] = collections.deque()

    def push_front(self, event: Any) -> None:
        if event is not None:
            self._buffer.appendleft(event)

    async def next(self) -> Any:
        """The next CREATED/UPDATED/DESTROYED event, or None when the stream ended."""
        while True:
            while self._buffer:
                event = self._buffer.popleft()
                if event.event_type == cosi_state_pb2.ERRORED:
                    raise ProviderError(f"the kubelet watch failed: {event.error or 'errored event'}")
                if event.event_type in (cosi_state_pb2.CREATED, cosi_state_pb2.UPDATED, cosi_state_pb2.DESTROYED):
                    return event
            response = await self._stream.recv_message()
            if response is None:
                return None
            self._buffer.extend(response.event)


def _service_state(event: Any) -> tuple[bool, bool]:
    """(running, healthy) of a Service resource event (proto_spec, else yaml_spec)."""
    if event is None or event.event_type == cosi_state_pb2.DESTROYED:
        return (False, False)
    spec = event.resource.spec
    if spec.proto_spec:
        parsed = resource_v1alpha1_pb2.ServiceSpec.FromString(spec.proto_spec)
        return (parsed.running, parsed.healthy)
    if spec.yaml_spec:
        import yaml

        from trustplan.system.safeyaml import FastLoader

        doc = yaml.load(spec.yaml_spec, Loader=FastLoader) or {}
        return (bool(doc.get("running")), bool(doc.get("healthy")))
    return (False, False)


class KubeletWatch:
    """An open Watch of one node's kubelet (from TalosProvider.kubelet_restart)."""

    async def _open_again(self) -> _Events:
        """Open the watch again, retrying (the node may be restarting) until the outer timeout."""
        assert self._reopen is not None
        while True:
            await asyncio.sleep(0.2)
            try:
                return await self._reopen()
            except ProviderError:
                continue

    def __init__(
        self, address: str, events: _Events, timeout: float, reopen: Callable[[], Awaitable[_Events]] | None = None
    ) -> None:
        self.address = address
        self._events = events
        self.timeout = timeout
        self._reopen = reopen

    async def wait(self) -> None:
        """Until the kubelet went down (DESTROYED, or not running) and came back running and
        healthy; ProviderError after `timeout` seconds. A watch that ends early is opened again
        (after that, a running and healthy kubelet counts as back: the restart may have happened
        while no watch was open)."""
        try:
            async with asyncio.timeout(self.timeout):
                went_down = False
                while True:
                    event = await self._events.next()
                    if event is None:
                        if self._reopen is None:
                            raise ProviderError(
                                f"the kubelet watch on {self.address} ended before the kubelet came back",
                                hint="check it with `talosctl -n NODE service kubelet`",
                            )
                        self._events = await self._open_again()
                        went_down = True
                        continue
                    running, healthy = _service_state(event)
                    if event.event_type == cosi_state_pb2.DESTROYED or not running:
                        went_down = True
                    elif went_down and running and healthy:
                        return
        except TimeoutError:
            raise ProviderError(
                f"kubelet on {self.address} did not come back within {self.timeout:g} s after its "
                "Kubernetes CA changed (the new config is applied): timeout",
                hint="check `talosctl -n NODE service kubelet` and its logs; rollout.verify.timeout sets the wait",
            ) from None


def _short(fp: str) -> str:
    return fp[: len("sha256:") + 12] if fp else "an unknown CA"


def _trusting(cred: TLSIdentity | None) -> str:
    """Which CAs the client trusted, for a trust failure's message."""
    if cred is None or not cred.trusted:
        return ""
    return "; the client trusts " + ", ".join(_short(fp) for fp in cred.trusted)


def _hint(exc: Transient) -> str | None:
    if "unknown authority" in exc.detail:
        return "the client's CA bundle (talosconfig `ca`) does not hold the CA that issued the node's certificate"
    if "hostname mismatch" in exc.detail:
        return "the endpoint's certificate does not name the address in the talosconfig; check the endpoints"
    if exc.kind == "tls":
        return (
            "the endpoint or the node does not trust this client certificate, or the client does not "
            "trust the server certificate"
        )
    return None

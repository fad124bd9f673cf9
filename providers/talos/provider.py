"""TalosProvider: read, write and verify node configs through the real Talos API.

- read:   COSI `State/Get` of `config/MachineConfigs.config.talos.dev/v1alpha1`; the spec's
          `proto_spec` is `MachineConfigSpec{yaml_marshalled}`: the config bytes exactly as applied.
- write:  `MachineService/ApplyConfiguration{data, mode=NO_REBOOT, dry_run}`.
- verify: `MachineService/Version` with the given credential (a verification gate); verify_many
          asks many nodes in one call (`nodes` metadata: apid fans it out and joins the replies).
- kubelet_restart: COSI `State/Watch` of `runtime/Services.v1alpha1.talos.dev/kubelet` (read by kubelet.py), opened
          before a config change and waited on after it (talosctl's PatchNodeConfigWithKubeletRestart,
          docs/talos-model.md: talosctl rotate-ca), with a timeout: talosctl can wait forever there (talos#10357).

All calls go to a control-plane endpoint from the talosconfig, with gRPC metadata `node: <address>`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.empty_pb2 import Empty
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from trustplan.providers.base import Capabilities, NodeConfig, NodeRef, TLSIdentity
from trustplan.providers.talos.client import (
    BACKOFF_MAX,
    BACKOFF_START,
    CALL_TIMEOUT,
    ChannelPool,
    Transient,
    with_retry,
)
from trustplan.providers.talos.kubelet import KUBELET, KubeletWatch, WatchEvents, cancel_stream, service_state
from trustplan.providers.talos.proto import (
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
    resource_config_pb2,
    resource_secrets_pb2,
)
from trustplan.providers.talos.resources import (
    CONFIG_ID,
    CONFIG_NAMESPACE,
    CONFIG_TYPE,
    K8S_DYNAMIC_ID,
    K8S_DYNAMIC_TYPE,
    MEMBERS_NAMESPACE,
    MEMBERS_TYPE,
    SECRETS_NAMESPACE,
    SERVICE_NAMESPACE,
    SERVICE_TYPE,
)
from trustplan.providers.talos.talosconfig import Endpoint, TalosConfig, load_talosconfig

from trustplan.errors import GateFailedError, NodeTimeoutError, NodeUnreachableError, ProviderError
from trustplan.talos.fingerprint import sha256_fingerprint

#: how client.classify names our refusal of a server cert (trustplan.system.tlserrors.trust_failure)
_SERVER_REFUSED = "TLS trust failure"
R = TypeVar("R")


def _digest(data: bytes) -> str:
    return sha256_fingerprint(data)


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
        self._first = {n.address: i % max(1, len(self.endpoints)) for i, n in enumerate(self.nodes)}

    # --- Provider protocol ---------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """Everything: the Talos API takes a client credential through the talosconfig's endpoints,
        validates dry runs, and the cluster has a Kubernetes API, kubelets, members and workers'
        own apids to ask."""
        return Capabilities(needs_credential=True, dry_run=True, kubernetes_api=True, endpoints=True,
                            kubelet=self, members=self, client_trust=self, verify_many=self, trial=self,
                            apiserver_certs=self, reboot=self)

    async def read(self, node: NodeRef, credential: TLSIdentity | None = None) -> NodeConfig:
        """The node's active machine config (exact bytes) and its digest."""
        cred = credential or self._own
        request = cosi_state_pb2.GetRequest(namespace=CONFIG_NAMESPACE, type=CONFIG_TYPE, id=CONFIG_ID)

        async def attempt(endpoint: Endpoint) -> cosi_state_pb2.GetResponse:
            async with self._pool.unary(endpoint, cred, cosi_state_grpc.StateStub) as stub:
                return await stub.Get(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        response = await self._call(node, "read the machine config", attempt, self.retry_timeout, cred)
        spec = response.resource.spec
        if spec.proto_spec:
            data = resource_config_pb2.MachineConfigSpec.FromString(spec.proto_spec).yaml_marshalled
        elif spec.yaml_spec:
            from trustplan.system import safeyaml

            data = str(safeyaml.load(spec.yaml_spec)).encode()
        else:
            raise ProviderError(f"node {node.address}: the MachineConfig resource has an empty spec")
        return NodeConfig(node=node, data=data, digest=_digest(data))

    async def write(
        self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None = None, dry_run: bool = False
    ) -> str:
        """ApplyConfiguration(mode=NO_REBOOT); returns the node's mode_details and warnings. It also
        confirms an earlier try-mode write (Talos cancels the pending revert on any non-TRY apply)."""
        request = machine_pb2.ApplyConfigurationRequest(
            data=data, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT, dry_run=dry_run
        )
        return await self._apply(node, request, credential, dry_run)

    async def write_trial(
        self, node: NodeRef, data: bytes, *, credential: TLSIdentity | None = None, timeout: float
    ) -> str:
        """ApplyConfiguration(mode=TRY, try_mode_timeout): the node runs `data` without persisting it
        and returns to its config of before after `timeout` seconds, unless write() confirms it
        (Talos v1.14.1 v1alpha1_server.go: RollbackToConfigAfter / CancelConfigRollbackTimeout)."""
        request = machine_pb2.ApplyConfigurationRequest(
            data=data, mode=machine_pb2.ApplyConfigurationRequest.TRY,
            try_mode_timeout=dt.timedelta(seconds=timeout),
        )
        return await self._apply(node, request, credential, False, trial=True)

    async def _apply(
        self, node: NodeRef, request: machine_pb2.ApplyConfigurationRequest, credential: TLSIdentity | None,
        dry_run: bool, *, trial: bool = False
    ) -> str:
        cred = credential or self._own
        sent = False
        config = cosi_state_pb2.GetRequest(namespace=CONFIG_NAMESPACE, type=CONFIG_TYPE, id=CONFIG_ID)

        async def attempt(endpoint: Endpoint) -> machine_pb2.ApplyConfigurationResponse:
            nonlocal sent
            if trial and sent:
                # a retried TRY whose first attempt landed (its answer lost) would make the tried config
                # the one Talos reverts to: read the node first, and leave a landed try alone
                async with self._pool.unary(endpoint, cred, cosi_state_grpc.StateStub) as state:
                    got = await state.Get(config, metadata=self._metadata(node), timeout=CALL_TIMEOUT)
                if got.resource.spec.proto_spec:
                    active = resource_config_pb2.MachineConfigSpec.FromString(got.resource.spec.proto_spec)
                    if active.yaml_marshalled == request.data:
                        return machine_pb2.ApplyConfigurationResponse()
            sent = True
            async with self._pool.unary(endpoint, cred, machine_grpc.MachineServiceStub) as stub:
                return await stub.ApplyConfiguration(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        what = "validate the new config (dry run)" if dry_run else "apply the new config"
        response = await self._call(node, what, attempt, self.retry_timeout, cred)
        lines: list[str] = []
        for message in response.messages:
            if message.mode_details:
                lines.append(message.mode_details.rstrip("\n"))
            lines.extend(f"warning: {w}" for w in message.warnings)
        return "\n".join(lines)

    async def reboot(self, node: NodeRef, credential: TLSIdentity | None = None) -> None:
        """MachineService/Reboot, mode DEFAULT (not FORCE: services stop first, Talos v1.14.1
        v1alpha1_sequencer.go Reboot). Retried like a write: a retry after a lost answer can reboot the
        node twice, which the gates after it wait out like one."""
        cred = credential or self._own
        request = machine_pb2.RebootRequest(mode=machine_pb2.RebootRequest.DEFAULT)

        async def attempt(endpoint: Endpoint) -> machine_pb2.RebootResponse:
            async with self._pool.unary(endpoint, cred, machine_grpc.MachineServiceStub) as stub:
                return await stub.Reboot(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        await self._call(node, "reboot", attempt, self.retry_timeout, cred)

    async def verify(self, node: NodeRef, credential: TLSIdentity | None = None) -> str:
        """Version through the endpoint with `credential`; returns the node's Talos tag.

        Retries (including refused TLS handshakes, which are expected for a moment while a node
        reloads its trust) until `verify_timeout`, then raises GateFailedError.
        """
        cred = credential or self._own
        failures: list[Transient] = []

        async def attempt(endpoint: Endpoint) -> machine_pb2.VersionResponse:
            async with self._pool.unary(endpoint, cred, machine_grpc.MachineServiceStub) as stub:
                return await stub.Version(Empty(), metadata=self._metadata(node), timeout=CALL_TIMEOUT)

        try:
            response = await with_retry(
                attempt, self._endpoints_for(node), self.verify_timeout, lambda _e, t: failures.append(t)
            )
        except Transient as exc:
            raise self._gate_failed(node.address, cred, exc.detail, _hint(exc)) from None
        except GRPCError as exc:
            raise GateFailedError(
                f"node {node.address}: Version refused: {exc.status.name}: {exc.message or 'no message'}"
            ) from None
        tags = [m.version.tag for m in response.messages if m.version.tag]
        return tags[0] if tags else "unknown version"

    async def verify_many(
        self, nodes: Sequence[NodeRef], credential: TLSIdentity | None = None
    ) -> list[str | GateFailedError]:
        """verify() on several nodes with one Version call: `nodes` metadata makes the endpoint's
        apid fan the call out to every target and join the replies, each stamped with its target
        (talosctl -n a,b,c). A target whose reply carries UNAVAILABLE (not reachable yet, or its
        trust still reloading) is asked again, with the others that did, until `verify_timeout`.
        Returns, in node order, each node's Talos tag or the GateFailedError verify() would raise."""
        cred = credential or self._own
        deadline = time.monotonic() + self.verify_timeout
        results: dict[str, str | GateFailedError] = {}
        pending = [n.address for n in nodes]
        waiting: dict[str, str] = {}  # address -> what its last reply said
        delay = BACKOFF_START
        while pending:
            metadata = [("nodes", address) for address in pending]

            async def attempt(endpoint: Endpoint, metadata: list[tuple[str, str]] = metadata) -> Any:
                async with self._pool.unary(endpoint, cred, machine_grpc.MachineServiceStub) as stub:
                    return await stub.Version(Empty(), metadata=metadata, timeout=CALL_TIMEOUT)

            try:
                response = await with_retry(attempt, self.endpoints, max(0.0, deadline - time.monotonic()))
            except Transient as exc:  # the endpoint itself: every node fails as verify() would
                for address in pending:
                    results[address] = self._gate_failed(address, cred, exc.detail, _hint(exc))
                break
            except GRPCError as exc:
                for address in pending:
                    results[address] = GateFailedError(
                        f"node {address}: Version refused: {exc.status.name}: {exc.message or 'no message'}"
                    )
                break
            replies = {m.metadata.hostname: m for m in response.messages}
            again = []
            for address in pending:
                message = replies.get(address)
                if message is None:
                    waiting[address] = "the endpoint's reply has no message for this node"
                    again.append(address)
                elif not message.metadata.error:
                    results[address] = message.version.tag or "unknown version"
                elif message.metadata.status.code == Status.UNAVAILABLE.value:
                    waiting[address] = message.metadata.error
                    again.append(address)
                else:
                    code = message.metadata.status.code
                    name = Status(code).name if code in Status._value2member_map_ else f"code {code}"
                    results[address] = GateFailedError(
                        f"node {address}: Version refused: {name}: {message.metadata.error}"
                    )
            pending = again
            if pending and time.monotonic() + delay > deadline:
                for address in pending:
                    results[address] = self._gate_failed(address, cred, waiting[address], None)
                break
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        return [results[n.address] for n in nodes]

    def _gate_failed(self, address: str, cred: TLSIdentity, detail: str, hint: str | None) -> GateFailedError:
        return GateFailedError(
            f"node {address}: Version with the client cert issued by {_short(cred.issuer)} failed for "
            f"{self.verify_timeout:g}s: {detail}{_trusting(cred)}",
            hint=hint,
        )

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

        async def attempt(endpoint: Endpoint) -> tuple[AsyncExitStack, WatchEvents, Any]:
            stack = AsyncExitStack()
            try:
                stub = cosi_state_grpc.StateStub(self._pool.get(endpoint, cred))
                stream = await stack.enter_async_context(stub.Watch.open(metadata=self._metadata(node)))
                stack.push_async_callback(cancel_stream, stream)  # a watch never ends by itself: reset it
                await stream.send_message(request, end=True)
                events = WatchEvents(stream)
                first = await asyncio.wait_for(events.next(), CALL_TIMEOUT)
            except BaseException:
                await stack.aclose()
                raise
            return stack, events, first

        stack, events, first = await self._call(node, "watch the kubelet service", attempt, self.retry_timeout)

        async def reopen() -> WatchEvents:
            """A new Watch after the stream ended early; its first event is the current state."""
            more, again, current = await self._call(node, "watch the kubelet service", attempt, self.retry_timeout)
            stack.push_async_callback(more.aclose)
            again.push_front(current)
            return again

        async with stack:
            state = service_state(first)
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

    async def front_proxy_cert(self, node: NodeRef, credential: TLSIdentity | None = None) -> bytes:
        """The front-proxy client certificate (PEM; never the key) the node's kube-apiserver presents
        to aggregated API servers: COSI Get of secrets/KubernetesDynamicCerts.secrets.talos.dev/
        k8s-dynamic-certs (`frontProxy`; os:admin), where Talos's KubernetesDynamicCertsController
        puts the pair it issues from the aggregator issuing CA. b"" when the node serves none."""
        from trustplan.system import safeyaml

        cred = credential or self._own
        request = cosi_state_pb2.GetRequest(namespace=SECRETS_NAMESPACE, type=K8S_DYNAMIC_TYPE, id=K8S_DYNAMIC_ID)

        async def attempt(endpoint: Endpoint) -> cosi_state_pb2.GetResponse | None:
            async with self._pool.unary(endpoint, cred, cosi_state_grpc.StateStub) as stub:
                try:
                    return await stub.Get(request, metadata=self._metadata(node), timeout=CALL_TIMEOUT)
                except GRPCError as exc:
                    if exc.status == Status.NOT_FOUND:
                        return None
                    raise

        response = await self._call(node, "read the API server's certificates", attempt, self.retry_timeout, cred)
        if response is None:
            return b""
        spec = response.resource.spec
        if spec.proto_spec:
            return bytes(resource_secrets_pb2.KubernetesDynamicCertsSpec.FromString(spec.proto_spec).front_proxy.crt)
        pair = (safeyaml.load(spec.yaml_spec or "{}") or {}).get("frontProxy") or {}
        return base64.b64decode(str(pair.get("crt") or ""))

    async def members(self, credential: TLSIdentity | None = None) -> list[tuple[str, str, str]]:
        """The cluster's members as the discovery service sees them: (address, role, hostname).

        COSI List of `cluster/Members.cluster.talos.dev` on an endpoint (no `node` metadata). The
        first address counts, as in talosctl; `init` counts as controlplane. Discovery can be wrong
        (a VIP listed as a node's first address, talos#10357): the result is for a human to check.
        """
        from trustplan.system import safeyaml

        request = cosi_state_pb2.ListRequest(namespace=MEMBERS_NAMESPACE, type=MEMBERS_TYPE)

        async def attempt(endpoint: Endpoint) -> list[cosi_state_pb2.ListResponse]:
            stub = cosi_state_grpc.StateStub(self._pool.get(endpoint, credential or self._own))
            return list(await stub.List(request, timeout=CALL_TIMEOUT))

        responses = await self._call(NodeRef(str(self.endpoints[0].host)), "list the cluster members", attempt,
                                     self.retry_timeout)
        out = []
        for r in responses:
            spec = safeyaml.load(r.resource.spec.yaml_spec or "{}") or {}
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
        certificate request (docs/talos-model.md: worker trust through trustd) and cannot be read any other way."""
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

    def _endpoints_for(self, node: NodeRef) -> tuple[Endpoint, ...]:
        """The endpoints in the order calls about `node` try them. Like talosctl, which balances its
        calls over every endpoint, the nodes are spread over the endpoints: the i-th node given to
        the provider goes first to endpoint i mod (number of endpoints), any other node to one
        fixed by its address; the other endpoints follow for failover. One connection per endpoint
        then carries a share of the calls, and every control plane's apid a share of the proxying."""
        count = len(self.endpoints)
        if count < 2:
            return self.endpoints
        first = self._first.get(node.address)
        if first is None:
            first = zlib.crc32(node.address.encode()) % count
        return self.endpoints[first:] + self.endpoints[:first]

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
            return await with_retry(attempt, self._endpoints_for(node), timeout, tls_timeout=self.tls_retry_timeout)
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

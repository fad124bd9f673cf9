"""The Talos API as the simulator serves it: MachineService and COSI State, plus apid's router.

The router (a grpclib RecvRequest listener) runs before every handler: it applies the injected
latency, refuses `node` routing on workers ("no request forwarding"), and on a control plane
replaces the handler with a proxy to the target node's apid over a fresh mutual-TLS connection made
with the control plane's `os:impersonator` cert. Proxied calls carry the caller's roles in
`talos-role` metadata, which the target believes only from an impersonator.
"""

from __future__ import annotations

import asyncio
import difflib
import io
import tarfile
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import yaml
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp
from grpclib import events
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.server import Server, Stream
from trustplan.providers.talos.proto import (
    common_pb2,
    cosi_resource_pb2,
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
    resource_config_pb2,
    resource_v1alpha1_pb2,
)
from trustplan.providers.talos.resources import (
    CONFIG_NAMESPACE,
    CONFIG_TYPE,
    MEMBERS_NAMESPACE,
    MEMBERS_TYPE,
    SERVICE_NAMESPACE,
    SERVICE_TYPE,
)

from trustplan import machineconfig, pki

try:  # libyaml
    from yaml import CSafeDumper as _Dumper
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
from trustplan.errors import TrustplanError

if TYPE_CHECKING:
    from trustplan.providers.sim.kube import ServiceState
    from trustplan.providers.sim.node import SimNode

TALOS_TAG = machineconfig.TALOS_VERSION
ROLE_KEY = "talos-role"
PROXY_ROLE = "os:impersonator"
READ_ROLES = {"os:admin", "os:operator", "os:reader"}
SERVICE_OWNER = "v1alpha1.ServiceController"
UPSTREAM_TIMEOUT = 15.0
Mode = machine_pb2.ApplyConfigurationRequest


def peer_roles(stream: Stream[Any, Any]) -> list[str]:
    """Roles of the TLS peer: the Subject O values of its client cert."""
    cert = stream.peer.cert() or {}
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "organizationName"]


def caller_roles(stream: Stream[Any, Any]) -> list[str]:
    """The caller's roles: its own cert's, or those an impersonating control plane forwarded."""
    roles = peer_roles(stream)
    if PROXY_ROLE in roles and stream.metadata is not None:
        return [str(r) for r in stream.metadata.getall(ROLE_KEY, [])]
    return roles


def require(stream: Stream[Any, Any], allowed: set[str]) -> None:
    if not allowed.intersection(caller_roles(stream)):
        raise GRPCError(Status.PERMISSION_DENIED, "not authorized")


class MachineService(machine_grpc.MachineServiceBase):
    """machine.MachineService: Version, ApplyConfiguration, Kubeconfig."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    async def Version(self, stream: Stream[Empty, machine_pb2.VersionResponse]) -> None:
        require(stream, READ_ROLES)
        await stream.recv_message()
        await stream.send_message(
            machine_pb2.VersionResponse(
                messages=[
                    machine_pb2.Version(
                        metadata=common_pb2.Metadata(hostname=self.node.hostname),
                        version=machine_pb2.VersionInfo(
                            tag=TALOS_TAG,
                            sha="trustplan-sim",
                            built="",
                            go_version="go1.24.9",
                            os="linux",
                            arch="amd64",
                        ),
                        platform=machine_pb2.PlatformInfo(name="trustplan-sim", mode="container"),
                        features=machine_pb2.FeaturesInfo(rbac=True),
                    )
                ]
            )
        )

    async def ApplyConfiguration(
        self, stream: Stream[machine_pb2.ApplyConfigurationRequest, machine_pb2.ApplyConfigurationResponse]
    ) -> None:
        require(stream, {"os:admin"})
        request = await stream.recv_message()
        assert request is not None
        node = self.node
        faults = node.faults
        if faults.apply_error is not None and faults.apply_error_times != 0:
            if faults.apply_error_times is not None:
                faults.apply_error_times -= 1
            raise GRPCError(Status.INTERNAL, faults.apply_error)
        if request.mode not in (Mode.AUTO, Mode.NO_REBOOT):
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"apply mode {Mode.Mode.Name(request.mode)} is not supported by the simulator",
            )
        try:
            parsed = machineconfig.parse(request.data, "config")
            errors = machineconfig.validate(parsed)
        except TrustplanError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"failed to parse config: {exc}") from None
        if errors:
            listed = "\n".join(f"\t* {e}" for e in errors)
            raise GRPCError(Status.INVALID_ARGUMENT, f"{len(errors)} error(s) occurred:\n{listed}")
        if request.dry_run:
            diff = "".join(
                difflib.unified_diff(
                    node.config.decode().splitlines(keepends=True),
                    request.data.decode().splitlines(keepends=True),
                    "a/machine-config",
                    "b/machine-config",
                )
            )
            details = (
                "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\n\n"
                f"Config diff:\n\n{diff or 'No changes.'}"
            )
        else:
            if node.apply_lock.locked():
                raise GRPCError(Status.FAILED_PRECONDITION, "another apply configuration is already in progress")
            async with node.apply_lock:
                node.set_config(request.data, parsed)
            if faults.die_on_apply:
                await node.stop()
                return
            details = "Applied configuration without a reboot"
        await stream.send_message(
            machine_pb2.ApplyConfigurationResponse(
                messages=[
                    machine_pb2.ApplyConfiguration(
                        metadata=common_pb2.Metadata(hostname=node.hostname),
                        mode=Mode.NO_REBOOT,
                        mode_details=details,
                    )
                ]
            )
        )

    async def Kubeconfig(self, stream: Stream[Empty, common_pb2.Data]) -> None:
        require(stream, {"os:admin"})
        await stream.recv_message()
        node = self.node
        if node.role != "controlplane":
            raise GRPCError(Status.FAILED_PRECONDITION, "kubeconfig is only available on control plane nodes")
        await stream.send_message(common_pb2.Data(bytes=_kubeconfig_tar(node)))


def _kubeconfig_tar(node: SimNode) -> bytes:
    """A tar.gz holding one admin kubeconfig, as Talos's Kubeconfig API returns it."""
    cfg = node.parsed
    fields = cfg.ca_fields("kubernetes")
    assert fields.issuer and fields.issuer_key
    ca_cert = pki.load_cert_pem(fields.issuer, node.name)
    ca_key = pki.load_key_pem(fields.issuer_key, node.name)
    cert, key = pki.issue_client_cert(ca_cert, ca_key, "system:masters", pki.utcnow(), common_name="admin")
    cluster = cfg.v1alpha1.get("cluster") or {}
    name = cluster.get("clusterName", "sim")
    server = (cluster.get("controlPlane") or {}).get("endpoint", f"https://{node.address}:6443")
    cas = b"".join([fields.issuer, *fields.accepted])
    user = f"admin@{name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": pki.b64encode_pem(cas)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": pki.b64encode_pem(pki.cert_to_pem(cert)),
                    "client-key-data": pki.b64encode_pem(pki.key_to_pem(key)),
                },
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": name, "namespace": "default", "user": user}}],
        "current-context": user,
    }
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("kubeconfig")
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def member_resource(node: SimNode) -> cosi_resource_pb2.Resource:
    """`cluster/Members.cluster.talos.dev/<hostname>`, as the discovery service reports it (yaml spec)."""
    spec = {
        "nodeId": node.name,
        "addresses": [node.address],
        "hostname": node.hostname,
        "machineType": node.role,
        "operatingSystem": "Talos (v1.11.5)",
    }
    return cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace=MEMBERS_NAMESPACE, type=MEMBERS_TYPE, id=node.hostname, version="1", phase="running"
        ),
        spec=cosi_resource_pb2.Spec(yaml_spec=yaml.safe_dump(spec, sort_keys=False)),
    )


class StateService(cosi_state_grpc.StateBase):
    """cosi.resource.State over the resources a rotation reads: the active machine config
    (`config/MachineConfigs.config.talos.dev`, os:admin only) and the kubelet service
    (`runtime/Services.v1alpha1.talos.dev/kubelet`, any reader role)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def _resource(self, rid: str) -> cosi_resource_pb2.Resource:
        node = self.node
        created, updated = Timestamp(), Timestamp()
        created.FromDatetime(node.created)
        updated.FromDatetime(node.updated)
        spec = resource_config_pb2.MachineConfigSpec(yaml_marshalled=node.config)
        return cosi_resource_pb2.Resource(
            metadata=cosi_resource_pb2.Metadata(
                namespace=CONFIG_NAMESPACE,
                type=CONFIG_TYPE,
                id=rid,
                version=str(node.version),
                owner="",
                phase="running",
                created=created,
                updated=updated,
            ),
            spec=cosi_resource_pb2.Spec(
                proto_spec=spec.SerializeToString(),
                yaml_spec=yaml.dump(node.config.decode(), Dumper=_Dumper),
            ),
        )

    def _kind(self, stream: Stream[Any, Any], namespace: str, rtype: str, rid: str | None) -> str:
        """Which resource the request is about ("config" or "service"), after the role check."""
        if namespace == CONFIG_NAMESPACE and rtype == CONFIG_TYPE:
            require(stream, {"os:admin"})  # MachineConfig is a sensitive resource
            if rid is not None and rid not in ("v1alpha1", "persistent"):
                raise GRPCError(Status.NOT_FOUND, f"resource {CONFIG_TYPE}({namespace}/{rid}@undefined) doesn't exist")
            return "config"
        if namespace == SERVICE_NAMESPACE and rtype == SERVICE_TYPE:
            require(stream, READ_ROLES)
            return "service"
        if namespace == MEMBERS_NAMESPACE and rtype == MEMBERS_TYPE:
            require(stream, READ_ROLES)
            return "members"
        raise GRPCError(
            Status.NOT_FOUND,
            f"resource type {rtype!r} in namespace {namespace!r} is not served by the simulator",
        )

    def _service_missing(self, rid: str) -> GRPCError:
        return GRPCError(
            Status.NOT_FOUND, f"resource {SERVICE_TYPE}({SERVICE_NAMESPACE}/{rid}@undefined) doesn't exist"
        )

    async def Get(self, stream: Stream[cosi_state_pb2.GetRequest, cosi_state_pb2.GetResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if self._kind(stream, request.namespace, request.type, request.id) == "service":
            state = self.node.kubelet.state if request.id == "kubelet" else None
            if state is None:
                raise self._service_missing(request.id)
            await stream.send_message(cosi_state_pb2.GetResponse(resource=service_resource("kubelet", state)))
            return
        await stream.send_message(cosi_state_pb2.GetResponse(resource=self._resource(request.id)))

    async def List(self, stream: Stream[cosi_state_pb2.ListRequest, cosi_state_pb2.ListResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        kind = self._kind(stream, request.namespace, request.type, None)
        if kind == "members":  # the discovery service's view: every node of the cluster
            for member in self.node.cluster.nodes:
                await stream.send_message(cosi_state_pb2.ListResponse(resource=member_resource(member)))
            return
        if kind == "service":
            state = self.node.kubelet.state
            if state is not None:
                await stream.send_message(cosi_state_pb2.ListResponse(resource=service_resource("kubelet", state)))
            return
        for rid in ("persistent", "v1alpha1"):
            await stream.send_message(cosi_state_pb2.ListResponse(resource=self._resource(rid)))

    async def Watch(self, stream: Stream[cosi_state_pb2.WatchRequest, cosi_state_pb2.WatchResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if self._kind(stream, request.namespace, request.type, None) == "service":
            if not request.HasField("id"):
                raise GRPCError(Status.UNIMPLEMENTED, "the simulator watches a service by id only")
            await self._watch_service(stream, request.id)
            return
        rid = request.id if request.HasField("id") else "v1alpha1"
        self._kind(stream, request.namespace, request.type, rid)
        event_type = cosi_state_pb2.CREATED
        while True:
            changed = self.node.changed
            await stream.send_message(
                cosi_state_pb2.WatchResponse(
                    event=[cosi_state_pb2.Event(resource=self._resource(rid), event_type=event_type)]
                )
            )
            event_type = cosi_state_pb2.UPDATED
            await changed.wait()

    async def _watch_service(
        self, stream: Stream[cosi_state_pb2.WatchRequest, cosi_state_pb2.WatchResponse], rid: str
    ) -> None:
        """Like COSI's Watch of one resource: first its current state (CREATED, or DESTROYED with an
        empty tombstone when it does not exist), then every change in order."""
        kubelet = self.node.kubelet if rid == "kubelet" else None
        if kubelet is None:
            await stream.send_message(_service_event(cosi_state_pb2.DESTROYED, _tombstone(rid)))
            await asyncio.Event().wait()  # a service the simulator does not run never appears
            return
        queue = kubelet.subscribe()
        try:
            state = kubelet.state
            first = service_resource(rid, state) if state is not None else _tombstone(rid, kubelet.last.version)
            event_type = cosi_state_pb2.CREATED if state is not None else cosi_state_pb2.DESTROYED
            await stream.send_message(_service_event(event_type, first))
            while True:
                change, changed = await queue.get()
                await stream.send_message(_service_event(change, service_resource(rid, changed)))
        finally:
            kubelet.unsubscribe(queue)


def _service_event(event_type: int, resource: cosi_resource_pb2.Resource) -> cosi_state_pb2.WatchResponse:
    return cosi_state_pb2.WatchResponse(
        event=[cosi_state_pb2.Event(resource=resource, event_type=event_type)]  # type: ignore[arg-type]
    )


def _tombstone(rid: str, version: int = 0) -> cosi_resource_pb2.Resource:
    return cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace=SERVICE_NAMESPACE, type=SERVICE_TYPE, id=rid, version=str(version), phase="running"
        )
    )


def service_resource(rid: str, state: ServiceState) -> cosi_resource_pb2.Resource:
    """A `runtime/Services.v1alpha1.talos.dev` resource: proto_spec is Talos's ServiceSpec."""
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(state.created)
    updated.FromDatetime(state.updated)
    spec = resource_v1alpha1_pb2.ServiceSpec(running=state.running, healthy=state.healthy, unknown=state.unknown)
    flag = {True: "true", False: "false"}
    return cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace=SERVICE_NAMESPACE,
            type=SERVICE_TYPE,
            id=rid,
            version=str(state.version),
            owner=SERVICE_OWNER,
            phase="running",
            created=created,
            updated=updated,
        ),
        spec=cosi_resource_pb2.Spec(
            proto_spec=spec.SerializeToString(),
            yaml_spec=(
                f"running: {flag[state.running]}\nhealthy: {flag[state.healthy]}\nunknown: {flag[state.unknown]}\n"
            ),
        ),
    )


def handlers_for(node: SimNode) -> list[Any]:
    """The services a node serves."""
    return [MachineService(node), StateService(node)]


def install_router(server: Server, node: SimNode, services: list[Any]) -> None:
    """Route every request like apid: latency, `node` metadata, proxying, forwarding refusal."""
    mapping: dict[str, Handler] = {}
    for service in services:
        mapping.update(service.__mapping__())

    async def on_request(event: events.RecvRequest) -> None:
        proxied = PROXY_ROLE in _roles_of_peer(event.peer)
        if node.cluster.latency and not proxied:
            await asyncio.sleep(node.cluster.latency)
        targets = [str(t) for t in event.metadata.getall("node", [])]
        if len(targets) > 1:
            raise GRPCError(Status.INVALID_ARGUMENT, "only one 'node' metadata value is allowed; use 'nodes'")
        if not targets or proxied or targets[0] in (node.address, node.hostname):
            return
        if node.role != "controlplane":
            raise GRPCError(Status.PERMISSION_DENIED, "no request forwarding")
        handler = mapping[event.method_name]
        event.method_func = _proxy(node, targets[0], event.method_name, handler)  # type: ignore[assignment]

    events.listen(server, events.RecvRequest, on_request)


def _roles_of_peer(peer: Any) -> list[str]:
    cert = peer.cert() or {}
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "organizationName"]


def _proxy(node: SimNode, target: str, method: str, handler: Handler) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
    async def forward(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        metadata = [(ROLE_KEY, role) for role in peer_roles(stream)] + [("proxyfrom", node.address)]
        channel = node.upstream(target)
        try:
            async with channel.request(
                method,
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
                metadata=metadata,
                timeout=UPSTREAM_TIMEOUT,
            ) as upstream:
                await upstream.send_message(request, end=True)
                if handler.cardinality is Cardinality.UNARY_UNARY:
                    await stream.send_message(await upstream.recv_message())
                else:
                    while (reply := await upstream.recv_message()) is not None:
                        await stream.send_message(reply)
        except GRPCError:
            raise
        except (TimeoutError, OSError, StreamTerminatedError, ProtocolError) as exc:
            raise GRPCError(Status.UNAVAILABLE, _dial_error(target, node.cluster.port_of(target), exc)) from None

    return forward


def _dial_error(target: str, port: int, exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        reason = f"dial tcp {target}:{port}: connect: connection refused"
    elif isinstance(exc, OSError) and exc.__class__.__module__ == "ssl":
        reason = f"authentication handshake failed: {getattr(exc, 'verify_message', None) or exc}"
    elif isinstance(exc, StreamTerminatedError | ProtocolError | ConnectionResetError):
        reason = "authentication handshake failed: remote error: tls: bad certificate"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return f'connection error: desc = "transport: {reason}"'

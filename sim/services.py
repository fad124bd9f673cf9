"""The Talos API as the simulator serves it: machine.MachineService and cosi.resource.State.

Routing (`node` / `nodes` metadata, proxying, latency) happens before these handlers, in
router.py; the resources served are built in resources.py.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import io
import tarfile
from typing import TYPE_CHECKING, Any

import yaml
from google.protobuf.empty_pb2 import Empty
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from trustplan.providers.talos.proto import (
    common_pb2,
    cosi_resource_pb2,
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
)
from trustplan.providers.talos.resources import CONFIG_TYPE, K8S_DYNAMIC_TYPE, MEMBERS_TYPE, SERVICE_TYPE
from trustplan_sim import oracle, resources
from trustplan_sim.etcdapi import EtcdCalls
from trustplan_sim.router import PROXY_ROLE, ROLE_KEY, peer_roles

from trustplan.talos import certgen, pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

READ_ROLES = {"os:admin", "os:operator", "os:reader"}
#: the Go release Talos v1.12.1 is built with (pkg/machinery/constants GoVersion)
GO_VERSION = "go1.25.5"
Mode = machine_pb2.ApplyConfigurationRequest
#: the ids of the machine config resource (the same bytes under both)
CONFIG_IDS = ("persistent", "v1alpha1")
#: pkg/machinery/constants ConfigTryTimeout: a TRY apply without try_mode_timeout reverts after 1 minute
DEFAULT_TRY_TIMEOUT = 60.0


def _go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration.String() prints it ("1m0s", "5s", "1.5s", "500ms")."""
    whole = int(seconds)
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"  # Go: 500ms
    if whole != seconds:
        return f"{seconds:g}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def caller_roles(stream: Stream[Any, Any]) -> list[str]:
    """The caller's roles: its own cert's, or those an impersonating control plane forwarded."""
    roles = peer_roles(stream)
    if PROXY_ROLE in roles and stream.metadata is not None:
        return [str(r) for r in stream.metadata.getall(ROLE_KEY, [])]
    return roles


def require(stream: Stream[Any, Any], allowed: set[str]) -> None:
    if not allowed.intersection(caller_roles(stream)):
        raise GRPCError(Status.PERMISSION_DENIED, "not authorized")


class MachineService(EtcdCalls, machine_grpc.MachineServiceBase):
    """machine.MachineService: Version, ApplyConfiguration, Kubeconfig; Reboot, ServiceRestart and the
    etcd calls (trustplan_sim.etcdapi)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def _require(self, stream: Stream[Any, Any], allowed: set[str]) -> None:
        require(stream, allowed)

    async def Version(self, stream: Stream[Empty, machine_pb2.VersionResponse]) -> None:
        require(stream, READ_ROLES)
        await stream.recv_message()
        await stream.send_message(
            machine_pb2.VersionResponse(
                messages=[
                    machine_pb2.Version(
                        metadata=common_pb2.Metadata(hostname=self.node.hostname),
                        version=machine_pb2.VersionInfo(
                            tag=self.node.cluster.talos_version,
                            sha="trustplan-sim",
                            built="",
                            go_version=GO_VERSION,
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
        if request.mode not in (Mode.AUTO, Mode.NO_REBOOT, Mode.TRY):
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"apply mode {Mode.Mode.Name(request.mode)} is not supported by the simulator",
            )
        try:
            parsed, errors = _parsed(request.data)
        except oracle.ConfigError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"failed to parse config: {exc}") from None
        if errors:
            listed = "\n".join(f"\t* {e}" for e in errors)
            raise GRPCError(Status.INVALID_ARGUMENT, f"{len(errors)} error(s) occurred:\n{listed}")
        validator = node.cluster.talosctl_validator
        if validator is not None and (problem := await validator.problem(request.data)) is not None:
            raise GRPCError(Status.INVALID_ARGUMENT, f"talosctl validate --mode metal --strict: {problem}")
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
                if request.mode == Mode.TRY:  # v1alpha1_server.go: RollbackToConfigAfter, then SetConfig
                    timeout = DEFAULT_TRY_TIMEOUT
                    if request.HasField("try_mode_timeout"):
                        timeout = request.try_mode_timeout.ToTimedelta().total_seconds()
                    node.rollback_after(timeout)
                else:  # any other mode cancels a pending rollback (CancelConfigRollbackTimeout)
                    node.cancel_rollback()
                node.set_config(request.data, parsed)
            if faults.die_on_apply:
                await node.stop()
                return
            details = "Applied configuration without a reboot"
            if request.mode == Mode.TRY:
                details += (
                    "\nThe config is applied in 'try' mode and will be automatically reverted back in "
                    f"{_go_duration(timeout)}"
                )
        await stream.send_message(
            machine_pb2.ApplyConfigurationResponse(
                messages=[
                    machine_pb2.ApplyConfiguration(
                        metadata=common_pb2.Metadata(hostname=node.hostname),
                        mode=Mode.TRY if request.mode == Mode.TRY else Mode.NO_REBOOT,
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


@functools.lru_cache(maxsize=1024)
def _parsed(data: bytes) -> tuple[oracle.NodeConfig, tuple[str, ...]]:
    """A submitted config, read and validated by the simulator's own oracle (never by trustplan's
    parser); remembered by its bytes (a plan's dry run sends the configs its apply's last phase sends
    again; read configs are never changed in place)."""
    parsed = oracle.read(data)
    return parsed, tuple(oracle.validate(parsed))


def _kubeconfig_tar(node: SimNode) -> bytes:
    """A tar.gz holding one admin kubeconfig, as Talos's Kubeconfig API returns it."""
    cfg = node.parsed
    fields = cfg.ca_fields("kubernetes")
    assert fields.issuer and fields.issuer_key
    ca_cert = pki.load_cert_pem(fields.issuer, node.name)
    ca_key = pki.load_key_pem(fields.issuer_key, node.name)
    cert, key = certgen.issue_client_cert(ca_cert, ca_key, "system:masters", pki.utcnow(), common_name="admin")
    name = cfg.cluster_name or "sim"
    server = cfg.endpoint or f"https://{node.address}:6443"
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


class StateService(cosi_state_grpc.StateBase):
    """cosi.resource.State (Get, List, Watch) over the resources in `resources.DEFINITIONS`.

    Sensitive types (machine config, OS and Kubernetes roots) need `os:admin`, the others any
    reader role. Every Watch first sends an empty WatchResponse, as COSI's server does to say the
    watch is established (its client discards that first message)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def _kind(self, stream: Stream[Any, Any], namespace: str, rtype: str) -> str:
        """The served type the request is about, after the role check."""
        definition = resources.BY_KIND.get((namespace, rtype))
        if definition is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"resource type {rtype!r} in namespace {namespace!r} is not served by the simulator",
            )
        require(stream, {"os:admin"} if definition.sensitive else READ_ROLES)
        return rtype

    def _items(self, rtype: str) -> list[cosi_resource_pb2.Resource]:
        """Every resource of a type on this node, in id order."""
        node = self.node
        if rtype == CONFIG_TYPE:
            return [resources.config_resource(node, rid) for rid in CONFIG_IDS]
        if rtype == MEMBERS_TYPE:
            version = node.cluster.talos_version
            return sorted(
                (resources.member_resource(n, version) for n in node.cluster.nodes), key=lambda r: r.metadata.id
            )
        if rtype == resources.OS_ROOT_TYPE:
            return [resources.os_root_resource(node)]
        if rtype == resources.K8S_ROOT_TYPE:
            found = resources.kubernetes_root_resource(node)
            return [found] if found is not None else []
        if rtype == K8S_DYNAMIC_TYPE:
            dynamic = resources.kubernetes_dynamic_resource(node)
            return [dynamic] if dynamic is not None else []
        if rtype == SERVICE_TYPE:
            state = node.kubelet.state
            return [resources.service_resource("kubelet", state)] if state is not None else []
        assert rtype == resources.RD_TYPE
        return sorted(
            (resources.rd_resource(d, node.cluster.created) for d in resources.DEFINITIONS),
            key=lambda r: r.metadata.id,
        )

    def _get(self, namespace: str, rtype: str, rid: str) -> cosi_resource_pb2.Resource:
        if rtype == CONFIG_TYPE:  # only the one asked for
            items = [resources.config_resource(self.node, rid)] if rid in CONFIG_IDS else []
        else:
            items = self._items(rtype)
        for item in items:
            if item.metadata.id == rid:
                return item
        raise GRPCError(Status.NOT_FOUND, f"resource {rtype}({namespace}/{rid}@undefined) doesn't exist")

    async def Get(self, stream: Stream[cosi_state_pb2.GetRequest, cosi_state_pb2.GetResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        rtype = self._kind(stream, request.namespace, request.type)
        resource = self._get(request.namespace, rtype, request.id)
        await stream.send_message(cosi_state_pb2.GetResponse(resource=resource))

    async def List(self, stream: Stream[cosi_state_pb2.ListRequest, cosi_state_pb2.ListResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        rtype = self._kind(stream, request.namespace, request.type)
        for item in self._items(rtype):
            await stream.send_message(cosi_state_pb2.ListResponse(resource=item))

    async def Watch(self, stream: Stream[cosi_state_pb2.WatchRequest, cosi_state_pb2.WatchResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        rtype = self._kind(stream, request.namespace, request.type)
        if rtype == SERVICE_TYPE:
            if not request.HasField("id"):
                raise GRPCError(Status.UNIMPLEMENTED, "the simulator watches a service by id only")
            await stream.send_message(cosi_state_pb2.WatchResponse())
            await self._watch_service(stream, request.id)
            return
        if rtype != CONFIG_TYPE:
            raise GRPCError(Status.UNIMPLEMENTED, f"the simulator does not watch {rtype}")
        rid = request.id if request.HasField("id") else "v1alpha1"
        self._get(request.namespace, rtype, rid)
        await stream.send_message(cosi_state_pb2.WatchResponse())
        event_type = cosi_state_pb2.CREATED
        while True:
            changed = self.node.changed
            await stream.send_message(
                cosi_state_pb2.WatchResponse(
                    event=[
                        cosi_state_pb2.Event(resource=resources.config_resource(self.node, rid), event_type=event_type)
                    ]
                )
            )
            event_type = cosi_state_pb2.UPDATED
            await changed.wait()

    async def _watch_service(
        self, stream: Stream[cosi_state_pb2.WatchRequest, cosi_state_pb2.WatchResponse], rid: str
    ) -> None:
        """Like COSI's Watch of one resource: its current state (CREATED, or DESTROYED with an
        empty tombstone when it does not exist), then every change in order."""
        kubelet = self.node.kubelet if rid == "kubelet" else None
        if kubelet is None:
            await stream.send_message(_service_event(cosi_state_pb2.DESTROYED, resources.tombstone(rid)))
            await asyncio.Event().wait()  # a service the simulator does not run never appears
            return
        queue = kubelet.subscribe()
        try:
            state = kubelet.state
            if state is not None:
                first = resources.service_resource(rid, state)
            else:
                first = resources.tombstone(rid, kubelet.last.version)
            event_type = cosi_state_pb2.CREATED if state is not None else cosi_state_pb2.DESTROYED
            await stream.send_message(_service_event(event_type, first))
            while True:
                change, changed = await queue.get()
                await stream.send_message(_service_event(change, resources.service_resource(rid, changed)))
        finally:
            kubelet.unsubscribe(queue)


def _service_event(event_type: int, resource: cosi_resource_pb2.Resource) -> cosi_state_pb2.WatchResponse:
    return cosi_state_pb2.WatchResponse(
        event=[cosi_state_pb2.Event(resource=resource, event_type=event_type)]  # type: ignore[arg-type]
    )


def handlers_for(node: SimNode) -> list[Any]:
    """The services a node serves."""
    return [MachineService(node), StateService(node)]

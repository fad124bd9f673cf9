"""What the real talosctl needs from the simulator (issue 10), checked with a plain grpclib client:
plural `nodes` metadata, ResourceDefinitions, OSRoot / KubernetesRoot, Watch's empty first message,
protobuf Member specs, UNIMPLEMENTED for unserved methods, one consistent Talos version."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from simharness import run_with_cluster
from trustplan.providers.talos.proto import (
    cosi_meta_pb2,
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
    resource_cluster_pb2,
    resource_enums_pb2,
    resource_secrets_pb2,
)
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim import configgen
from trustplan_sim.cluster import SimCluster

OS_ROOT = {"namespace": "secrets", "type": "OSRootSecrets.secrets.talos.dev"}
K8S_ROOT = {"namespace": "secrets", "type": "KubernetesRootSecrets.secrets.talos.dev"}
RD = {"namespace": "meta", "type": "ResourceDefinitions.meta.cosi.dev"}
MEMBERS = {"namespace": "cluster", "type": "Members.cluster.talos.dev"}
SERVICES = {"namespace": "runtime", "type": "Services.v1alpha1.talos.dev"}


def _channel(cluster: SimCluster, address: str | None = None, talosconfig: Path | None = None) -> Channel:
    tc = load_talosconfig(talosconfig or cluster.talosconfig)
    host = address or cluster.controlplanes[0].address
    return Channel(host, 50000, ssl=client_context(tc.crt_pem, tc.key_pem, tc.ca_pem))


def _nodes(*targets: str) -> list[tuple[str, str]]:
    return [("nodes", t) for t in targets]


def test_plural_nodes_metadata_reaches_the_named_nodes(tmp_path: Path) -> None:
    """talosctl's `-n` sends `nodes`: the endpoint proxies to each one and stamps its answer."""

    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        channel = _channel(cluster)
        machine = machine_grpc.MachineServiceStub(channel)
        try:
            one = await machine.Version(Empty(), metadata=_nodes(worker.address), timeout=5)
            assert [m.metadata.hostname for m in one.messages] == [worker.address]
            both = await machine.Version(Empty(), metadata=_nodes(cp.address, worker.address), timeout=5)
            assert sorted(m.metadata.hostname for m in both.messages) == sorted([cp.address, worker.address])
            assert all(m.version.tag == cluster.talos_version and not m.metadata.error for m in both.messages)

            # apply-config -n worker -e cp lands on the worker, not on the endpoint
            before_cp = cp.config
            edited = worker.config.replace(b"hostname: worker-1", b"hostname: worker-one")
            request = machine_pb2.ApplyConfigurationRequest(
                data=edited, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT
            )
            reply = await machine.ApplyConfiguration(request, metadata=_nodes(worker.address), timeout=10)
            assert [m.metadata.hostname for m in reply.messages] == [worker.address]
            assert worker.config == edited and cp.config == before_cp

            # COSI cannot be fanned out
            state = cosi_state_grpc.StateStub(channel)
            with pytest.raises(GRPCError) as refused:
                await state.Get(cosi_state_pb2.GetRequest(**OS_ROOT, id="os"), metadata=_nodes(cp.address), timeout=5)
            assert refused.value.status is Status.INVALID_ARGUMENT

            # a target that is down answers with an error message; the others still answer
            await cluster.stop_node("worker-2")
            down = cluster.node("worker-2").address
            mixed = await machine.Version(Empty(), metadata=_nodes(worker.address, down), timeout=10)
            by_host = {m.metadata.hostname: m for m in mixed.messages}
            assert by_host[worker.address].version.tag and not by_host[worker.address].metadata.error
            assert "connection refused" in by_host[down].metadata.error
            assert by_host[down].metadata.status.code == Status.UNAVAILABLE.value
        finally:
            channel.close()

        worker_channel = _channel(cluster, worker.address)
        try:
            machine = machine_grpc.MachineServiceStub(worker_channel)
            own = await machine.Version(Empty(), metadata=_nodes(worker.address), timeout=5)
            assert own.messages[0].version.tag == cluster.talos_version
            with pytest.raises(GRPCError) as forwarding:
                await machine.Version(Empty(), metadata=_nodes(cp.address), timeout=5)
            assert forwarding.value.status is Status.PERMISSION_DENIED
        finally:
            worker_channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=2)


def test_resource_definitions_are_served(tmp_path: Path) -> None:
    """`talosctl get <alias>` resolves the type through meta/ResourceDefinitions."""

    async def scenario(cluster: SimCluster) -> None:
        channel = _channel(cluster)
        try:
            listed = await cosi_state_grpc.StateStub(channel).List(cosi_state_pb2.ListRequest(**RD), timeout=5)
        finally:
            channel.close()
        specs = {
            r.resource.metadata.id: cosi_meta_pb2.ResourceDefinitionSpec.FromString(r.resource.spec.proto_spec)
            for r in listed
        }
        mc = specs["machineconfigs.config.talos.dev"]
        assert mc.resource_type == "MachineConfigs.config.talos.dev" and mc.default_namespace == "config"
        assert {"machineconfig", "mc", "machineconfigs"} <= set(mc.all_aliases)
        assert mc.sensitivity == cosi_meta_pb2.ResourceDefinitionSpec.SENSITIVE
        assert "member" in specs["members.cluster.talos.dev"].all_aliases
        assert "osrootsecret" in specs["osrootsecrets.secrets.talos.dev"].all_aliases
        assert "rd" in specs["resourcedefinitions.meta.cosi.dev"].all_aliases
        assert "svc" in specs["services.v1alpha1.talos.dev"].all_aliases

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=0)


@pytest.mark.parametrize("layout", ["legacy", "multidoc"])
def test_os_and_kubernetes_roots(tmp_path: Path, layout: str) -> None:
    """rotate-ca reads the issuing CAs from secrets/OSRootSecrets/os and .../KubernetesRootSecrets/k8s."""

    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        channel = _channel(cluster)
        state = cosi_state_grpc.StateStub(channel)
        try:
            got = await state.Get(
                cosi_state_pb2.GetRequest(**OS_ROOT, id="os"), metadata={"node": cp.address}, timeout=5
            )
            os_root = resource_secrets_pb2.OSRootSpec.FromString(got.resource.spec.proto_spec)
            assert os_root.issuing_ca.crt == cluster.secrets.os.crt_pem and os_root.issuing_ca.key
            assert [c.crt for c in os_root.accepted_c_as] == [cluster.secrets.os.crt_pem]
            assert yaml.safe_load(got.resource.spec.yaml_spec)["token"] == os_root.token != ""

            got = await state.Get(
                cosi_state_pb2.GetRequest(**OS_ROOT, id="os"), metadata={"node": worker.address}, timeout=5
            )
            worker_root = resource_secrets_pb2.OSRootSpec.FromString(got.resource.spec.proto_spec)
            assert not worker_root.HasField("issuing_ca")  # a worker has no key: no issuing CA
            assert [c.crt for c in worker_root.accepted_c_as] == [cluster.secrets.os.crt_pem]

            got = await state.Get(
                cosi_state_pb2.GetRequest(**K8S_ROOT, id="k8s"), metadata={"node": cp.address}, timeout=5
            )
            k8s_root = resource_secrets_pb2.KubernetesRootSpec.FromString(got.resource.spec.proto_spec)
            assert k8s_root.issuing_ca.crt == cluster.secrets.k8s.crt_pem and k8s_root.issuing_ca.key
            assert k8s_root.name == "sim"
            with pytest.raises(GRPCError) as missing:
                await state.Get(
                    cosi_state_pb2.GetRequest(**K8S_ROOT, id="k8s"), metadata={"node": worker.address}, timeout=5
                )
            assert missing.value.status is Status.NOT_FOUND
        finally:
            channel.close()

        reader = cluster.write_talosconfig(tmp_path / "reader", role="os:reader")
        channel = _channel(cluster, talosconfig=reader)
        try:
            with pytest.raises(GRPCError) as denied:  # a sensitive resource
                await cosi_state_grpc.StateStub(channel).Get(cosi_state_pb2.GetRequest(**OS_ROOT, id="os"), timeout=5)
            assert denied.value.status is Status.PERMISSION_DENIED
        finally:
            channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1, config_layout=layout)


def test_members_have_protobuf_specs(tmp_path: Path) -> None:
    """talosctl decodes Member specs from proto_spec: addresses as NetIP bytes, the machine type enum."""

    async def scenario(cluster: SimCluster) -> None:
        channel = _channel(cluster)
        try:
            listed = await cosi_state_grpc.StateStub(channel).List(cosi_state_pb2.ListRequest(**MEMBERS), timeout=5)
        finally:
            channel.close()
        members = {}
        for r in listed:
            spec = resource_cluster_pb2.MemberSpec.FromString(r.resource.spec.proto_spec)
            members[spec.hostname] = (
                [str(ipaddress.ip_address(a.ip)) for a in spec.addresses],
                spec.machine_type,
                spec.operating_system,
            )
        expected_type = {
            "controlplane": resource_enums_pb2.TYPE_CONTROL_PLANE,
            "worker": resource_enums_pb2.TYPE_WORKER,
        }
        assert members == {
            n.hostname: ([n.address], expected_type[n.role], f"Talos ({cluster.talos_version})") for n in cluster.nodes
        }

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)


def test_watch_starts_with_an_empty_message(tmp_path: Path) -> None:
    """COSI's server says "watch established" with an empty WatchResponse before the first event."""

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        channel = _channel(cluster)
        try:
            stub = cosi_state_grpc.StateStub(channel)
            async with stub.Watch.open(metadata={"node": worker.address}, timeout=10) as watch:
                await watch.send_message(cosi_state_pb2.WatchRequest(**SERVICES, id="kubelet", api_version=1), end=True)
                ready = await watch.recv_message()
                first = await watch.recv_message()
                await watch.cancel()
        finally:
            channel.close()
        assert ready is not None and list(ready.event) == []
        assert first is not None and first.event[0].event_type == cosi_state_pb2.CREATED
        assert first.event[0].resource.metadata.id == "kubelet"

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)


def test_unserved_method_is_unimplemented(tmp_path: Path) -> None:
    """A method the simulator does not serve answers UNIMPLEMENTED (with the gRPC content type)."""

    async def scenario(cluster: SimCluster) -> None:
        channel = _channel(cluster)
        try:
            for metadata in ({}, {"node": cluster.workers[0].address}):
                with pytest.raises(GRPCError) as unimplemented:
                    async with channel.request(
                        "/machine.MachineService/Upgrade", Cardinality.UNARY_UNARY, Empty, Empty, metadata=metadata
                    ) as stream:
                        await stream.send_message(Empty(), end=True)
                        await stream.recv_message()
                assert unimplemented.value.status is Status.UNIMPLEMENTED
        finally:
            channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)


@pytest.mark.parametrize(("layout", "version"), [("legacy", "v1.12.1"), ("multidoc", "v1.14.0")])
def test_one_talos_version_everywhere(tmp_path: Path, layout: str, version: str) -> None:
    """Version, the Members' OS and the installer image in the served configs name one release."""

    async def scenario(cluster: SimCluster) -> None:
        assert cluster.talos_version == version
        channel = _channel(cluster)
        try:
            reply: Any = await machine_grpc.MachineServiceStub(channel).Version(
                Empty(), metadata=_nodes(*(n.address for n in cluster.nodes)), timeout=5
            )
            listed = await cosi_state_grpc.StateStub(channel).List(cosi_state_pb2.ListRequest(**MEMBERS), timeout=5)
        finally:
            channel.close()
        assert {m.version.tag for m in reply.messages} == {version}
        assert {
            resource_cluster_pb2.MemberSpec.FromString(r.resource.spec.proto_spec).operating_system for r in listed
        } == {f"Talos ({version})"}
        for node in cluster.nodes:
            image = node.parsed.v1alpha1["machine"]["install"]["image"]
            assert image == f"ghcr.io/siderolabs/installer:{version}"
        assert configgen.talos_version(cluster.config_layout) == version  # type: ignore[arg-type]

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1, config_layout=layout)


def test_streaming_call_fanned_out_is_stamped_per_message(tmp_path: Path) -> None:
    """`talosctl kubeconfig` reads a server stream under `nodes`: every chunk names its node."""

    async def scenario(cluster: SimCluster) -> None:
        cp, other = cluster.controlplanes
        channel = _channel(cluster)
        try:
            async with machine_grpc.MachineServiceStub(channel).Kubeconfig.open(
                metadata=_nodes(other.address, cluster.workers[0].address), timeout=10
            ) as stream:
                await stream.send_message(Empty(), end=True)
                chunks = [m async for m in stream]
        finally:
            channel.close()
        data = [c for c in chunks if c.bytes]
        errors = [c for c in chunks if c.metadata.error]
        assert data and {c.metadata.hostname for c in data} == {other.address}
        # a worker has no kubeconfig to give: its error travels in the stream, not as the call's status
        assert [c.metadata.hostname for c in errors] == [cluster.workers[0].address]
        assert errors[0].metadata.status.code == Status.FAILED_PRECONDITION.value
        assert cp.address not in {c.metadata.hostname for c in chunks}

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)

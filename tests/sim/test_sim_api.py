"""The other Talos API calls the simulator serves: Kubeconfig, COSI List and Watch."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import yaml
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from simharness import run_with_cluster
from trustplan.providers.talos.proto import (
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    resource_config_pb2,
)
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim.cluster import SimCluster

from trustplan.talos import pki

CONFIG = {"namespace": "config", "type": "MachineConfigs.config.talos.dev"}


def _admin_channel(cluster: SimCluster) -> Channel:
    tc = load_talosconfig(cluster.talosconfig)
    return Channel(cluster.controlplanes[0].address, 50000, ssl=client_context(tc.crt_pem, tc.key_pem, tc.ca_pem))


def test_kubeconfig(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        channel = _admin_channel(cluster)
        try:
            async with machine_grpc.MachineServiceStub(channel).Kubeconfig.open(timeout=5) as stream:
                await stream.send_message(Empty(), end=True)
                chunks = [m.bytes async for m in stream]
        finally:
            channel.close()
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
            member = tar.extractfile("kubeconfig")
            assert member is not None
            doc = yaml.safe_load(member.read())
        ca = pki.b64decode_pem(doc["clusters"][0]["cluster"]["certificate-authority-data"], "kubeconfig", "ca")
        assert ca == cluster.secrets.k8s.crt_pem
        assert doc["clusters"][0]["cluster"]["server"] == f"https://{cluster.controlplanes[0].address}:6443"

    run_with_cluster(scenario, tmp_path, workers=0)


def test_list_and_watch_machine_config(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        metadata = {"node": worker.address}
        channel = _admin_channel(cluster)
        stub = cosi_state_grpc.StateStub(channel)
        try:
            listed = await stub.List(cosi_state_pb2.ListRequest(**CONFIG), metadata=metadata, timeout=5)
            assert sorted(r.resource.metadata.id for r in listed) == ["persistent", "v1alpha1"]
            async with stub.Watch.open(metadata=metadata, timeout=10) as watch:
                await watch.send_message(cosi_state_pb2.WatchRequest(**CONFIG, id="v1alpha1"), end=True)
                ready = await watch.recv_message()  # COSI's "watch established": an empty message
                assert ready is not None and list(ready.event) == []
                first = await watch.recv_message()
                assert first is not None and first.event[0].event_type == cosi_state_pb2.CREATED
                new = worker.config + b"\n"
                worker.set_config(new)
                second = await asyncio.wait_for(watch.recv_message(), 5)
                assert second is not None and second.event[0].event_type == cosi_state_pb2.UPDATED
                spec = resource_config_pb2.MachineConfigSpec.FromString(second.event[0].resource.spec.proto_spec)
                assert spec.yaml_marshalled == new
                await watch.cancel()
        finally:
            channel.close()

    run_with_cluster(scenario, tmp_path)


def test_latency_and_restart(tmp_path: Path) -> None:
    """The injected latency is added once per client call (at the node the client talks to), not
    again on the hop a control plane proxies to a worker; a stopped node answers again once started."""

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        delays: list[float] = []

        async def delay(seconds: float) -> None:
            delays.append(seconds)

        cluster.delay = delay

        async def version(node: str) -> str:
            channel = _admin_channel(cluster)
            try:
                reply = await machine_grpc.MachineServiceStub(channel).Version(
                    Empty(), metadata={"node": node}, timeout=5
                )
                return str(reply.messages[0].metadata.hostname)
            finally:
                channel.close()

        assert await version(worker.address) == worker.name  # through the control plane's proxy
        assert delays == [0.05]
        await worker.stop()
        assert not worker.running
        await worker.start()
        assert await version(worker.address) == worker.name
        assert delays == [0.05, 0.05]

    run_with_cluster(scenario, tmp_path, latency_ms=50)

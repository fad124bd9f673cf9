"""A control plane's proxied call is served in the simulator's process (sim/direct.py)
when its connection to the target is open or would open; a client sees exactly what the same call
over the wire (real mutual TLS and HTTP/2 to the target's own listener) gives.

Each scenario runs a sequence of calls twice through one control plane, first with in-process
serving switched off (every hop dialled for real), then as the simulator runs, and compares what
the client saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from simharness import run_with_cluster
from trustplan.providers.talos.proto import cosi_state_grpc, cosi_state_pb2, machine_grpc, machine_pb2
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim import direct
from trustplan_sim.cluster import SimCluster
from trustplan_sim.node import SimNode

from trustplan.talos import certgen, pki

CONFIG = {"namespace": "config", "type": "MachineConfigs.config.talos.dev", "id": "v1alpha1"}
SERVICES = {"namespace": "runtime", "type": "Services.v1alpha1.talos.dev"}

Call = Callable[[Channel], Awaitable[Any]]


def _channel(cluster: SimCluster, cert: bytes | None = None, key: bytes | None = None) -> Channel:
    tc = load_talosconfig(cluster.talosconfig)
    cp = cluster.controlplanes[0]
    return Channel(cp.address, 50000, ssl=client_context(cert or tc.crt_pem, key or tc.key_pem, tc.ca_pem))


async def _outcome(call: Call, channel: Channel) -> Any:
    """What the client sees: the reply's bytes, or the error's status and message."""
    try:
        reply = await call(channel)
    except GRPCError as exc:
        return (exc.status, exc.message)
    return reply.SerializeToString(deterministic=True) if hasattr(reply, "SerializeToString") else reply


class _Switch:
    """Turns in-process serving off (every proxied call dialled) and counts the calls it served."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wire = False
        self.served: list[str] = []
        local_target, serve = SimNode.local_target, direct.serve

        def switched(node: SimNode, address: str) -> SimNode | None:
            return None if self.wire else local_target(node, address)

        async def counted(target: SimNode, method: str, *args: Any) -> None:
            self.served.append(method)
            await serve(target, method, *args)

        monkeypatch.setattr(SimNode, "local_target", switched)
        monkeypatch.setattr(direct, "serve", counted)

    async def both_ways(self, calls: list[Call], channel: Channel) -> tuple[list[Any], list[Any]]:
        self.wire = True
        wire = [await _outcome(call, channel) for call in calls]
        self.wire = False
        served = len(self.served)
        local = [await _outcome(call, channel) for call in calls]
        assert len(self.served) - served == len(calls)  # each went in-process
        return wire, local


def test_answers_and_errors_match_the_wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    switch = _Switch(monkeypatch)

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        target = {"node": worker.address}
        reader_cert, reader_key = certgen.issue_client_cert(
            cluster.secrets.os.cert, cluster.secrets.os.key, "os:reader", pki.utcnow()
        )
        reader = _channel(cluster, pki.cert_to_pem(reader_cert), pki.key_to_pkcs8_pem(reader_key))

        def apply(data: bytes, dry_run: bool = True) -> Call:
            request = machine_pb2.ApplyConfigurationRequest(data=data, mode=1, dry_run=dry_run)
            return lambda ch: machine_grpc.MachineServiceStub(ch).ApplyConfiguration(request, metadata=target)

        async def unserved(ch: Channel) -> Any:
            async with ch.request(
                "/machine.MachineService/Upgrade", Cardinality.UNARY_UNARY, Empty, Empty, metadata=target
            ) as stream:
                await stream.send_message(Empty(), end=True)
                return await stream.recv_message()

        async def faulty(ch: Channel) -> Any:
            worker.faults.apply_error, worker.faults.apply_error_times = "disk on fire", 1
            return await apply(worker.config)(ch)

        calls: list[Call] = [
            lambda ch: machine_grpc.MachineServiceStub(ch).Version(Empty(), metadata=target),
            lambda ch: cosi_state_grpc.StateStub(ch).Get(cosi_state_pb2.GetRequest(**CONFIG), metadata=target),
            lambda ch: cosi_state_grpc.StateStub(ch).Get(
                cosi_state_pb2.GetRequest(**{**CONFIG, "id": "nope"}), metadata=target
            ),
            apply(worker.config),  # a dry run: the diff says "No changes."
            apply(b"version: v1alpha1\nmachine: [\n"),  # INVALID_ARGUMENT, the parser's message
            apply(worker.config.replace(b"type: worker", b"type: nonsense")),  # validation errors
            faulty,  # INTERNAL with the injected message
            unserved,  # UNIMPLEMENTED
            lambda ch: machine_grpc.MachineServiceStub(ch).ApplyConfiguration(  # fanned out
                machine_pb2.ApplyConfigurationRequest(data=worker.config, mode=1, dry_run=True),
                metadata=[("nodes", worker.address)],
            ),
        ]
        assert b"type: worker" in worker.config
        channel = _channel(cluster)
        try:
            wire, local = await switch.both_ways(calls, channel)
            errors = [Status.NOT_FOUND, Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT]
            errors += [Status.INTERNAL, Status.UNIMPLEMENTED]
            assert [o[0] for o in wire if isinstance(o, tuple)] == errors
            assert local == wire
            # a reader may read through the proxy, not write: the role travels in talos-role
            denied = [apply(worker.config)]
            assert await switch.both_ways(denied, reader) == ([(Status.PERMISSION_DENIED, "not authorized")],) * 2
        finally:
            channel.close()
            reader.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)


def test_a_target_that_dies_while_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that stops in the middle of an apply, and one stopped under an open Watch: the caller
    sees the connection lost (UNAVAILABLE, with the dial error) either way."""
    switch = _Switch(monkeypatch)

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        target = {"node": worker.address}

        async def dies(ch: Channel) -> Any:
            worker.faults.die_on_apply = True
            try:
                return await machine_grpc.MachineServiceStub(ch).ApplyConfiguration(
                    machine_pb2.ApplyConfigurationRequest(data=worker.config, mode=1), metadata=target
                )
            finally:
                worker.faults.die_on_apply = False
                await worker.start()

        async def watched_then_stopped(ch: Channel) -> Any:
            stub = cosi_state_grpc.StateStub(ch)
            try:
                async with stub.Watch.open(metadata=target, timeout=10) as watch:
                    await watch.send_message(cosi_state_pb2.WatchRequest(**SERVICES, id="kubelet"), end=True)
                    await watch.recv_message()  # established
                    await watch.recv_message()  # CREATED
                    await worker.stop()
                    return await asyncio.wait_for(watch.recv_message(), 5)
            finally:
                await worker.start()

        version: Call = lambda ch: machine_grpc.MachineServiceStub(ch).Version(Empty(), metadata=target)  # noqa: E731
        channel = _channel(cluster)
        try:
            for call in (dies, watched_then_stopped):
                wire, local = await switch.both_ways([version, call, version], channel)
                assert wire[1][0] is Status.UNAVAILABLE and wire[1][1].startswith("connection error")
                assert local == wire
        finally:
            channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)

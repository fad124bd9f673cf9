"""The Talos API calls an etcd CA rotation uses, served by `--k8s real` control planes on their real etcd
members, as Talos v1.14.1 serves them: a config change rewrites etcd's PKI files without restarting
etcd, ServiceRestart of etcd is refused, a Reboot restarts etcd with the current files, EtcdMemberList
and EtcdStatus answer from the real members. And the control for the bundle: a member switched straight
to the new CA alone does not rejoin its peers."""

from __future__ import annotations

import asyncio
from contextlib import closing
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from peers import need_kubernetes
from simharness import run_with_cluster
from trustplan.providers.etcd import EtcdClient, EtcdRefused, EtcdUnreachable
from trustplan.providers.talos.proto import machine_grpc, machine_pb2
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim.cluster import SimCluster
from trustplan_sim.etcd import generate_etcd_ca, issue_leaf
from trustplan_sim.node import SimNode

from trustplan.talos import etcdca, machineconfig, pki

pytestmark = pytest.mark.realk8s


@pytest.fixture(autouse=True)
def _binaries() -> None:
    need_kubernetes()


def _client(ca: tuple[bytes, bytes], trusted: bytes, timeout: float = 3.0) -> EtcdClient:
    crt, key = issue_leaf((pki.load_cert_pem(ca[0], "ca"), pki.load_key_pem(ca[1], "key")), common_name="probe",
                          server=False)
    return EtcdClient(crt, key, trusted, timeout)


def _channel(cluster: SimCluster, address: str) -> Channel:
    tc = load_talosconfig(cluster.talosconfig)
    return Channel(address, 50000, ssl=client_context(tc.crt_pem, tc.key_pem, tc.ca_pem))


def _healthy(client: EtcdClient, address: str) -> bool:
    try:
        return client.status(address).healthy
    except (EtcdUnreachable, EtcdRefused):
        return False


async def _reboot(cluster: SimCluster, cp: SimNode, config: bytes) -> None:
    """Apply `config` to `cp` and reboot it through the Talos API; return once its etcd runs again."""
    assert cp.etcd is not None and cp.etcd.proc is not None
    pid = cp.etcd.proc.pid
    with closing(_channel(cluster, cp.address)) as channel:
        stub = machine_grpc.MachineServiceStub(channel)
        await stub.ApplyConfiguration(machine_pb2.ApplyConfigurationRequest(
            data=config, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT), timeout=30)
        await stub.Reboot(machine_pb2.RebootRequest(), timeout=10)
    for _ in range(300):
        if cp.etcd.proc is not None and cp.etcd.proc.pid != pid:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cp.name}: etcd did not restart")


async def _without_the_bundle_a_member_does_not_rejoin(
    cluster: SimCluster, old: tuple[bytes, bytes], new: tuple[bytes, bytes]
) -> None:
    """The control: cp-3 switched straight to the new CA alone does not rejoin (its peers refuse its new
    peer certificate, it refuses theirs) while cp-1 and cp-2 keep quorum; put back, it rejoins."""
    cp3 = cluster.controlplanes[2]
    before = cp3.config
    doc = machineconfig.load_yaml(before)
    etcdca.write(doc, new[0], new[1], [])
    await _reboot(cluster, cp3, machineconfig.dump_yaml(doc).encode())
    by_new, by_old = _client(new, old[0] + new[0], timeout=1.0), _client(old, old[0] + new[0])
    for _ in range(8):  # 8 looks (each waits up to 1 s for an answer): cp-3 never has a leader
        assert not await asyncio.to_thread(_healthy, by_new, cp3.address)
        await asyncio.sleep(0.1)
    for cp in cluster.controlplanes[:2]:  # quorum kept
        assert await asyncio.to_thread(_healthy, by_old, cp.address)
    await _reboot(cluster, cp3, before)
    assert cp3.etcd is not None
    await cp3.etcd.wait_healthy(timeout=60)


def test_etcd_calls_act_on_the_real_members(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp1 = cluster.controlplanes[0]
        assert cp1.etcd is not None and cp1.etcd.proc is not None
        with closing(_channel(cluster, cp1.address)) as channel:
            stub = machine_grpc.MachineServiceStub(channel)
            listed = await stub.EtcdMemberList(machine_pb2.EtcdMemberListRequest(), timeout=10)
            assert sorted(m.hostname for m in listed.messages[0].members) == sorted(
                cp.hostname for cp in cluster.controlplanes)
            leaders = set()
            for cp in cluster.controlplanes:
                with closing(_channel(cluster, cp.address)) as ch:
                    status = await machine_grpc.MachineServiceStub(ch).EtcdStatus(Empty(), timeout=10)
                    leaders.add(status.messages[0].member_status.leader)
            assert len(leaders) == 1 and 0 not in leaders
            with pytest.raises(GRPCError) as refused:
                await stub.ServiceRestart(machine_pb2.ServiceRestartRequest(id="etcd"), timeout=10)
            assert refused.value.message == 'service "etcd" doesn\'t support restart operation via API'
            restarted = await stub.ServiceRestart(machine_pb2.ServiceRestartRequest(id="kubelet"), timeout=10)
            assert restarted.messages[0].resp == 'Service "kubelet" restarted'

            old_field = cp1.parsed.v1alpha1["cluster"]["etcd"]["ca"]
            old = (pki.b64decode_pem(old_field["crt"], "cp-1", "crt"), pki.b64decode_pem(old_field["key"], "cp-1", "k"))
            new = generate_etcd_ca(pki.utcnow())
            await _without_the_bundle_a_member_does_not_rejoin(cluster, old, new)

            # accept on cp-1: the bundle (old first) applied; etcd keeps running on its old trust
            doc = machineconfig.load_yaml(cp1.config)
            etcdca.write(doc, old[0], old[1], [new[0]])
            config = machineconfig.dump_yaml(doc).encode()
            pid = cp1.etcd.proc.pid
            await stub.ApplyConfiguration(machine_pb2.ApplyConfigurationRequest(
                data=config, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT), timeout=30)
            assert (cp1.etcd.pki_path("ca.crt")).read_bytes() == old[0] + new[0]  # verbatim
            assert cp1.etcd.proc is not None and cp1.etcd.proc.pid == pid  # not restarted
            probe = _client(new, old[0] + new[0])
            assert probe.accepts(cp1.address) is False  # its running etcd does not trust the new CA yet

            await stub.Reboot(machine_pb2.RebootRequest(), timeout=10)
        for _ in range(300):  # the node goes down and comes back
            if cp1.etcd.proc is not None and cp1.etcd.proc.pid != pid:
                break
            await asyncio.sleep(0.1)
        await cp1.etcd.wait_healthy(timeout=60)
        assert cp1.etcd.proc is not None and cp1.etcd.proc.pid != pid  # the reboot restarted it
        assert probe.accepts(cp1.address) is True  # and now it trusts the new CA

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     kubelet_rejoin_ms=100)

"""The Talos API calls an etcd CA rotation uses, served by `--k8s real` control planes on their real etcd
members, as Talos v1.14.1 serves them: a config change rewrites etcd's PKI files without restarting
etcd, ServiceRestart of etcd is refused, a Reboot restarts etcd with the current files, EtcdMemberList
and EtcdStatus answer from the real members."""

from __future__ import annotations

import asyncio
import os
from contextlib import closing
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from simharness import run_with_cluster
from trustplan.providers.talos.proto import machine_grpc, machine_pb2
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster
from trustplan_sim.etcd_members import EtcdClient, Member, generate_etcd_ca, issue_leaf

from trustplan.talos import etcdca, machineconfig, pki

pytestmark = pytest.mark.realk8s


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if realk8s.find_apiserver() is None or etcd.find_etcd() is None:
        why = "kube-apiserver or etcd is not built here (scripts/peers/kube-apiserver.sh, scripts/peers/etcd.sh)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _channel(cluster: SimCluster, address: str) -> Channel:
    tc = load_talosconfig(cluster.talosconfig)
    return Channel(address, 50000, ssl=client_context(tc.crt_pem, tc.key_pem, tc.ca_pem))


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

            # accept on cp-1: the bundle (old first) applied; etcd keeps running on its old trust
            old_field = cp1.parsed.v1alpha1["cluster"]["etcd"]["ca"]
            old = (pki.b64decode_pem(old_field["crt"], "cp-1", "crt"), pki.b64decode_pem(old_field["key"], "cp-1", "k"))
            new = generate_etcd_ca(pki.utcnow())
            doc = machineconfig.load_yaml(cp1.config)
            etcdca.write(doc, old[0], old[1], [new[0]])
            config = machineconfig.dump_yaml(doc).encode()
            pid = cp1.etcd.proc.pid
            await stub.ApplyConfiguration(machine_pb2.ApplyConfigurationRequest(
                data=config, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT), timeout=30)
            assert (cp1.etcd.pki_path("ca.crt")).read_bytes() == old[0] + new[0]  # verbatim
            assert cp1.etcd.proc is not None and cp1.etcd.proc.pid == pid  # not restarted
            crt, key = issue_leaf(new[0], new[1], "client:probe", "probe", (), pki.utcnow())
            probe = EtcdClient.from_pem(old[0] + new[0], crt, key, tmp_path / "probe")
            member = Member(cp1.name, cp1.address, tmp_path)
            assert probe.refused(member)  # its running etcd does not trust the new CA yet

            await stub.Reboot(machine_pb2.RebootRequest(), timeout=10)
        for _ in range(300):  # the node goes down and comes back
            if cp1.etcd.proc is not None and cp1.etcd.proc.pid != pid:
                break
            await asyncio.sleep(0.1)
        await cp1.etcd.wait_healthy(timeout=60)
        assert cp1.etcd.proc is not None and cp1.etcd.proc.pid != pid  # the reboot restarted it
        assert not probe.refused(member)  # and now it trusts the new CA

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     kubelet_rejoin_ms=100)

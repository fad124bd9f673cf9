"""The Talos API calls an etcd CA rotation uses, as the simulator serves them: Reboot, ServiceRestart,
EtcdMemberList, EtcdStatus. With `--k8s real` they act on the node's real etcd member and kube-apiserver
(trustplan_sim.etcd, trustplan_sim.realk8s); in the other modes a control plane has no etcd, and the
etcd calls answer FAILED_PRECONDITION.

As Talos v1.14.1 (docs/talos-model.md, "The etcd CA"):
- ServiceRestart of etcd is refused ("service \\"etcd\\" doesn't support restart operation via API":
  the etcd service does not implement APIRestartableService); kubelet restarts.
- Reboot answers at once, then the node goes down and comes back: its etcd restarts with the PKI files
  of its current config (etcd reads its CA file only at start), then its kube-apiserver.
- Roles: Reboot and ServiceRestart os:admin or os:operator; the etcd calls also os:reader
  (internal/app/machined/pkg/system/services/machined.go).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

from google.protobuf.empty_pb2 import Empty
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from trustplan.providers.talos.proto import common_pb2, machine_pb2

if TYPE_CHECKING:
    from trustplan_sim.etcd import EtcdMember
    from trustplan_sim.node import SimNode

OPERATOR_ROLES = {"os:admin", "os:operator"}
#: reboots under way (a task must be referenced until it finishes)
_REBOOTS: set[asyncio.Task[None]] = set()
ETCD_READ_ROLES = {"os:admin", "os:operator", "os:reader", "os:etcd:backup"}


def etcd_call(member: EtcdMember, path: str, timeout: float = 5) -> dict[str, Any]:
    """POST {} to the member's gRPC gateway with its kube-apiserver client certificate (the sim's
    stand-in for machined's own etcd client), TLS verified against its CA file."""
    p = member.pki_path
    context = ssl.create_default_context(cafile=str(p("ca.crt")))
    context.load_cert_chain(p("apiserver-client.crt"), p("apiserver-client.key"))
    request = urllib.request.Request(member.client_url + path, data=b"{}",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=timeout) as r:
        answer: dict[str, Any] = json.loads(r.read() or b"{}")
        return answer


class EtcdCalls:
    """Mixed into trustplan_sim.services.MachineService."""

    node: SimNode

    def _require(self, stream: Stream[Any, Any], allowed: set[str]) -> None:
        """Refuse a caller without one of `allowed` roles (MachineService supplies it)."""
        raise NotImplementedError

    def _member(self) -> EtcdMember:
        member = self.node.etcd
        if self.node.role != "controlplane":
            raise GRPCError(Status.FAILED_PRECONDITION, "etcd is only available on control plane nodes")
        if member is None:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            "this simulated control plane runs no etcd (start the simulator with --k8s real)")
        return member

    async def _etcd(self, path: str) -> dict[str, Any]:
        member = self._member()
        try:
            return await asyncio.to_thread(etcd_call, member, path)
        except OSError as exc:
            raise GRPCError(Status.UNAVAILABLE, f"etcd on {self.node.name} does not answer: {exc}") from None

    async def Reboot(self, stream: Stream[machine_pb2.RebootRequest, machine_pb2.RebootResponse]) -> None:
        self._require(stream, OPERATOR_ROLES)
        await stream.recv_message()
        actor = str(uuid.uuid4())
        await stream.send_message(machine_pb2.RebootResponse(messages=[
            machine_pb2.Reboot(metadata=common_pb2.Metadata(hostname=self.node.hostname), actor_id=actor)]))
        task = asyncio.get_running_loop().create_task(_reboot(self.node))
        _REBOOTS.add(task)
        task.add_done_callback(_REBOOTS.discard)

    async def ServiceRestart(
        self, stream: Stream[machine_pb2.ServiceRestartRequest, machine_pb2.ServiceRestartResponse]
    ) -> None:
        self._require(stream, OPERATOR_ROLES)
        request = await stream.recv_message()
        assert request is not None
        if request.id != "kubelet":
            # system.go APIRestart: only an APIRestartableService restarts (kubelet, extensions)
            message = f"service {json.dumps(request.id)} doesn't support restart operation via API"
            raise GRPCError(Status.UNKNOWN, message)
        await stream.send_message(machine_pb2.ServiceRestartResponse(messages=[machine_pb2.ServiceRestart(
            metadata=common_pb2.Metadata(hostname=self.node.hostname), resp=f'Service "{request.id}" restarted')]))

    async def EtcdMemberList(
        self, stream: Stream[machine_pb2.EtcdMemberListRequest, machine_pb2.EtcdMemberListResponse]
    ) -> None:
        self._require(stream, ETCD_READ_ROLES)
        await stream.recv_message()
        answer = await self._etcd("/v3/cluster/member/list")
        members = [machine_pb2.EtcdMember(id=int(m.get("ID", 0)), hostname=m.get("name", ""),
                                          peer_urls=m.get("peerURLs", []), client_urls=m.get("clientURLs", []),
                                          is_learner=bool(m.get("isLearner", False)))
                   for m in answer.get("members", [])]
        await stream.send_message(machine_pb2.EtcdMemberListResponse(messages=[machine_pb2.EtcdMembers(
            metadata=common_pb2.Metadata(hostname=self.node.hostname), members=members)]))

    async def EtcdStatus(self, stream: Stream[Empty, machine_pb2.EtcdStatusResponse]) -> None:
        self._require(stream, ETCD_READ_ROLES)
        await stream.recv_message()
        s = await self._etcd("/v3/maintenance/status")
        header = s.get("header", {})
        status = machine_pb2.EtcdMemberStatus(
            storage_version=s.get("storageVersion", ""), member_id=int(header.get("member_id", 0)),
            protocol_version=s.get("version", ""), db_size=int(s.get("dbSize", 0)),
            db_size_in_use=int(s.get("dbSizeInUse", 0)), leader=int(s.get("leader", 0)),
            raft_index=int(s.get("raftIndex", 0)), raft_term=int(s.get("raftTerm", 0)),
            raft_applied_index=int(s.get("raftAppliedIndex", 0)), errors=s.get("errors", []),
            is_learner=bool(s.get("isLearner", False)))
        await stream.send_message(machine_pb2.EtcdStatusResponse(messages=[machine_pb2.EtcdStatus(
            metadata=common_pb2.Metadata(hostname=self.node.hostname), member_status=status)]))


async def _reboot(node: SimNode) -> None:
    """The node goes away (its Talos API, kube-apiserver and etcd stop: etcd hands leadership on as it
    does on a non-FORCE reboot) and comes back with the files of its current config."""
    await asyncio.sleep(0.05)  # the reply is on its way first
    await node.stop()
    await node.start()

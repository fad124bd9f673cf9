"""The committed Talos API modules are exactly what `make proto` would generate now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "providers" / "talos" / "proto"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(PROTO_DIR / "generate.py"), str(tmp_path)], check=True, capture_output=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in PROTO_DIR.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_grpc.py")))
    assert generated == committed, "generated module set differs: run `make proto`"
    stale = [name for name in generated if (tmp_path / name).read_text() != (PROTO_DIR / name).read_text()]
    assert not stale, f"out of date (run `make proto`): {stale}"


def test_wire_names_match_talos() -> None:
    from trustplan.providers.talos.proto import machine_pb2
    from trustplan_sim.services import MachineService, StateService

    paths = set(MachineService(None).__mapping__()) | set(StateService(None).__mapping__())  # type: ignore[arg-type]
    assert paths == {
        "/machine.MachineService/Version",
        "/machine.MachineService/ApplyConfiguration",
        "/machine.MachineService/Kubeconfig",
        "/machine.MachineService/Reboot",
        "/machine.MachineService/ServiceRestart",
        "/machine.MachineService/EtcdMemberList",
        "/machine.MachineService/EtcdStatus",
        "/cosi.resource.State/Get",
        "/cosi.resource.State/List",
        "/cosi.resource.State/Watch",
    }
    fields = {f.name: f.number for f in machine_pb2.ApplyConfigurationRequest.DESCRIPTOR.fields}
    assert fields == {"data": 1, "mode": 4, "dry_run": 5, "try_mode_timeout": 6}
    assert machine_pb2.ApplyConfigurationRequest.NO_REBOOT == 2
    # the etcd CA rotation's calls (api/machine/machine.proto, Talos v1.14.1)
    numbers = {m.name: {f.name: f.number for f in m.fields} for m in (
        machine_pb2.RebootRequest.DESCRIPTOR, machine_pb2.ServiceRestartRequest.DESCRIPTOR,
        machine_pb2.EtcdMember.DESCRIPTOR, machine_pb2.EtcdMembers.DESCRIPTOR,
        machine_pb2.EtcdMemberStatus.DESCRIPTOR)}
    assert numbers == {
        "RebootRequest": {"mode": 1},
        "ServiceRestartRequest": {"id": 1},
        "EtcdMember": {"id": 2, "hostname": 3, "peer_urls": 4, "client_urls": 5, "is_learner": 6},
        "EtcdMembers": {"metadata": 1, "legacy_members": 2, "members": 3},
        "EtcdMemberStatus": {"storage_version": 11, "member_id": 10, "protocol_version": 1, "db_size": 2,
                             "db_size_in_use": 3, "leader": 4, "raft_index": 5, "raft_term": 6,
                             "raft_applied_index": 7, "errors": 8, "is_learner": 9},
    }
    assert machine_pb2.RebootRequest.FORCE == 2

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
        "/cosi.resource.State/Get",
        "/cosi.resource.State/List",
        "/cosi.resource.State/Watch",
    }
    fields = {f.name: f.number for f in machine_pb2.ApplyConfigurationRequest.DESCRIPTOR.fields}
    assert fields == {"data": 1, "mode": 4, "dry_run": 5, "try_mode_timeout": 6}
    assert machine_pb2.ApplyConfigurationRequest.NO_REBOOT == 2

"""`trustplan sim up` / `sim down` as a user runs them: a separate process, files, signals."""

from __future__ import annotations

import subprocess
from pathlib import Path

from simharness import READY_LINE, TRUSTPLAN, SimProcess


def test_up_then_down(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    with SimProcess(sim_dir, controlplanes=2, workers=1) as sim:
        assert sim.lines[-1] == READY_LINE
        assert "trustplan sim: 2 control plane(s), 1 worker(s) listening in " in sim.stderr
        doc = sim.doc
        assert doc["pid"] == sim.pid
        assert [n["role"] for n in doc["nodes"]] == ["controlplane", "controlplane", "worker"]
        assert (sim_dir / "talosconfig").exists() and (sim_dir / "trustplan.yaml").exists()
        down = subprocess.run([*TRUSTPLAN, "sim", "down", "--dir", str(sim_dir)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert down.returncode == 0, down.stderr
        assert f"trustplan sim: stopped (pid {sim.pid})" in down.stderr
        assert sim.stop() == 0  # it had already exited, cleanly
        assert sim.lines[-1] == "trustplan sim: stopping"
        assert not (sim_dir / "sim.json").exists()
        again = subprocess.run([*TRUSTPLAN, "sim", "down", "--dir", str(sim_dir)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert again.returncode == 1 and "no simulator is running" in again.stderr


def test_a_second_simulator_for_the_same_directory_is_refused(tmp_path: Path) -> None:
    with SimProcess(tmp_path / "sim", controlplanes=1, workers=0) as sim:
        second = subprocess.run([*TRUSTPLAN, "sim", "up", "--dir", str(sim.dir), "--subnet", "127.250.0.0/24"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert f"a simulator (pid {sim.pid}) is already running for this directory" in second.stderr
        assert "Traceback" not in second.stderr

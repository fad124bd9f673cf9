"""`trustplan sim up` / `sim down` as a user runs them: a separate process, files, signals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from trustplan.providers.sim.testing import unique_subnet


def _trustplan(*args: str) -> list[str]:
    # run from tmp_path: from the repo root, `-m` would import the source tree, not the install
    return [sys.executable, "-m", "trustplan", *args]


def test_up_then_down(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    up = subprocess.Popen(
        _trustplan(
            "sim",
            "up",
            "--controlplanes",
            "2",
            "--workers",
            "1",
            "--dir",
            str(sim_dir),
            "--subnet",
            unique_subnet(),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (sim_dir / "sim.json").exists():
            assert up.poll() is None, up.communicate()[1]
            assert time.monotonic() < deadline, "sim.json did not appear"
            time.sleep(0.05)
        doc = json.loads((sim_dir / "sim.json").read_text())
        assert doc["pid"] == up.pid
        assert [n["role"] for n in doc["nodes"]] == ["controlplane", "controlplane", "worker"]
        assert (sim_dir / "talosconfig").exists() and (sim_dir / "trustplan.yaml").exists()
        down = subprocess.run(
            _trustplan("sim", "down", "--dir", str(sim_dir)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert down.returncode == 0, down.stderr
        assert up.wait(10) == 0
        assert not (sim_dir / "sim.json").exists()
        again = subprocess.run(
            _trustplan("sim", "down", "--dir", str(sim_dir)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 1 and "no simulator is running" in again.stderr
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

"""Issue 20, finding 5: reporting never kills apply. Output that cannot be written (a pipe whose reader
left, `| head -3`; a stderr on a full disk, /dev/full; a stderr closed with `2>&-`) is lost, the apply
is not: it runs to its end and the state records it. A closed terminal (SIGHUP) stops an apply the way
SIGTERM does: the writes in flight finish and the state records what was done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faults.simproc import Proc, SimProcess, credential_report, run_cli, trustplan_cmd

APPLY = " ".join([sys.executable, "-m", "trustplan", "apply", "--auto-approve"])


def last_record(sim: SimProcess) -> dict[str, object]:
    state = json.loads((sim.dir / "trustplan.state.json").read_text())
    record: dict[str, object] = state["history"][-1]
    return record


@pytest.mark.parametrize("redirect", [
    "2>&1 | head -3",  # EPIPE on stdout and stderr once head has its three lines
    "2>/dev/full",  # ENOSPC on every write to stderr
    "2>&-",  # no stderr at all
], ids=["pipe-to-head", "stderr-on-a-full-disk", "stderr-closed"])
def test_output_that_cannot_be_written_does_not_stop_apply(tmp_path: Path, redirect: str) -> None:
    with SimProcess(tmp_path / "sim", 1, 2) as sim:
        script = f"{APPLY} {redirect}; echo \"apply exited ${{PIPESTATUS[0]}}\" >&3"
        result = subprocess.run(["bash", "-c", f"exec 3>{tmp_path / 'rc'}; {script}"], cwd=sim.dir,
                                capture_output=True, text=True, timeout=300)
        assert (tmp_path / "rc").read_text().strip() == "apply exited 0", result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        record = last_record(sim)
        assert record["status"] == "applied", record
        assert set(credential_report(sim).values()) == {"ok"}
        final = run_cli(sim.dir, "plan", "--detailed-exitcode")
        assert final.returncode == 0, final.stdout + final.stderr


def test_sighup_stops_apply_like_sigterm_and_the_state_records_it(tmp_path: Path) -> None:
    with SimProcess(tmp_path / "sim", 2, 2, latency_ms=20) as sim:
        apply = Proc.start(trustplan_cmd("apply", "--auto-approve"), sim.dir)
        assert apply.wait_for("accept: patching 4 nodes: finished", 60), apply.stderr
        apply.popen.send_signal(signal.SIGHUP)
        code = apply.wait(60)
        assert code == 128 + signal.SIGHUP, apply.stderr
        assert "received SIGHUP" in apply.stderr
        assert "apply stopped: interrupted by SIGHUP" in apply.stderr
        record = last_record(sim)
        assert record["status"] == "failed" and record["error"] == "interrupted by SIGHUP"
        again = run_cli(sim.dir, "apply", "--auto-approve")  # the lock was let go: the next apply finishes
        assert again.returncode == 0, again.stderr
        assert set(credential_report(sim).values()) == {"ok"}

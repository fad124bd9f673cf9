"""Issue 8: SIGTERM (how CI cancels a job) and Ctrl-C during apply: the node writes in flight finish,
the state records what was done, the CLI prints a summary and the next command, and exits 128 +
the signal number; a new plan + apply then finishes the job."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from faults.simproc import Proc, SimProcess, credential_report, run_cli, trustplan_cmd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_apply_records_the_state_and_says_how_to_finish(tmp_path: Path, sig: signal.Signals) -> None:
    with SimProcess(tmp_path / "sim", 2, 2, latency_ms=20) as sim:
        apply = Proc.start(trustplan_cmd("apply", "--auto-approve"), sim.dir)
        # the accept phase has changed every node (per-node lines come earlier: wait for the phase's end)
        assert apply.wait_for("accept: patching 4 nodes: finished", 60), apply.stderr
        apply.popen.send_signal(sig)
        code = apply.wait(60)
        assert code == 128 + sig, apply.stderr
        assert f"received {sig.name}" in apply.stderr
        assert f"apply stopped: interrupted by {sig.name}" in apply.stderr
        assert "done before the stop: accept on 4 nodes" in apply.stderr
        assert "trustplan apply plan.bin" in apply.stderr  # the next command

        state = json.loads((sim.dir / "trustplan.state.json").read_text())
        last = state["history"][-1]
        assert last["status"] == "failed" and last["error"] == f"interrupted by {sig.name}"
        writes = [s for s in last["steps"] if s["kind"] == "write"]
        assert len(writes) >= 4 and all(s["outcome"] == "ok" for s in writes)

        again = run_cli(sim.dir, "apply", "--auto-approve")
        assert again.returncode == 0, again.stderr
        assert set(credential_report(sim).values()) == {"ok"}
        final = run_cli(sim.dir, "plan", "--detailed-exitcode")
        assert final.returncode == 0, final.stdout + final.stderr

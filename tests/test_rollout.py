"""Rollout (issue 12): `plan --parallelism N` saved in the plan, a canary of workers with the phase's
gates on them before the rest, and progress a CI log can follow (a line per node with its duration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_example, run_cli


def _rollout(root: Path, plan: str = "plan.bin") -> dict[str, int]:
    shown = run_cli(root, "show", "-f", "json", plan)
    assert shown.code == 0, shown.err
    rollout: dict[str, int] = json.loads(shown.out)["rollout"]
    read_ms = rollout.pop("read_ms")  # measured while planning: the PR comment's duration estimate
    assert isinstance(read_ms, int | float) and read_ms >= 0
    return rollout


def _set_rollout(root: Path, line: str) -> None:
    path = root / "trustplan.yaml"
    path.write_text(path.read_text() + line + "\n")


def test_the_plan_saves_the_rollout_of_the_desired_state(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "c")
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    assert _rollout(root) == {"controlplane": 1, "worker": 10, "canary": 0, "gates": 32}


def test_parallelism_bounds_every_step_and_is_saved_in_the_plan(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "c")
    _set_rollout(root, "rollout: {controlplane: {parallelism: 2}, worker: {parallelism: 10}}")
    assert run_cli(root, "plan", "--parallelism", "1", "-o", "one.bin").code == 0
    assert _rollout(root, "one.bin") == {"controlplane": 1, "worker": 1, "canary": 0, "gates": 1}
    assert run_cli(root, "plan", "--parallelism", "50", "-o", "wide.bin").code == 0
    # control planes never more at once than the desired state allows
    assert _rollout(root, "wide.bin") == {"controlplane": 2, "worker": 50, "canary": 0, "gates": 50}


def test_a_saved_plan_refuses_another_parallelism(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "c")
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    result = run_cli(root, "apply", "plan.bin", "--parallelism", "3")
    assert result.code == 2
    assert "give --parallelism to `trustplan plan`" in result.err
    assert not (root / "trustplan.state.json").exists()


def test_canary_workers_go_first_and_pass_the_gates_before_the_rest(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "c")
    _set_rollout(root, "rollout: {worker: {parallelism: 5, canary: 1}}")
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    assert _rollout(root)["canary"] == 1
    result = run_cli(root, "apply", "plan.bin")
    assert result.code == 0, result.err
    steps = json.loads((root / "trustplan.state.json").read_text())["history"][-1]["steps"]
    accept = [s for s in steps if s["phase"] == "accept"]
    order = [(s["kind"], s.get("node"), s.get("detail", "").split(":")[0]) for s in accept]
    writes = [node for kind, node, _ in order if kind == "write"]
    assert writes[:3] == ["10.5.0.2", "10.5.0.3", "10.5.0.4"]  # control planes first
    assert writes[3] == "10.5.0.5"  # the canary (first worker by name), alone
    canary_gate = next(i for i, (kind, _, detail) in enumerate(order) if kind == "gate" and detail == "canary")
    assert [node for kind, node, _ in order[:canary_gate] if kind == "write"] == writes[:4]
    assert [node for kind, node, _ in order[canary_gate:] if kind == "write"] == ["10.5.0.6"]
    assert "canary gate after accept" in result.err


def test_a_log_gets_a_line_per_node_with_its_duration(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "c")
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    result = run_cli(root, "apply", "plan.bin")
    assert result.code == 0, result.err
    for node in ("10.5.0.2", "10.5.0.6"):
        assert any(line.startswith("accept: patching 5 nodes: " + node + " ok in ") for line in result.err.splitlines())
    assert "accept: patching 5 nodes: finished (5/5) in" in result.err


@pytest.mark.parametrize("rollout", ["{controlplane: {canary: 1}}", "{worker: {canary: -1}}"])
def test_a_canary_only_applies_to_workers(tmp_path: Path, rollout: str) -> None:
    root = copy_example(tmp_path / "c")
    _set_rollout(root, f"rollout: {rollout}")
    result = run_cli(root, "validate")
    assert result.code == 1
    assert "rollout" in result.err

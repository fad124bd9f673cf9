"""The policy the CI way (examples/policy/README.md, "as a CI gate"): every command of that block run
as written. `opa test` passes the policy's own suite; `opa eval --fail-defined` and `conftest test`
exit 0 on the example plan and 1 on an unsafe one. opa and conftest come from PATH, else from the
peer cache (tests/peers.py, scripts/peers/go-install.sh); under CI=true a missing one fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from peers import tool

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "examples" / "policy" / "README.md"
TRUSTPLAN = Path(sys.executable).with_name("trustplan")
def gate_commands() -> list[str]:
    text = README.read_text()
    block = text.split("## conftest / OPA (Rego v1), as a CI gate", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("opa", "conftest"):
        if re.match(rf"{name}\b", command):
            command = tool(name) + command[len(name):]
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """A copy of examples/files (with examples/policy beside it, as in a repository) and its plan."""
    shutil.copytree(ROOT / "examples" / "files", tmp_path, dirs_exist_ok=True)
    shutil.copytree(ROOT / "examples" / "policy", tmp_path / "examples" / "policy")
    made = subprocess.run([str(TRUSTPLAN), "plan", "-o", "plan.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return tmp_path


def unsafe(plan_json: Path) -> None:
    doc: dict[str, Any] = json.loads(plan_json.read_text())
    for phase in doc["phases"]:
        if phase["name"] != "remove":
            phase["gates"] = []
    plan_json.write_text(json.dumps(doc))


def test_the_readme_block_is_the_four_commands() -> None:
    assert [c.split()[0] + " " + c.split()[1] for c in gate_commands()] == [
        "opa test", "trustplan show", "opa eval", "conftest test"]
    assert "--fail-defined" in gate_commands()[2]


def test_opa_test_runs_the_policy_suite(work: Path) -> None:
    result = shell(gate_commands()[0], work)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = (ROOT / "examples" / "policy" / "policy_test.rego").read_text().count("\ntest_")
    assert f"PASS: {tests}/{tests}" in result.stdout and tests >= 8
    broken = work / "examples" / "policy" / "policy.rego"
    broken.write_text(broken.read_text().replace("min_validity_ns := ((365", "min_validity_ns := ((30"))
    weakened = shell(gate_commands()[0], work)  # the suite catches a weakened rule
    assert weakened.returncode != 0 and f"FAIL: 1/{tests}" in weakened.stdout


@pytest.mark.parametrize("which", [2, 3], ids=["opa-eval-fail-defined", "conftest-test"])
def test_the_gate_passes_a_safe_plan_and_fails_an_unsafe_one(work: Path, which: int) -> None:
    shown = shell(gate_commands()[1], work)
    assert shown.returncode == 0, shown.stderr
    passed = shell(gate_commands()[which], work)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    unsafe(work / "plan.json")
    failed = shell(gate_commands()[which], work)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "remove-before-verified: phase 4 (remove)" in failed.stdout

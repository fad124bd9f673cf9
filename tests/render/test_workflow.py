"""The GitHub Actions example runs: its trustplan commands work on a copy of the files example, the plan
step survives exit code 2 (changes) and reports it, and apply takes the plan file the plan step saved."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github-actions" / "trustplan.yml"
BIN = Path(sys.executable).parent


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(job: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = load()["jobs"][job]["steps"]
    return result


def step(job: str, name: str) -> dict[str, Any]:
    return next(s for s in steps(job) if s.get("name") == name)


def trustplan_lines(job: str) -> list[str]:
    """Every line of a `run:` script in `job` that starts with `trustplan`."""
    return [
        line.strip()
        for s in steps(job)
        for line in str(s.get("run", "")).splitlines()
        if line.strip().startswith("trustplan ")
    ]


@pytest.fixture()
def files_copy(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "files", work)
    return work


def shell(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=environment, capture_output=True, text=True, check=False
    )


def test_workflow_shape() -> None:
    doc = load()
    assert set(doc["on"]) == {"pull_request", "push"} and doc["on"]["push"]["branches"] == ["main"]
    assert doc["jobs"]["plan"]["if"] == "github.event_name == 'pull_request'"
    assert doc["jobs"]["apply"]["if"] == "github.event_name == 'push'"
    uses = [s.get("uses", "") for s in steps("plan")]
    assert any(u.startswith("actions/github-script@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    comment = step("plan", "Comment the plan on the pull request")["with"]["script"]
    assert "<!-- trustplan -->" in comment and "updateComment" in comment and "createComment" in comment
    assert any(s.get("uses", "").startswith("actions/download-artifact@") for s in steps("apply"))
    upload = step("plan", "Upload the plan file")["with"]
    download = step("apply", "Download the reviewed plan file")["with"]
    assert upload["name"].startswith("trustplan-plan-pr-") and download["name"].startswith("trustplan-plan-pr-")
    assert upload["path"].endswith("plan.bin")


def test_trustplan_commands_of_the_workflow(files_copy: Path) -> None:
    plan_lines, apply_lines = trustplan_lines("plan"), trustplan_lines("apply")
    assert len(plan_lines) == 1 and shlex.split(plan_lines[0])[:5] == [
        "trustplan",
        "plan",
        "-o",
        "plan.bin",
        "--format",
    ]
    assert "--detailed-exitcode" in plan_lines[0]
    assert apply_lines == ["trustplan apply plan.bin"]

    planned = shell(plan_lines[0], files_copy)
    assert planned.returncode == 2, planned.stderr  # changes
    markdown = (files_copy / "plan.md").read_text()
    assert markdown.startswith("## trustplan plan for `demo`")
    assert "\nPlan: 2 authorities to create" in markdown and "Plan file: `plan.bin`, SHA-256 `" in markdown
    parts = sorted((files_copy / "plan-comment").glob("part-*.md"))
    assert [p.name for p in parts] == ["part-1.md"] and parts[0].read_text() == markdown
    assert "PRIVATE KEY" not in markdown

    applied = shell(apply_lines[0], files_copy)
    assert applied.returncode == 0, applied.stderr
    assert "Apply complete" in applied.stdout

    again = shell(plan_lines[0], files_copy)  # after the apply: nothing left to do
    assert again.returncode == 0, again.stderr
    assert "**Verdict: no changes.**" in (files_copy / "plan.md").read_text()


def test_plan_step_script_treats_exit_code_2_as_success(files_copy: Path, tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    script = step("plan", "Plan")["run"]
    result = shell(script, files_copy, GITHUB_OUTPUT=str(output))
    assert result.returncode == 0, result.stderr
    assert output.read_text().strip() == "exitcode=2"

    (files_copy / "trustplan.yaml").write_text("version: v1alpha1\n")  # a broken desired state
    broken = shell(script, files_copy, GITHUB_OUTPUT=str(output))
    assert broken.returncode == 1
    assert output.read_text().strip().endswith("exitcode=1")


def test_keystore_step_is_a_no_op_without_the_secret(files_copy: Path) -> None:
    result = shell(step("plan", "Restore the CA keystore")["run"], files_copy, KEYSTORE="")
    assert result.returncode == 0 and "no TRUSTPLAN_KEYSTORE secret" in result.stdout

"""The GitHub Actions example, offline: its shape (install from the repository at a pinned commit, no
package index release, no state artifact, signed plans, apply only the reviewed digest) and the
steps that must fail before any trustplan command runs. tests/kube/test_workflow_run.py runs it all."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github-actions" / "trustplan.yml"


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def step(job: str, name: str) -> dict[str, Any]:
    return next(s for s in load()["jobs"][job]["steps"] if s.get("name") == name)


def shell(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, check=False)


def test_workflow_shape() -> None:
    doc = load()
    text = WORKFLOW.read_text()
    assert set(doc["on"]) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert doc["on"]["push"]["branches"] == ["main"]
    assert "trustplan.yaml" in doc["on"]["pull_request"]["paths"] == doc["on"]["push"]["paths"]
    assert "trustplan==" not in text and "upload-artifact" in text
    assert "trustplan.state.json" not in text  # the state lives in the kubernetes backend, not an artifact
    install = step("plan", "Install trustplan at the pinned commit")["run"]
    assert 'git+${TRUSTPLAN_REPO}@${TRUSTPLAN_COMMIT}' in install
    assert "--sign-key" in step("plan", "Plan")["run"]
    applying = step("apply", "Apply the reviewed plan")
    assert "REVIEWED_DIGEST" in applying["env"] and "trustplan apply plan.bin" in applying["run"]
    for job in ("plan", "apply"):
        assert step(job, "Check the keystore and its identity")["env"]["TRUSTPLAN_AGE_IDENTITY"] == (
            "${{ secrets.TRUSTPLAN_AGE_IDENTITY }}")


def test_install_refuses_an_unpinned_commit(tmp_path: Path) -> None:
    script = step("plan", "Install trustplan at the pinned commit")["run"]
    for commit in ("main", "0" * 40, "abc123"):
        result = shell(script, tmp_path, TRUSTPLAN_COMMIT=commit, TRUSTPLAN_REPO="file:///nowhere")
        assert result.returncode == 1 and "set TRUSTPLAN_COMMIT to the full commit hash" in result.stdout


def test_credentials_step_fails_without_its_secrets(tmp_path: Path) -> None:
    script = step("plan", "Write the cluster and state credentials")["run"]
    result = shell(script, tmp_path, TALOSCONFIG_DATA="x", STATE_KUBECONFIG="", RUNNER_TEMP=str(tmp_path),
                   TALOSCONFIG_FILE="talosconfig", GITHUB_ENV=str(tmp_path / "env"))
    assert result.returncode == 1 and "TRUSTPLAN_STATE_KUBECONFIG secret is missing" in result.stdout
    assert not (tmp_path / "talosconfig").exists()


def test_every_action_is_pinned_by_commit_and_every_job_has_a_timeout_and_a_pip_cache() -> None:
    doc = load()
    for name, job in doc["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), name
        for s in job["steps"]:
            if "uses" in s:
                assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", s["uses"]), s["uses"]
                if s["uses"].startswith("actions/setup-python@"):
                    assert s["with"]["cache"] == "pip", name


def test_the_drift_job_the_replan_path_and_the_policy_step() -> None:
    doc = load()
    drift = doc["jobs"]["drift"]
    assert drift["if"] == "github.event_name == 'schedule'"
    assert "trustplan status --detailed-exitcode" in step("drift", "Drift check")["run"]
    assert "github.event_name == 'workflow_dispatch'" in doc["jobs"]["plan"]["if"]
    assert "workflow_dispatch" in doc["jobs"]["apply"]["if"] and doc["jobs"]["apply"]["needs"] == ["plan"]
    assert doc["jobs"]["apply"]["environment"] == "trustplan-apply"  # a re-plan is approved before it applies
    policy = step("plan", "Policy check")
    assert "opa eval --fail-defined" in policy["run"] and "if" not in policy  # required: never skipped
    names = [s.get("name") for s in doc["jobs"]["plan"]["steps"]]
    assert names.index("Policy check") < names.index("Comment the plan on the pull request")
    assert names.index("Policy check") < names.index("Upload the plan file")
    finder = step("apply", "Find the reviewed plan")["with"]["script"]
    assert "runs[0]" not in finder and "|| runs" not in finder and "GITHUB_WORKFLOW_REF" in finder
    for job in ("plan", "apply"):
        assert "GITHUB_STEP_SUMMARY" in "".join(s.get("run", "") for s in doc["jobs"][job]["steps"])
        assert "trustplan state pull-credentials" in step(job, "Write the cluster and state credentials")["run"]
    assert "trustplan state push-credentials" in step("apply", "Apply the reviewed plan")["run"]


def test_the_comment_is_one_rendering(tmp_path: Path) -> None:
    """The review step posts the full plan when it fits, else its summary: never both (issue 24)."""
    script = step("plan", "Render the review comment")["run"]
    assert script.count("trustplan show plan.bin --format markdown") == 2  # full, or --summary instead
    assert "The full plan</summary>" not in script

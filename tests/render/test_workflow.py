"""The GitHub Actions example, offline: its shape (install from the repository at a pinned commit, no
package index release, no state artifact, signed plans, apply only the reviewed digest) and the
steps that must fail before any trustplan command runs. tests/kube/test_workflow_run.py runs it all."""

from __future__ import annotations

import os
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
    assert set(doc["on"]) == {"pull_request", "push"} and doc["on"]["push"]["branches"] == ["main"]
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

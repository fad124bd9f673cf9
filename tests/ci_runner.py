"""A small runner for a GitHub Actions job's shell steps, to run the example workflow locally.

It does what the Actions runner does for `run:` steps: the workflow, job and step `env` (with
`${{ secrets.X }}`, `${{ env.X }}`, `${{ steps.ID.outputs.K }}` and `${{ github.* }}` filled in),
the job's default working directory, `bash -e`, `$GITHUB_OUTPUT` and `$GITHUB_ENV` files,
`$RUNNER_TEMP`, `$GITHUB_STEP_SUMMARY` (JobRun.summary) and `$GITHUB_PATH`, `${{ needs.JOB.outputs.K }}`
(the `needs` argument) and the job's `outputs:` (JobRun.job_outputs), step `if:` conditions made of
`steps.ID.outputs.K == 'v'` and `github.event_name == 'v'` joined by `&&` or `||`, and it stops at
the first failing step. A `uses:` step runs the test's handler for it (by step name or action), if any:
the handler returns the step's outputs. Unknown expressions are an error, not an empty string.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepRun:
    name: str
    code: int
    out: str = ""
    err: str = ""


@dataclass
class JobRun:
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: str = ""  # what the steps appended to $GITHUB_STEP_SUMMARY
    job_outputs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.code == 0 for s in self.steps)

    def step(self, name: str) -> StepRun:
        return next(s for s in self.steps if s.name == name)

    @property
    def failed(self) -> StepRun | None:
        return next((s for s in self.steps if s.code != 0), None)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def run_job(
    workflow: dict[str, Any],
    job: str,
    workspace: Path,
    *,
    secrets: dict[str, str],
    github: dict[str, Any],
    env: dict[str, str],
    uses: dict[str, Callable[[], dict[str, str]]] | None = None,
    needs: dict[str, dict[str, str]] | None = None,
) -> JobRun:
    spec = workflow["jobs"][job]
    result = JobRun()
    runner_temp = Path(tempfile.mkdtemp(prefix="runner-temp-"))
    context_env: dict[str, str] = {}

    def value(expr: str) -> str:
        parts = expr.split(".")
        if parts[0] == "secrets":
            return secrets.get(parts[1], "")
        if parts[0] == "env":
            return context_env[parts[1]]
        if parts[0] == "steps" and parts[2] == "outputs":
            return result.outputs.get(parts[1], {}).get(parts[3], "")
        if parts[0] == "needs" and parts[2] == "outputs":
            return (needs or {}).get(parts[1], {}).get(parts[3], "")
        if parts[0] == "github":
            node: Any = github
            for p in parts[1:]:
                node = node[p]
            return str(node)
        raise ValueError(f"ci_runner: unsupported expression {expr!r}")

    def fill(text: str) -> str:
        return EXPR.sub(lambda m: value(m.group(1)), str(text))

    def comparison(expr: str) -> bool:
        m = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+) == '([^']*)'", expr.strip())
        if m is not None:
            return result.outputs.get(m.group(1), {}).get(m.group(2), "") == m.group(3)
        m = re.fullmatch(r"github\.event_name == '([^']*)'", expr.strip())
        if m is not None:
            return str(github.get("event_name", "")) == m.group(1)
        raise ValueError(f"ci_runner: unsupported condition {expr!r}")

    def condition(expr: str | None) -> bool:
        if expr is None:
            return True
        return any(all(comparison(c) for c in alt.split("&&")) for alt in expr.split("||"))

    for k, v in (workflow.get("env") or {}).items():
        context_env[k] = fill(str(v))
    for k, v in (spec.get("env") or {}).items():
        context_env[k] = fill(str(v))
    context_env.update(env)
    default_dir = fill(((spec.get("defaults") or {}).get("run") or {}).get("working-directory", "."))
    summary_file, path_file = runner_temp / "step-summary", runner_temp / "path"
    summary_file.touch()
    path_file.touch()
    for i, step in enumerate(spec["steps"]):
        name = step.get("name") or step.get("uses") or f"step {i}"
        if not condition(step.get("if")):
            continue
        if "uses" in step:
            handler = (uses or {}).get(name) or (uses or {}).get(step["uses"].split("@")[0])
            if handler is not None:
                result.outputs[step.get("id", name)] = handler()
                result.steps.append(StepRun(name, 0))
            continue
        output_file, env_file = runner_temp / f"output-{i}", runner_temp / f"env-{i}"
        output_file.touch()
        env_file.touch()
        step_env = {k: fill(str(v)) for k, v in (step.get("env") or {}).items()}
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", fill(step["run"])],
            cwd=workspace / fill(step.get("working-directory", default_dir)),
            env={**os.environ, **context_env, **step_env, "GITHUB_OUTPUT": str(output_file),
                 "GITHUB_ENV": str(env_file), "RUNNER_TEMP": str(runner_temp), "CI": "true",
                 "GITHUB_STEP_SUMMARY": str(summary_file), "GITHUB_PATH": str(path_file),
                 "PATH": ":".join([*reversed(path_file.read_text().split()),
                                   {**os.environ, **context_env, **step_env}.get("PATH", "")])},
            capture_output=True, text=True, timeout=600, check=False,
        )
        result.steps.append(StepRun(name, proc.returncode, proc.stdout, proc.stderr))
        if "id" in step:
            result.outputs[step["id"]] = _key_values(output_file)
        context_env.update(_key_values(env_file))
        if proc.returncode != 0:
            break
    result.summary = summary_file.read_text()
    result.job_outputs = {k: fill(str(v)) for k, v in (spec.get("outputs") or {}).items()}
    return result


def _key_values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

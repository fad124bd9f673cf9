"""The README's quick start runs as written, and its minimal trustplan.yaml is valid (issue 21, item 5).

The quick start's commands (between `<!-- quickstart: begin -->` and `<!-- quickstart: end -->`) run
in one bash from the checkout, with this environment's `trustplan` first on PATH and the scratch
directory `/tmp/demo` moved under the test's own tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block(name: str, lang: str) -> str:
    found = re.search(rf"<!-- {name}: begin -->\n```{lang}\n(.*?)```\n<!-- {name}: end -->", README, re.S)
    assert found, f"README.md has no {name} block"
    return found.group(1)


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    lines = block("quickstart", "console").splitlines()
    commands = [line[2:].split("  #")[0] for line in lines if line.startswith("$ ")]
    assert commands[0].startswith("cp -r examples/files /tmp/demo") and len(commands) <= 10
    script = "set -euo pipefail\n" + "\n".join(c.replace("/tmp/demo", str(tmp_path / "demo")) for c in commands)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "NO_COLOR": "1"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "trustplan.yaml: valid (files provider, 5 nodes, managing talos, kubernetes)" in out + result.stderr
    assert "Apply complete: 30 CA changes (10 accept, 10 swap, 10 remove)" in out
    assert (tmp_path / "demo" / "talosconfig").is_file() and (tmp_path / "demo" / "kubeconfig").is_file()


def test_minimal_desired_state_is_valid(tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["cp", "-r", str(ROOT / "examples" / "files"), str(work)], check=True)
    (work / "trustplan.yaml").write_text(block("minimal", "yaml"))
    trustplan = Path(sys.executable).parent / "trustplan"
    result = subprocess.run([str(trustplan), "validate"], cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    valid = "trustplan.yaml: valid (files provider, 5 nodes, managing talos, kubernetes)"
    assert valid in result.stdout + result.stderr


def _same(line: str) -> str:
    """A plan line with what changes on every run made equal: the short fingerprint of a CA the example
    generates, and so the order of a `[...]` list, which sorts by it."""
    line = re.sub(r"sha256:[0-9a-f]{12}", "sha256:<fingerprint>", line)
    return re.sub(r"\[([^\]]*)\]", lambda m: "[" + ", ".join(sorted(m.group(1).split(", "))) + "]", line)


def test_the_plan_output_shown_is_what_plan_prints(tmp_path: Path) -> None:
    """Every line of the README's shortened `trustplan plan` output (but the `...`) is a line the
    command prints on the bundled example."""
    work = tmp_path / "demo"
    subprocess.run(["cp", "-r", str(ROOT / "examples" / "files"), str(work)], check=True)
    trustplan = Path(sys.executable).parent / "trustplan"
    env = {**os.environ, "NO_COLOR": "1"}
    result = subprocess.run([str(trustplan), "plan"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = {_same(line) for line in result.stdout.splitlines()}
    shown = [line for line in block("plan-output", "console").splitlines() if line.strip() != "..."]
    assert len(shown) >= 5
    missing = [line for line in shown if _same(line) not in printed]
    assert missing == [], f"README.md shows lines `trustplan plan` does not print: {missing}"

"""docs/gitops.md's walkthrough, run as written with the real talosctl (v1.14.1 and v1.12.1): from
`talosctl gen config` with secrets.yaml beside it, through `init -> validate -> plan -> apply`
unchanged, to a `git status` that stages no key, lock, credential or secrets file.

The talosctl binaries come from scripts/peers/talosctl.sh (TALOSCTL_VERSION=...); under CI=true a
missing one fails the test instead of skipping it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "gitops.md"
CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
BIN = Path(sys.executable).parent


def walkthrough() -> tuple[list[str], list[str]]:
    """The console block's commands, and the output shown after its last command."""
    text = DOC.read_text().split("## From `talosctl gen config` to a first rotation", 1)[1]
    block = text.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    commands = [line[2:] for line in block if line.startswith("$ ")]
    last = max(i for i, line in enumerate(block) if line.startswith("$ "))
    return commands, block[last + 1:]


def talosctl(version: str) -> Path:
    path = CACHE / f"talosctl-{version}"
    if not path.exists():
        message = f"{path} missing: TALOSCTL_VERSION={version} bash scripts/peers/talosctl.sh builds it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.parametrize("version", ["v1.14.1", "v1.12.1"])
def test_the_walkthrough_runs_unchanged_and_stages_no_secret(version: str, tmp_path: Path) -> None:
    binary = talosctl(version)
    commands, expected = walkthrough()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "NO_COLOR": "1"}
    out, errors = "", ""
    for command in commands:
        run = re.sub(r"^talosctl\b", str(binary), command)
        result = subprocess.run(["bash", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        out, errors = result.stdout, errors + result.stderr
    got = [re.sub(r"[0-9a-f]{64}", "<fingerprint>", line) for line in out.splitlines()]
    assert sorted(got) == sorted(expected)  # key files sort by their fingerprints: a new order each run
    assert not any(re.search(r"\.key$|\.lock$|talosconfig|kubeconfig|secrets\.yaml|\.backup", g) for g in got)
    assert "does not work" not in errors  # talosctl's fresh talosconfig (endpoints: []) is not reported broken
    assert "found secrets.yaml: proposing `secrets: secrets.yaml`" in errors
    talosconfig = (tmp_path / "talosconfig").read_text()
    assert "- 10.5.0.2" in talosconfig  # the rewritten talosconfig reaches the control plane by its address
    assert "secrets: secrets.yaml" in (tmp_path / "trustplan.yaml").read_text()

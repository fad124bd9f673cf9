"""scripts/peers/go-install.sh NAME MODULE VERSION: a no-op that prints the cached binary's path when
it is there (Go not even needed), a usage error on wrong arguments, and a clear error without Go."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "peers" / "go-install.sh"


def run(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "TRUSTPLAN_PEERS": str(cache), "HOME": str(cache)}  # no Go on this PATH
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)


def test_a_cached_binary_is_found_without_building(tmp_path: Path) -> None:
    binary = tmp_path / "opa-v1.22.4"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = run(tmp_path, "opa", "github.com/open-policy-agent/opa", "v1.22.4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{binary}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opa-v1.22.4"]  # nothing built, nothing left


def test_a_missing_binary_without_go_says_so(tmp_path: Path) -> None:
    result = run(tmp_path, "conftest", "github.com/open-policy-agent/conftest", "v0.56.0")
    assert result.returncode == 1 and "go is not installed (needed to build conftest)" in result.stderr
    assert result.stdout == ""


def test_wrong_arguments_print_the_usage(tmp_path: Path) -> None:
    result = run(tmp_path, "opa")
    assert result.returncode == 2 and "usage: go-install.sh NAME MODULE VERSION" in result.stderr

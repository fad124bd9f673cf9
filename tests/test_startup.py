"""The CLI starts at once: `--version` and `--help` import none of the heavy libraries, and `validate`
imports none of those that only talk to clusters. Timings live in the benchmark (docs/performance.md), not here:
what is asserted is the set of modules the interpreter loaded (`python -X importtime`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: libraries a bare `--help` / `--version` must not load (each costs 20-300 ms to import)
HEAVY = (
    "rich",
    "kubernetes",
    "urllib3",
    "deepdiff",
    "jsonschema",
    "cryptography",
    "grpclib",
    "google.protobuf",
    "yaml",
    "asyncio",
    "trustplan_sim",
    "trustplan.providers.talos",
    "trustplan.engine.planning",
    "trustplan.engine.applier",
)
# (pydantic is not listed: typer itself loads it to convert a sub-command's parameters)
#: what only plan/apply/status need: validate must not load them
CLUSTER_ONLY = ("kubernetes", "urllib3", "deepdiff", "grpclib", "google.protobuf", "trustplan_sim")


def imported(*args: str, cwd: Path = ROOT) -> set[str]:
    """Every module `python -m trustplan ARGS` imported, read from -X importtime's report on stderr."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trustplan", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "trustplan.cli.app" in names  # the report was read
    return names


def loaded(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("plan", "--help"), ("sim", "up", "--help")])
def test_version_and_help_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert loaded(imported(*args), HEAVY) == []


def test_validate_imports_nothing_that_talks_to_a_cluster() -> None:
    names = imported("validate", cwd=ROOT / "examples" / "files")
    assert "jsonschema_rs" in names  # it did validate ...
    assert "jsonschema" not in names  # ... and, the file being valid, had no error to word
    assert loaded(names, CLUSTER_ONLY) == []

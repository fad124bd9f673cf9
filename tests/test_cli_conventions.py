"""CLI habits of Terraform and kubectl users (issue 14, item 3): flag traps refused with a hint,
colour only where it belongs, logs and heartbeats for CI, status that pipes whole, counts that agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_example, run_cli
from waiting import wait_until

from trustplan.cli import common

TRUSTPLAN = Path(sys.executable).parent / "trustplan"
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;")  # an SGR sequence that sets a foreground colour


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example(tmp_path_factory.mktemp("conv") / "cluster")


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = copy_example(tmp_path_factory.mktemp("applied") / "cluster")
    planned = run_cli(root, "plan", "-o", "plan.bin")
    result = run_cli(root, "apply", "plan.bin")
    assert result.code == 0, result.err
    return root, planned.out, result.out


def _tp(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([str(TRUSTPLAN), *args], cwd=cwd, capture_output=True, text=True, env={**base, **env})


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("plan", "-out=plan.bin"), "did you mean --out plan.bin?"),
        (("plan", "-out", "plan.bin"), "did you mean --out plan.bin?"),
        (("plan", "-detailed-exitcode"), "did you mean --detailed-exitcode?"),
        (("plan", "-o", "json"), "did you mean --format json?"),
        (("plan", "-ojson"), "did you mean --format json?"),
        (("plan", "--out", "markdown"), "did you mean --format markdown?"),
        (("status", "-detailed-exitcode"), "did you mean --detailed-exitcode?"),
        (("status", "-o", "json"), "did you mean --format json?"),
    ],
)
def test_flag_traps_are_refused_with_a_hint(cluster: Path, args: tuple[str, ...], hint: str) -> None:
    before = sorted(p.name for p in cluster.iterdir())
    result = run_cli(cluster, *args)
    assert result.code != 0
    assert hint in result.err
    assert sorted(p.name for p in cluster.iterdir()) == before  # no `ut=plan.bin`, no `json`


def test_a_plan_file_named_like_a_format_with_a_suffix_is_fine(cluster: Path) -> None:
    result = run_cli(cluster, "plan", "-o", "json.bin")
    assert result.code == 0, result.err
    (cluster / "json.bin").unlink()


def test_plan_colours_changes_in_a_terminal_only(cluster: Path) -> None:
    forced = _tp(cluster, "plan", FORCE_COLOR="1")
    assert forced.returncode == 0, forced.stderr
    plus = next(line for line in forced.stdout.splitlines() if "accept talos-2026" in line)
    assert "\x1b[32m" in plus  # green
    assert any("\x1b[31m" in line for line in forced.stdout.splitlines() if "remove " in line)  # red
    for plain in (
        _tp(cluster, "plan"),  # piped
        _tp(cluster, "--no-color", "plan", FORCE_COLOR="1"),
        _tp(cluster, "plan", "--no-color", FORCE_COLOR="1"),  # after the command, as with terraform
        _tp(cluster, "plan", FORCE_COLOR="1", NO_COLOR="1"),
    ):
        assert plain.returncode == 0
        assert not COLOUR.search(plain.stdout) and not COLOUR.search(plain.stderr)
    assert "\x1b" not in _tp(cluster, "plan").stdout


def test_verbose_and_log_level_log_the_steps(applied: tuple[Path, str, str]) -> None:
    root, _, _ = applied
    quiet = run_cli(root, "status")
    assert " INFO " not in quiet.err
    verbose = run_cli(root, "-v", "plan")
    assert re.search(r" INFO trustplan: reading nodes: finished in [0-9.]+s", verbose.err)
    assert re.search(r" INFO trustplan: reading nodes: finished", run_cli(root, "plan", "-v").err)
    debug = run_cli(root, "--log-level", "debug", "plan")
    assert " DEBUG trustplan: reading nodes: 10.5.0.2 done" in debug.err
    bad = run_cli(root, "--log-level", "loud", "plan")
    assert bad.code != 0 and "expected one of debug, info, warning, error" in bad.err


def test_a_log_gets_one_line_per_step_with_its_duration(applied: tuple[Path, str, str], capsys) -> None:
    root, _, _ = applied
    result = run_cli(root, "plan")
    assert re.search(r"^reading nodes: finished \(5/5\) in [0-9.]+s$", result.err, re.M)


def test_heartbeat_while_a_step_waits(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = common.ConsoleReporter(heartbeat=0.05)
    assert not reporter.live  # stderr is captured: a log, not a terminal
    reporter.start("gate after swap", 3)
    reporter.advance("10.5.0.2")
    parts: list[str] = []

    def heartbeat() -> bool:
        parts.append(capsys.readouterr().err)
        return "still running" in "".join(parts)

    wait_until(heartbeat, "a heartbeat line while the step waits")
    reporter.done()
    seen = "".join(parts) + capsys.readouterr().err
    assert re.search(r"^gate after swap: still running after \d+s \(1/3 done, 0 in flight, 0 failed\)$", seen, re.M)
    assert re.search(r"^gate after swap: finished \(1/3\) in [0-9.]+s$", seen, re.M)


def test_plan_and_apply_count_the_same_things_in_the_same_words(applied: tuple[Path, str, str]) -> None:
    _, plan_out, apply_out = applied
    words = "30 CA changes (10 accept, 10 swap, 10 remove) in 15 config writes"
    assert f"Plan: 2 authorities to create, {words}, 6 verification gates." in plan_out
    assert apply_out.startswith(f"Apply complete: {words}, 6 verification gates passed.")


def test_status_piped_shows_whole_columns(applied: tuple[Path, str, str]) -> None:
    root, _, _ = applied
    result = _tp(root, "status", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    assert "controlplane" in result.stdout and "kubernetes, until 20" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80


def test_status_detailed_exitcode_and_drift_lines(applied: tuple[Path, str, str], tmp_path: Path) -> None:
    root, _, _ = applied
    assert run_cli(root, "status", "--detailed-exitcode").code == 0
    original = (root / "nodes/cp-1.yaml").read_bytes()
    try:
        pristine = Path(__file__).parents[1] / "examples/files/nodes/cp-1.yaml"
        (root / "nodes/cp-1.yaml").write_bytes(pristine.read_bytes())
        drifted = run_cli(root, "status", "--detailed-exitcode")
        assert drifted.code == 2
        line = next(x for x in drifted.out.splitlines() if "machine.ca:" in x)
        assert re.fullmatch(
            r"  ! 10\.5\.0\.2: machine\.ca: state \(serial 1\) has talos-2026 \(sha256:[0-9a-f]{12}\), "
            r"live has sha256:[0-9a-f]{12}",
            line,
        )
        assert run_cli(root, "status").code == 0  # without the flag drift is reported, not an error
    finally:
        (root / "nodes/cp-1.yaml").write_bytes(original)


def test_shell_completion_is_on(cluster: Path) -> None:
    result = _tp(cluster, _TRUSTPLAN_COMPLETE="complete_bash", COMP_WORDS="trustplan pl", COMP_CWORD="1")
    assert result.returncode == 0
    assert "plan" in result.stdout.split()
    assert "--show-completion" in _tp(cluster, "--help").stdout


def test_the_files_demo_writes_no_escape_codes_into_a_log() -> None:
    repo = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    result = subprocess.run(["bash", "scripts/demo-files.sh"], cwd=repo, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "$ trustplan apply plan.bin" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr


def test_make_has_nothing_to_install_when_nothing_changed() -> None:
    """`make test` reinstalls only when pyproject.toml or the package's file list changed."""
    repo = Path(__file__).parents[1]
    if shutil.which("make") is None or not (repo / ".venv" / ".installed").exists():
        pytest.skip("not installed through make")
    up_to_date = subprocess.run(["make", "-q", "install"], cwd=repo, capture_output=True, text=True)
    assert up_to_date.returncode == 0, "make would reinstall although nothing changed"
    (repo / "pyproject.toml").touch()
    try:
        assert subprocess.run(["make", "-q", "install"], cwd=repo, capture_output=True).returncode == 1
    finally:
        stamp = repo / ".venv" / ".installed"
        stamp.touch()  # as fresh as pyproject.toml again: nothing was changed


def test_retries_are_logged() -> None:
    """What `-v` shows while the Talos API client waits for a node: each retry, why, and the wait."""
    import asyncio
    import logging

    from trustplan.providers.talos.client import Transient, with_retry
    from trustplan.providers.talos.talosconfig import Endpoint

    calls = []

    async def attempt(endpoint: Endpoint) -> str:
        calls.append(endpoint)
        if len(calls) < 3:
            raise Transient("unavailable", "node is rebooting")
        return "ok"

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger, collect = logging.getLogger("trustplan.talos"), Collect()
    logger.addHandler(collect)
    old_level = logging.getLogger("trustplan").level
    logging.getLogger("trustplan").setLevel(logging.INFO)  # what -v sets
    try:
        assert asyncio.run(with_retry(attempt, (Endpoint("10.5.0.2"),), timeout=30)) == "ok"
    finally:
        logger.removeHandler(collect)
        logging.getLogger("trustplan").setLevel(old_level)
    assert len(collect.messages) == 2
    pattern = r"10\.5\.0\.2: node is rebooting \(unavailable\); retrying in [0-9.]+s, \d+s left"
    assert all(re.fullmatch(pattern, m) for m in collect.messages), collect.messages

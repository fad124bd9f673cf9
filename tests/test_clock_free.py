"""The tests wait for events, not for the clock (issue 11): a scan of every Python file under tests/.

A test fails if it
- asserts on a duration: an `assert` that reads a clock (time.monotonic/perf_counter/time, loop.time),
  or a value computed from one (a name assigned from a clock reading, a function returning one, a call
  handed such a function), or a name that says it is a duration (elapsed, waited, duration, took);
- sleeps on the real clock for longer than a short poll: time.sleep / asyncio.sleep with anything
  but a number of at most MAX_POLL seconds (or a module constant holding one).

Waiting for something is tests/waiting.py's wait_until / until (a poll with a generous bound that only
keeps a broken run from hanging); where a test needs time to pass, it injects the clock (cli_clock in
conftest.py, LocalState(clock=, sleep=), with_retry(clock=, sleep=), SimCluster.delay). Timing figures
belong in benchmarks/.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MAX_POLL = 0.1  # seconds: the longest sleep that is a poll between looks, not a wait for time to pass

CLOCKS = {"monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "time", "time_ns", "process_time"}
DURATION_NAME = re.compile(r"^(elapsed|waited|duration|took)(_(s|ms|seconds))?$|_(elapsed|duration)$")


def _is_clock_call(node: ast.AST) -> bool:
    """time.monotonic(), perf_counter(), loop.time(), asyncio.get_running_loop().time() ..."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in CLOCKS and not node.args:
        owner = func.value
        if isinstance(owner, ast.Name) and owner.id in ("time", "loop"):
            return True
        return func.attr == "time" and isinstance(owner, ast.Call)  # get_running_loop().time()
    return isinstance(func, ast.Name) and func.id in CLOCKS - {"time"} and not node.args


class _Module:
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.names: set[str] = set()  # names holding a clock reading or something computed from one
        self.functions: set[str] = set()  # functions returning such a value
        self.constants: dict[str, object] = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        self._taint()

    def timed(self, expr: ast.AST) -> bool:
        """Does `expr` read a clock, directly or through a tainted name or function?"""
        for node in ast.walk(expr):
            if _is_clock_call(node):
                return True
            if isinstance(node, ast.Name) and (node.id in self.names or node.id in self.functions):
                return True
        return False

    def _taint(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                targets: list[ast.AST] = []
                if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.NamedExpr) and node.value:
                    if self.timed(node.value):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and self._returns_timed(node):
                    self.functions.add(node.name)
                    changed = True
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name) and name.id not in self.names:
                            self.names.add(name.id)
                            changed = True

    def _returns_timed(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        return function.name not in self.functions and any(
            isinstance(r, ast.Return) and r.value is not None and self.timed(r.value) for r in ast.walk(function)
        )

    def sleep_too_long(self, call: ast.Call) -> str | None:
        """Why this time.sleep / asyncio.sleep call is more than a short poll (None: it is one)."""
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr == "sleep" and isinstance(func.value, ast.Name)
                and func.value.id in ("time", "asyncio")):
            return None
        arg = call.args[0] if call.args else None
        value = arg.value if isinstance(arg, ast.Constant) else (
            self.constants.get(arg.id) if isinstance(arg, ast.Name) else None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None if value <= MAX_POLL else f"sleeps {value:g} s on the real clock"
        return f"sleeps on the real clock for {ast.unparse(arg) if arg else 'nothing'}"


def violations(source: str, filename: str = "<test>") -> list[str]:
    """Every duration assertion and long sleep in `source`, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    module = _Module(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            durations = [n.id for n in ast.walk(node.test) if isinstance(n, ast.Name) and DURATION_NAME.search(n.id)]
            if module.timed(node.test) or durations:
                found.append((node.lineno, f"asserts a duration: {ast.unparse(node.test)}"))
        elif isinstance(node, ast.Call) and (why := module.sleep_too_long(node)):
            found.append((node.lineno, why))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def test_no_test_asserts_a_duration_or_sleeps_on_the_real_clock() -> None:
    found = [
        v
        for path in sorted(TESTS.rglob("*.py"))
        for v in violations(path.read_text(), str(path.relative_to(TESTS.parent)))
    ]
    assert found == [], "\n".join(found)


# --- the guard itself: it catches what it is meant to, and lets waits and fake clocks be ---------------


PLANTED = {
    "elapsed-from-monotonic": """
        started = time.monotonic()
        do_it()
        assert time.monotonic() - started < 3
    """,
    "a-name-computed-from-a-clock": """
        t0 = time.perf_counter()
        do_it()
        spent = time.perf_counter() - t0
        assert spent >= 0.5
    """,
    "a-scenario-returning-its-duration": """
        def test_x(tmp_path):
            async def scenario(cluster):
                start = asyncio.get_running_loop().time()
                await cluster.go()
                return asyncio.get_running_loop().time() - start
            result = run_with_cluster(scenario, tmp_path)
            assert result > 1.8
    """,
    "a-duration-named-so": """
        elapsed = measure()
        assert elapsed < 2
    """,
    "sleep-past-an-expiry": """
        time.sleep(1.1)
    """,
    "async-sleep-as-a-wait": """
        async def f():
            await asyncio.sleep(0.5)
    """,
    "sleep-for-a-computed-time": """
        time.sleep(down_seconds)
    """,
}

ALLOWED = {
    "a-poll-between-looks": """
        POLL = 0.02
        while not done():
            time.sleep(POLL)
            time.sleep(0.05)
    """,
    "a-bounded-wait-that-raises": """
        deadline = time.monotonic() + 30
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("not done")
            time.sleep(0.02)
        assert result() == "ok"
    """,
    "a-fake-clock": """
        clock = FakeClock()
        run(attempt, clock=clock, sleep=clock.sleep)
        assert clock.now == pytest.approx(2.0)
        assert clock.sleeps == [0.05, 0.1]
    """,
    "certificate-times": """
        now = pki.utcnow()
        assert cert.not_valid_after_utc > now
    """,
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_the_guard_fails_on_a_planted_duration_check(name: str) -> None:
    assert len(violations(textwrap.dedent(PLANTED[name]))) == 1


@pytest.mark.parametrize("name", list(ALLOWED))
def test_the_guard_lets_waits_and_fake_clocks_be(name: str) -> None:
    assert violations(textwrap.dedent(ALLOWED[name])) == []


def test_a_planted_file_in_tests_fails_the_scan(tmp_path: Path) -> None:
    """The scan reads files from disk: a test file written like the old ones is reported by line."""
    planted = tmp_path / "test_planted.py"
    planted.write_text(textwrap.dedent('''
        import time

        def test_expired_plan_is_refused(cli):
            assert cli("plan", "--expires-in", "1s").code == 0
            time.sleep(1.1)
            started = time.monotonic()
            assert cli("apply").code == 1
            assert time.monotonic() - started < 3
    '''))
    assert violations(planted.read_text(), planted.name) == [
        "test_planted.py:6: sleeps 1.1 s on the real clock",
        "test_planted.py:9: asserts a duration: time.monotonic() - started < 3",
    ]

"""planner/ is the pure core: it must not import anything that does I/O, reads the clock or draws
random numbers (DESIGN.md: "No I/O, no clock, no randomness"). This test reads the source with ast,
so it also catches imports made inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLANNER = Path(__file__).resolve().parents[2] / "planner"

#: Top-level modules the pure core may not import (their submodules are refused too).
FORBIDDEN = {
    "os", "io", "sys", "socket", "ssl", "pathlib", "shutil", "tempfile", "glob", "subprocess", "asyncio",
    "threading", "multiprocessing", "concurrent", "select", "selectors", "signal", "fcntl", "mmap",
    "random", "secrets", "uuid", "time", "logging", "urllib", "http", "requests", "httpx",
    "grpc", "grpclib", "google", "kubernetes", "yaml", "json", "jsonschema", "cryptography", "rich", "typer",
    "click", "sqlite3", "pickle", "shelve", "getpass", "platform", "builtins", "importlib", "ctypes",
}
#: Within trustplan, the planner may only import itself.
ALLOWED_TRUSTPLAN = "trustplan.planner"
#: Calls that read the clock or the environment even when their module is allowed (datetime is, for types).
FORBIDDEN_CALLS = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp", "open", "input", "print",
                   "exec", "eval", "__import__", "breakpoint"}


def _modules() -> list[Path]:
    files = sorted(PLANNER.glob("**/*.py"))
    assert files, f"no planner modules found under {PLANNER}"
    return files


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:  # relative: stays inside planner/
                continue
            out.append((n.lineno, n.module or ""))
    return out


def _violations(source: str, name: str) -> list[str]:
    tree = ast.parse(source, name)
    bad = []
    for line, module in _imports(tree):
        top = module.split(".")[0]
        if top in FORBIDDEN:
            bad.append(f"{name}:{line}: imports {module}")
        elif top == "trustplan" and not (module == ALLOWED_TRUSTPLAN or module.startswith(ALLOWED_TRUSTPLAN + ".")):
            bad.append(f"{name}:{line}: imports {module} (the core may not depend on the shell)")
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if called in FORBIDDEN_CALLS:
                bad.append(f"{name}:{n.lineno}: calls {called}()")
    return bad


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_planner_module_does_no_io(path: Path) -> None:
    assert _violations(path.read_text(), f"planner/{path.name}") == []


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import os", "imports os"),
        ("from pathlib import Path", "imports pathlib"),
        ("def f():\n    import yaml", "imports yaml"),
        ("import os.path as p", "imports os.path"),
        ("from grpclib.client import Channel", "imports grpclib.client"),
        ("from trustplan.engine.planning import apply", "imports trustplan.engine.planning"),
        ("import datetime as dt\nx = dt.datetime.now()", "calls now()"),
        ("from datetime import datetime\nx = datetime.utcnow()", "calls utcnow()"),
        ("x = open('f')", "calls open()"),
    ],
)
def test_the_checker_catches(snippet: str, expected: str) -> None:
    """The test above is not a test of nothing: each forbidden pattern is caught."""
    assert any(expected in v for v in _violations(snippet, "x.py"))


def test_the_checker_allows_types_and_the_planner_itself() -> None:
    ok = (
        "from __future__ import annotations\nimport datetime as dt\nfrom dataclasses import dataclass\n"
        "from typing import Literal\nfrom trustplan.planner.model import PKI\nfrom .ops import Gate\n"
        "def f(t: dt.datetime) -> dt.timedelta:\n    return t - t\n"
    )
    assert _violations(ok, "ok.py") == []

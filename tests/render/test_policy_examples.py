"""The example policies (examples/policy) pass the files example's plan and fail crafted unsafe plans."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from render_scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "policy"
TRUSTPLAN = Path(sys.executable).with_name("trustplan")


def check(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    return subprocess.run(
        [sys.executable, str(POLICY / "check_plan.py"), str(path)], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def example_plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`trustplan plan -o plan.bin` on a copy of examples/files, read back with `show --format json`."""
    work = tmp_path_factory.mktemp("files")
    shutil.copytree(ROOT / "examples" / "files", work, dirs_exist_ok=True)
    subprocess.run([str(TRUSTPLAN), "plan", "-o", "plan.bin"], cwd=work, check=True, capture_output=True)
    shown = subprocess.run(
        [str(TRUSTPLAN), "show", "plan.bin", "--format", "json"], cwd=work, check=True, capture_output=True, text=True
    )
    doc: dict[str, Any] = json.loads(shown.stdout)
    return doc


def without_early_gates(doc: dict[str, Any]) -> dict[str, Any]:
    """Unsafe: the old CAs are removed although no gate ever proved the new issuer reaches the nodes."""
    bad = copy.deepcopy(doc)
    for phase in bad["phases"]:
        if phase["name"] != "remove":
            phase["gates"] = []
    return bad


def removes_first(doc: dict[str, Any]) -> dict[str, Any]:
    """Unsafe: the remove phase runs before accept and swap."""
    bad = copy.deepcopy(doc)
    bad["phases"].sort(key=lambda p: {"remove": 0}.get(p["name"], 1))
    return bad


def short_lived(doc: dict[str, Any]) -> dict[str, Any]:
    """A new CA valid for 200 days."""
    bad = copy.deepcopy(doc)
    live = {fp for n in bad["nodes"] for t in n["live"].values() for fp in [t["issuer"], *t["accepted"]]}
    new = next(a for a in bad["authorities"] if a["fingerprint"] not in live)
    new["not_after"] = _plus_days(new["not_before"], 200)
    return bad


def _plus_days(stamp: str, days: int) -> str:
    import datetime as dt

    t = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") + dt.timedelta(days=days)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


UNSAFE = {"without_early_gates": without_early_gates, "removes_first": removes_first, "short_lived": short_lived}
RULE = {
    "without_early_gates": "remove-before-verified",
    "removes_first": "remove-before-verified",
    "short_lived": "short-lived-ca",
}


def test_python_policy_passes_the_example_plan(example_plan: dict[str, Any], tmp_path: Path) -> None:
    result = check(example_plan, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_python_policy_passes_the_golden_plans(scenario: str, tmp_path: Path) -> None:
    _, doc = SCENARIOS[scenario]()
    assert check(doc, tmp_path).returncode == 0


@pytest.mark.parametrize("craft", sorted(UNSAFE))
def test_python_policy_fails_unsafe_plans(craft: str, example_plan: dict[str, Any], tmp_path: Path) -> None:
    result = check(UNSAFE[craft](example_plan), tmp_path)
    assert result.returncode == 1
    assert f"FAIL {RULE[craft]}:" in result.stdout
    assert "PASS" not in result.stdout


def test_python_policy_reads_stdin_and_rejects_garbage(example_plan: dict[str, Any]) -> None:
    ok = subprocess.run(
        [sys.executable, str(POLICY / "check_plan.py")],
        input=json.dumps(example_plan),
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    bad = subprocess.run(
        [sys.executable, str(POLICY / "check_plan.py"), "-"], input="{}", capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "not a trustplan plan document" in bad.stderr


def _opa() -> str | None:
    found = shutil.which("opa")
    if found:
        return found
    candidate = Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "opa"
    return str(candidate) if candidate.is_file() else None


def opa_deny(doc: dict[str, Any], tmp_path: Path) -> list[str]:
    opa = _opa()
    if opa is None:
        pytest.skip("opa is not installed (go install github.com/open-policy-agent/opa@latest)")
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    result = subprocess.run(
        [opa, "eval", "-d", str(POLICY / "policy.rego"), "-i", str(path), "--format", "json", "data.main.deny"],
        capture_output=True,
        text=True,
        check=True,
    )
    value: list[str] = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    return value


def test_rego_policy_passes_the_example_plan(example_plan: dict[str, Any], tmp_path: Path) -> None:
    assert opa_deny(example_plan, tmp_path) == []


@pytest.mark.parametrize("craft", sorted(UNSAFE))
def test_rego_policy_fails_unsafe_plans(craft: str, example_plan: dict[str, Any], tmp_path: Path) -> None:
    denied = opa_deny(UNSAFE[craft](example_plan), tmp_path)
    assert denied and all(d.startswith(RULE[craft]) for d in denied)


def test_python_policy_passes_a_revoke_only_plan(tmp_path: Path) -> None:
    """Dropping a CA while the issuer stays (revoking a leaked credential) is not an unverified removal."""
    from planner.helpers import cluster, plan_input, steps, trust, want
    from trustplan.planner import make_plan
    from trustplan.planner.document import to_document

    plan = make_plan(plan_input(cluster(trust("old", "x")), want("talos", "old"), authorities=()))
    assert [s for s in steps(plan) if not s.startswith("output")][0].startswith("remove")
    doc = to_document(plan)
    doc.update(created="2026-11-27T12:00:00Z", expires="2026-11-30T12:00:00Z")
    result = check(doc, tmp_path)
    assert result.returncode == 0, result.stdout

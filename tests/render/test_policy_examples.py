"""The example policies (examples/policy) pass the files example's plan and fail crafted unsafe plans."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from peers import tool
from render_scenarios import SCENARIOS, document

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


def sa_without_drain(doc: dict[str, Any]) -> dict[str, Any]:
    """A service-account key swapped away and removed in the same plan (drain 0s)."""
    bad = copy.deepcopy(doc)
    node = next(n["address"] for n in bad["nodes"] if n["role"] == "controlplane")
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    swap = {"kind": "swap", "node": node, "role": "controlplane", "pki": "serviceaccount", "destructive": False,
            "new": new, "old": old, "with_key": True}
    remove = {"kind": "remove", "node": node, "role": "controlplane", "pki": "serviceaccount", "destructive": True,
              "ca": old}
    by_name = {p["name"]: p for p in bad["phases"]}
    by_name["swap"]["edits"].append(swap)
    by_name["remove"]["edits"].append(remove)
    return bad


def etcd_below_quorum(doc: dict[str, Any]) -> dict[str, Any]:
    """An etcd CA rolling step that restarts a member while only one of three is up."""
    bad = copy.deepcopy(doc)
    node = next(n["address"] for n in bad["nodes"] if n["role"] == "controlplane")
    step = {"member": node, "restart": True, "members": 3, "up_during": 1, "quorum": 2,
            "issuer": "sha256:" + "b" * 64, "accepted": ["sha256:" + "a" * 64]}
    bad["phases"][0]["etcd_rolling"] = [step]
    return bad


UNSAFE = {
    "without_early_gates": without_early_gates,
    "removes_first": removes_first,
    "short_lived": short_lived,
    "sa_without_drain": sa_without_drain,
    "etcd_below_quorum": etcd_below_quorum,
}
RULE = {
    "without_early_gates": "remove-before-verified",
    "removes_first": "remove-before-verified",
    "short_lived": "short-lived-ca",
    "sa_without_drain": "sa-no-drain",
    "etcd_below_quorum": "etcd-quorum",
}


def test_python_policy_passes_the_example_plan(example_plan: dict[str, Any], tmp_path: Path) -> None:
    result = check(example_plan, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_python_policy_passes_the_golden_plans(scenario: str, tmp_path: Path) -> None:
    assert check(document(SCENARIOS[scenario]()), tmp_path).returncode == 0


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


@pytest.fixture(scope="module")
def opa() -> str:
    return tool("opa")


def opa_deny(opa: str, doc: dict[str, Any], tmp_path: Path) -> list[str]:
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


def test_rego_policy_passes_the_example_plan(opa: str, example_plan: dict[str, Any], tmp_path: Path) -> None:
    assert opa_deny(opa, example_plan, tmp_path) == []


@pytest.mark.parametrize("craft", sorted(UNSAFE))
def test_rego_policy_fails_unsafe_plans(opa: str, craft: str, example_plan: dict[str, Any], tmp_path: Path) -> None:
    denied = opa_deny(opa, UNSAFE[craft](example_plan), tmp_path)
    assert denied and all(d.startswith(RULE[craft]) for d in denied)


def test_python_policy_passes_a_revoke_only_plan(tmp_path: Path) -> None:
    """Dropping a CA while the issuer stays (revoking a leaked credential) is not an unverified removal."""
    from planner.helpers import cluster, plan_input, steps, trust, want
    from trustplan.planner import make_plan
    from trustplan.planner.document import to_document

    plan = make_plan(plan_input(cluster(trust("old", "x")), want("talos", "old"), authorities=()))
    assert [s for s in steps(plan) if not s.startswith("output")][0].startswith("remove")
    doc = to_document(plan)
    doc.update(format_version=1, created="2026-11-27T12:00:00Z", expires="2026-11-30T12:00:00Z")
    result = check(doc, tmp_path)
    assert result.returncode == 0, result.stdout


def other_major(doc: dict[str, Any]) -> dict[str, Any]:
    """A document of format 2: a policy written for 1.x must not judge it."""
    return {**copy.deepcopy(doc), "format_version": 2}


def newer_minor(doc: dict[str, Any]) -> dict[str, Any]:
    """Format 1.9: fields this policy has never heard of, everywhere. Still a 1.x document."""
    newer = copy.deepcopy(doc)
    newer["format_minor"] = 9
    newer["rollout_window"] = {"start": "2026-12-01T00:00:00Z"}
    for a in newer["authorities"]:
        a["crl_url"] = None
    for phase in newer["phases"]:
        for edit in phase["edits"]:
            edit["estimated_seconds"] = 1.5
    return newer


def test_python_policy_refuses_another_major_and_reads_a_newer_minor(
    example_plan: dict[str, Any], tmp_path: Path
) -> None:
    refused = check(other_major(example_plan), tmp_path)
    assert refused.returncode == 1
    assert refused.stdout.strip() == (
        "FAIL format-version: plan document format_version 2 is not supported by this policy (it reads 1.x)"
    )
    assert check(newer_minor(example_plan), tmp_path).returncode == 0


def test_rego_policy_refuses_another_major_and_reads_a_newer_minor(
    opa: str, example_plan: dict[str, Any], tmp_path: Path
) -> None:
    assert opa_deny(opa, other_major(example_plan), tmp_path) == [
        "format-version: plan document format_version 2 is not supported by this policy (it reads 1.x)"
    ]
    assert opa_deny(opa, newer_minor(example_plan), tmp_path) == []


def test_rego_policy_prints_whole_days(opa: str, example_plan: dict[str, Any], tmp_path: Path) -> None:
    bad = short_lived(example_plan)
    new = next(a for a in bad["authorities"] if a["new"])
    new["not_after"] = new["not_after"][:11] + "18:00:00Z"  # 200 days and a few hours
    (denied,) = opa_deny(opa, bad, tmp_path)
    assert re.search(r"is valid for (199|200) days, less than 365$", denied), denied
    assert "%!" not in denied

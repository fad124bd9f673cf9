"""docs/etcd-ca.md says what the code does: its quorum table is planner.etcd's arithmetic, and its
console commands are the ones the tests run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from trustplan.planner.etcd import EtcdMember, EtcdPlanRefused, plan_etcd, quorum

DOC = Path(__file__).resolve().parents[2] / "docs" / "etcd-ca.md"


def _table(heading: str) -> list[list[str]]:
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_quorum_table_is_the_planners() -> None:
    rows = _table("Quorum figures")
    assert [int(r[0]) for r in rows] == [1, 2, 3, 5]
    for members, q, up, tolerates, steps, restarts in rows:
        n = int(members)
        fresh = [EtcdMember(f"cp-{k}", "old", (), False, False) for k in range(1, n + 1)]
        assert int(q) == quorum(n) and int(up) == n - 1
        if tolerates == "refused":
            with pytest.raises(EtcdPlanRefused):
                plan_etcd(fresh, "old", "new")
            continue
        planned = plan_etcd(fresh, "old", "new")
        assert int(tolerates) == n - 1 - quorum(n)
        assert (int(steps), int(restarts)) == (len(planned), sum(s.restart for s in planned))
        assert {s.up_during for s in planned if s.restart} == {int(up)}


def test_console_commands_are_the_tested_ones() -> None:
    blocks = re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S)
    commands = [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]
    assert commands == [
        "trustplan plan -o plan.bin",
        "trustplan apply plan.bin",
        "bash scripts/peers/etcd.sh",
        ".venv/bin/python benchmarks/etcd_ca.py --members 3 5",
    ]
    # tests/e2e/test_etcd_credential.py runs plan -o plan.bin, show and apply plan.bin through the CLI;
    # tests/realk8s/test_etcd_rotation.py runs the benchmark (its main() with --members 5, and 3 members);
    # CI runs scripts/peers/etcd.sh (.ci/run).
    assert "bash scripts/peers/etcd.sh" in (DOC.parents[1] / ".ci" / "run").read_text()

"""benchmarks/rotate.py's round-trip bound: RPC rounds on apply's critical path under a plan's rollout,
counted from a real plan document (the example cluster: 3 control planes + 2 workers, both PKIs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import copy_example, run_cli

ROTATE = Path(__file__).resolve().parent.parent / "benchmarks" / "rotate.py"


@pytest.fixture(scope="module")
def rotate():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("rotate_bench", ROTATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def _plan(tmp_path: Path, *args: str) -> dict:
    root = copy_example(tmp_path / "c")
    assert run_cli(root, "plan", *args, "-o", "plan.bin").code == 0
    return json.loads(run_cli(root, "show", "-f", "json", "plan.bin").out)


def test_rounds_follow_the_rollout(tmp_path: Path, rotate) -> None:  # noqa: ANN001
    doc = _plan(tmp_path, "--parallelism", "5")
    edit_phases = [p for p in doc["phases"] if p["edits"]]
    gates = sum(len(p["gates"]) for p in doc["phases"])
    assert len(edit_phases) == 3 and gates == 6  # accept, swap, remove; a gate per PKI after each
    # the read, then per phase 3 control planes one at a time + 1 wave of both workers, each wave two
    # rounds (the Kubernetes CA changes too: the kubelet watch is opened before the write), 1 per gate
    assert rotate.rpc_rounds(doc, 3, 2) == 1 + 3 * (3 + 1) * 2 + 6


def test_one_at_a_time_counts_every_node_and_gate_check(tmp_path: Path, rotate) -> None:  # noqa: ANN001
    doc = _plan(tmp_path, "--parallelism", "1")
    talos_gates = sum(1 for p in doc["phases"] for g in p["gates"] if g["pki"] == "talos")
    kube_gates = sum(1 for p in doc["phases"] for g in p["gates"] if g["pki"] == "kubernetes")
    assert rotate.rpc_rounds(doc, 3, 2) == 1 + 3 * 5 * 2 + talos_gates * 5 + kube_gates


def test_the_read_counts_its_rounds(rotate) -> None:  # noqa: ANN001
    """Apply reads READ_CONCURRENCY nodes at a time: 70 nodes, no phase, are three rounds."""
    nodes = [{"address": f"10.0.0.{i}", "role": "worker"} for i in range(70)]
    doc = {"nodes": nodes, "phases": [], "rollout": {"controlplane": 1, "worker": 10, "canary": 0, "gates": 32}}
    assert rotate.rpc_rounds(doc, 0, 70) == 3

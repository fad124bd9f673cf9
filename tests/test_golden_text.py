"""Golden renderings: the text a user reads for a plan, and the canonical plan document, pinned.

Plans are built from fixed inputs (the planner helpers: fake fingerprints, a fixed `now`), so the
output is deterministic. After an intended change, regenerate with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden_text.py
and review the diff of tests/golden/.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "planner"))
from helpers import NOW, cluster, node, plan_input, trust, want  # noqa: E402
from trustplan.planner import Plan, make_plan  # noqa: E402
from trustplan.planner.ops import OutputKind  # noqa: E402

from trustplan.formats import planfile  # noqa: E402
from trustplan.formats.planfile.savedplan import Bindings, SavedPlan  # noqa: E402
from trustplan.render import text as render

GOLDEN = Path(__file__).parent / "golden"


def _fresh_both() -> Plan:
    return make_plan(
        plan_input(cluster(trust("old"), kube=trust("k-old")), want("talos", "new"), want("kubernetes", "k-new"))
    )


def _half_done() -> Plan:
    nodes = (
        node("10.5.0.2", "controlplane", trust("new", "old")),
        *(node(a, "controlplane", trust("old", "new")) for a in ("10.5.0.3", "10.5.0.4")),
        *(node(a, "worker", trust("old")) for a in ("10.5.0.5", "10.5.0.6")),
    )
    return make_plan(plan_input(nodes, want("talos", "new")))


def _pre_stage() -> Plan:
    return make_plan(plan_input(cluster(trust("old")), want("talos", "old", "new")))


def _revoke() -> Plan:
    return make_plan(plan_input(cluster(trust("new", "old")), want("talos", "new")))


def _no_op() -> Plan:
    return make_plan(plan_input(cluster(trust("new")), want("talos", "new")))


PLANS = {
    "fresh-both": _fresh_both,
    "half-done": _half_done,
    "pre-stage": _pre_stage,
    "revoke": _revoke,
    "no-op": _no_op,
}


def saved(plan: Plan) -> SavedPlan:
    """The plan as the shell saves it, with fixed bindings."""
    plan = dataclasses.replace(
        plan,
        # the helpers' CAs have no certificate; stand in a fixed one
        authorities=tuple(
            dataclasses.replace(a, cert_pem=f"-----BEGIN CERTIFICATE-----\n{a.name}\n-----END CERTIFICATE-----\n")
            for a in plan.authorities
        ),
        # the helpers' digests are readable fakes; the schema wants real ones
        nodes=tuple(
            dataclasses.replace(n, config_digest="sha256:" + hashlib.sha256(n.address.encode()).hexdigest())
            for n in plan.nodes
        ),
    )
    bindings = Bindings(
        tool_version="0.0.0-golden",
        created=NOW,
        expires=NOW + dt.timedelta(hours=72),
        provider="files",
        desired_digest="sha256:" + "d" * 64,
        lineage=None,
        serial=0,
    )
    paths: dict[OutputKind, str] = {"talosconfig": "talosconfig", "kubeconfig": "kubeconfig", "secrets": "secrets"}
    return planfile.new(plan, bindings, paths, None, format_minor=1)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"{name} changed; if intended, regenerate with UPDATE_GOLDEN=1 and review"


@pytest.mark.parametrize("name", sorted(PLANS))
def test_text_rendering(name: str) -> None:
    plan = PLANS[name]()
    check_golden(f"{name}.txt", render.text(saved(plan)))


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_document(name: str) -> None:
    check_golden(f"{name}.json", render.json_text(saved(PLANS[name]())))  # planfile.new checks the schema


def test_same_inputs_give_a_byte_identical_plan_file() -> None:
    assert planfile.encode(saved(_fresh_both())) == planfile.encode(saved(_fresh_both()))

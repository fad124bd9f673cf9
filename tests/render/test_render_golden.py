"""Golden files pin the text, Markdown and JSON renderings of deterministic example plans.

Regenerate after an intended change with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_render_golden.py`
and review the diff like any other change to what users see.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from render_scenarios import SCENARIOS
from trustplan.planner import Plan

from trustplan import render, render_markdown, schemas

GOLDEN = Path(__file__).parent / "golden"
RENDERINGS: dict[str, Callable[[Plan, dict[str, Any]], str]] = {
    "txt": render.text,
    "md": render.markdown,
    "summary.md": render_markdown.render_summary,
    "json": lambda plan, doc: render.json_text(doc),
}


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert path.exists(), f"{path} missing; run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"{name} differs from the golden file; UPDATE_GOLDEN=1 regenerates it"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("kind", sorted(RENDERINGS))
def test_rendering_matches_golden(scenario: str, kind: str) -> None:
    plan, doc = SCENARIOS[scenario]()
    check_golden(f"{scenario}.{kind}", RENDERINGS[kind](plan, doc))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renderings_are_deterministic(scenario: str) -> None:
    first, second = SCENARIOS[scenario](), SCENARIOS[scenario]()
    for fn in RENDERINGS.values():
        assert fn(*first) == fn(*second)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_json_is_valid_against_the_plan_schema(scenario: str) -> None:
    _, doc = SCENARIOS[scenario]()
    jsonschema.validate(doc, schemas.load("plan"), cls=jsonschema.Draft202012Validator)
    assert doc["format_version"] == 1


def test_markdown_layout_for_review() -> None:
    plan, doc = SCENARIOS["rotation"]()
    md = render.markdown(plan, doc)
    assert md.splitlines()[0] == render.summary_line(plan)
    assert md.splitlines()[0] == (
        "Plan: 2 authorities to create, 30 CA changes (10 accept, 10 swap, 10 remove) in 15 config writes, "
        "6 verification gates."
    )
    warning, new_cas, tables = md.index("> [!WARNING]"), md.index("### New authorities"), md.index("CA per node")
    assert warning < new_cas < tables < md.index("<details>")
    assert md.count("<details>") == md.count("</details>") == 3  # one per phase
    for a in plan.new_authorities:
        assert a.fingerprint in md
    assert md.count("```diff") == 3 and md.count("```") == 6
    assert "machine.ca.key: (sensitive)" in md and "cluster.ca.key: (sensitive)" in md
    assert "PRIVATE KEY" not in md


def test_resume_warnings_name_expiry_and_skipped_nodes() -> None:
    plan, doc = SCENARIOS["resume"]()
    md = render.markdown(plan, doc)
    block = md[md.index("> [!WARNING]") : md.index("### Talos API CA per node")]
    assert "stops being trusted on every node" in block and "talosconfig" in block
    assert "talos-legacy" in block and "expires in 60 days" in block
    assert "1 node skipped" in block and "10.5.0.2" in block

"""Golden files pin the text, Markdown and JSON renderings of deterministic example plans.

Regenerate after an intended change with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_render_golden.py`
and review the diff like any other change to what users see.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from render_scenarios import SCENARIOS, SIZES, document
from trustplan.planner import Plan

from trustplan import schemas
from trustplan.formats.savedplan import SavedPlan
from trustplan.render import markdown as render_markdown
from trustplan.render import text as render

GOLDEN = Path(__file__).parent / "golden"
RENDERINGS: dict[str, Callable[[SavedPlan], str]] = {
    "txt": render.text,
    "md": render_markdown.render,
    "summary.md": render_markdown.render_summary,
    "json": render.json_text,
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
    check_golden(f"{scenario}.{kind}", RENDERINGS[kind](SCENARIOS[scenario]()))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renderings_are_deterministic(scenario: str) -> None:
    first, second = SCENARIOS[scenario](), SCENARIOS[scenario]()
    for fn in RENDERINGS.values():
        assert fn(first) == fn(second)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_json_is_valid_against_the_plan_schema(scenario: str) -> None:
    doc = document(SCENARIOS[scenario]())
    jsonschema.validate(doc, schemas.load("plan"), cls=jsonschema.Draft202012Validator)
    assert doc["format_version"] == 1


def test_markdown_layout_for_review() -> None:
    saved = SCENARIOS["rotation"]()
    plan = saved.plan
    md = render_markdown.render(saved)
    lines = md.splitlines()
    assert lines[0] == "## trustplan plan for `demo`"
    assert lines[2].startswith("**Verdict: changes the Talos API and Kubernetes API CA on 5 of 5 nodes; revokes 2 CAs")
    assert lines[4] == render.summary_line(plan) == (
        "Plan: 2 authorities to create, 30 CA changes (10 accept, 10 swap, 10 remove) in 15 config writes, "
        "6 verification gates."
    )
    assert lines[6].startswith("Plan file: not saved")
    warning, new_cas, tables = md.index("> [!WARNING]"), md.index("### New authorities"), md.index("what changes where")
    assert warning < new_cas < tables < md.index("<details>")
    assert md.count("<details>") == md.count("</details>") == 3  # one per phase; no list is long enough to fold
    for a in plan.new_authorities:
        assert a.fingerprint in md
    assert md.count("```diff") == 6 and md.count("```") == 14  # per phase: control planes, workers; the diagram
    assert md.count("```mermaid") == 1
    assert "machine.ca.key: (sensitive)" in md and "cluster.ca.key: (sensitive)" in md
    assert "PRIVATE KEY" not in md


def test_a_swap_is_shown_as_a_move() -> None:
    saved = SCENARIOS["rotation"]()
    plan = saved.plan
    md = render_markdown.render(saved)
    old, new = short(plan, "talos-old"), short(plan, "talos-new")
    assert f"- machine.ca.crt: {old}  # moves to machine.acceptedCAs\n" in md
    assert f"+ machine.ca.crt: talos-new {new}  # moves here from machine.acceptedCAs\n" in md
    assert f"+ machine.acceptedCAs: {old}  # moves here from machine.ca.crt\n" in md
    assert "acceptedCAs[" not in md  # never an edit by position


def short(plan: Plan, name: str) -> str:
    from render_scenarios import fp

    return fp(name)[: len("sha256:") + 12]


def _rows(md: str) -> int:
    return sum(1 for line in md.splitlines() if line.startswith("| "))


VIEW_SHA = "5" * 64
VIEW_SIGNER = "sha256:" + "a" * 64


@pytest.mark.parametrize("nodes", sorted(SIZES))
@pytest.mark.parametrize("flavor", render_markdown.FLAVORS)
def test_markdown_at_any_size_matches_golden(nodes: int, flavor: render_markdown.Flavor) -> None:
    saved = SIZES[nodes]()
    view = render_markdown.View(flavor, "plan.bin", VIEW_SHA, VIEW_SIGNER if nodes == 53 else None)
    parts = render_markdown.render_parts(saved, view=view)
    check_golden(f"size-{nodes}.{flavor}.md", f"\n{render_markdown.PART_DELIMITER}\n\n".join(parts))
    assert all(len(p) < render_markdown.GITHUB_COMMENT_LIMIT for p in parts)
    text = "".join(parts)
    assert f"SHA-256 `{VIEW_SHA}`" in text
    assert (f"signed by Ed25519 key `{VIEW_SIGNER}`" if nodes == 53 else ", unsigned.") in text
    workers = nodes - 3
    assert f"{workers} workers" in text  # one row and one diff per group, whatever the size
    assert _rows(text) == _rows(render_markdown.render(SIZES[5](), view))  # as many rows at 503 nodes as at 5
    if flavor == "plain":
        assert "<details>" not in text and "[!" not in text and "> **Warning**" in text
    else:
        alert = "> [!WARNING]" if flavor == "github" else "> [!warning]"
        assert alert in text
        if workers > render_markdown.FOLD_OVER:
            assert f"<details><summary>{workers} workers</summary>" in text


def test_503_nodes_fit_one_comment_and_parts_describe_themselves() -> None:
    saved = SIZES[503]()
    view = render_markdown.View("github", "plan.bin", VIEW_SHA, None)
    (whole,) = render_markdown.render_parts(saved, view=view)
    assert len(whole) < 20_000
    parts = render_markdown.render_parts(saved, limit=2_500, view=view)  # force parts
    n = len(parts)
    assert n > 2 and all(len(p) <= 2_500 for p in parts)
    for i, part in enumerate(parts, start=1):
        assert f"trustplan plan for `demo` (plan SHA-256 `{VIEW_SHA[:16]}…`), part {i}/{n}" in part
        assert part.count("<details>") == part.count("</details>") and part.count("```") % 2 == 0


def test_resume_warnings_name_expiry_and_skipped_nodes() -> None:
    md = render_markdown.render(SCENARIOS["resume"]())
    block = md[md.index("> [!WARNING]") : md.index("### Talos API CA: what changes where")]
    assert "stops being trusted on every node" in block and "talosconfig" in block
    assert "talos-legacy" in block and "expires in 60 days" in block
    assert "1 node skipped" in block and "10.5.0.2" in block

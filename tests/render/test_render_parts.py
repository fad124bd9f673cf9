"""A plan too long for one GitHub comment renders as numbered parts, each below the limit and each
valid Markdown on its own (tables and <details> blocks closed and reopened at part boundaries)."""

from __future__ import annotations

import re

from render_scenarios import rotation

from trustplan.render import markdown as render_markdown
from trustplan.render import text as render
from trustplan.render.markdown import GITHUB_COMMENT_LIMIT, PART_LIMIT, render_parts


def test_500_nodes_split_under_a_small_limit_stay_valid_markdown() -> None:
    saved = rotation(n_cp=3, n_w=497)
    plan = saved.plan
    parts = render_parts(saved, limit=3_000)
    n = len(parts)
    assert n > 1 and all(len(p) <= 3_000 < PART_LIMIT < GITHUB_COMMENT_LIMIT for p in parts)
    assert parts[0].splitlines()[0] == "## trustplan plan for `demo`"
    for i, part in enumerate(parts, start=1):
        assert re.search(rf"\bpart {i}/{n}\b", part), f"part {i} does not say which part it is"
        assert part.count("<details>") == part.count("</details>")
        assert part.count("```") % 2 == 0
        for line in part.splitlines():  # no table row lost its header
            if line.startswith("| 3 control planes") or line.startswith("| <details>"):
                assert "| nodes | issuing before |" in part
    text = "".join(parts)
    assert text.count("497 workers") >= 2 + 3  # both tables, every phase
    for a in plan.new_authorities:
        assert a.fingerprint in parts[0]


def test_small_plan_is_one_part_without_part_markers() -> None:
    saved = rotation()
    parts = render_parts(saved)
    assert parts == [render_markdown.render(saved)]
    assert "part 1/" not in parts[0]


def test_summary_of_500_nodes_is_short() -> None:
    saved = rotation(n_cp=3, n_w=497)
    plan = saved.plan
    (summary,) = render_parts(saved, summary=True)
    assert len(summary) < 10_000
    assert render.summary_line(plan) in summary.splitlines()
    assert "<details><summary>497 workers</summary>" in summary
    for a in plan.new_authorities:
        assert a.fingerprint in summary


def test_split_respects_a_small_limit() -> None:
    parts = render_markdown.split(render_markdown.chunks(rotation()), limit=3_000, heading="x ")
    assert len(parts) > 2
    assert all(len(p) <= 3_000 for p in parts)
    assert all(p.count("<details>") == p.count("</details>") for p in parts)

"""A plan too long for one GitHub comment renders as numbered parts, each below the limit and each
valid Markdown on its own (tables and <details> blocks closed and reopened at part boundaries)."""

from __future__ import annotations

import re

from render_scenarios import rotation

from trustplan import render, render_markdown
from trustplan.render_markdown import GITHUB_COMMENT_LIMIT, PART_LIMIT, render_parts


def test_500_nodes_render_in_parts_below_the_limit() -> None:
    plan, doc = rotation(n_cp=3, n_w=497)
    whole = render.markdown(plan, doc)
    assert len(whole) > PART_LIMIT
    parts = render_parts(plan, doc)
    n = len(parts)
    assert n > 1
    assert all(len(p) <= PART_LIMIT < GITHUB_COMMENT_LIMIT for p in parts)
    assert parts[0].splitlines()[0] == render.summary_line(plan)
    for i, part in enumerate(parts, start=1):
        assert re.search(rf"\bpart {i}/{n}\b", part), f"part {i} does not say which part it is"
        assert part.count("<details>") == part.count("</details>")
        assert part.count("```") % 2 == 0
        for line in part.splitlines():  # no table row lost its header
            if line.startswith("| 10.5."):
                assert "| node | role |" in part
    text = "".join(parts)
    for n_ in plan.nodes:
        assert f"@@ {n_.address} (" in text, f"{n_.address} missing from the diffs"
        assert f"| {n_.address} | {n_.role} |" in text
    for a in plan.new_authorities:
        assert a.fingerprint in parts[0]


def test_small_plan_is_one_part_without_part_markers() -> None:
    plan, doc = rotation()
    parts = render_parts(plan, doc)
    assert parts == [render.markdown(plan, doc)]
    assert "part 1/" not in parts[0]


def test_summary_of_500_nodes_is_short() -> None:
    plan, doc = rotation(n_cp=3, n_w=497)
    (summary,) = render_parts(plan, doc, summary=True)
    assert len(summary) < 10_000
    assert summary.splitlines()[0] == render.summary_line(plan)
    assert "(497 nodes)" in summary
    for a in plan.new_authorities:
        assert a.fingerprint in summary


def test_split_respects_a_small_limit() -> None:
    plan, doc = rotation()
    parts = render_markdown.split(render_markdown.chunks(plan, doc), limit=3_000, heading="x ")
    assert len(parts) > 2
    assert all(len(p) <= 3_000 for p in parts)
    assert all(p.count("<details>") == p.count("</details>") for p in parts)

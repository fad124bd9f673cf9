"""The PR comment a reviewer approves in seconds, at 5, 53 and 503 nodes (the size goldens): rendered
by a real Markdown renderer (markdown-it-py, CommonMark + tables), it holds the restart, rollout,
rollback and revoked-CA lines and exactly one mermaid block, and that block is a well-formed flowchart.

The flowchart check is structural (the subset of mermaid's flowchart grammar trustplan writes: a
direction, node shapes with quoted labels, `-->` and `-. text .->` edges between defined nodes).
The mermaid CLI needs a headless browser and `@mermaid-js/parser` has no flowchart grammar yet, so
neither is used; the checker is tested against broken diagrams below so it cannot pass everything."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt
from render_scenarios import SIZES

from trustplan.render import markdown as render_markdown

DIRECTION = re.compile(r"flowchart (LR|RL|TB|TD|BT)")
LABEL = r'"[^"\n]+"'
NODE = re.compile(rf"(?P<id>[A-Za-z][A-Za-z0-9_]*)(?:\[{LABEL}\]|\[/{LABEL}/\]|\{{\{{{LABEL}\}}\}}|\(\[{LABEL}\]\))")
EDGE = re.compile(r"(?P<a>[A-Za-z][A-Za-z0-9_]*) (?:-->|-\. [^.\n]+ \.->) (?P<b>[A-Za-z][A-Za-z0-9_]*)")


def flowchart_problems(source: str) -> list[str]:
    """What is wrong with a flowchart in the subset trustplan writes ([] when well formed)."""
    lines = [line.strip() for line in source.strip().splitlines()]
    if not lines or not DIRECTION.fullmatch(lines[0]):
        return [f"first line is not a flowchart direction: {lines[:1]}"]
    defined: set[str] = set()
    edges: list[tuple[str, str]] = []
    problems = []
    for line in lines[1:]:
        if m := NODE.fullmatch(line):
            if m["id"] in defined:
                problems.append(f"node {m['id']} defined twice")
            defined.add(m["id"])
        elif m := EDGE.fullmatch(line):
            edges.append((m["a"], m["b"]))
        else:
            problems.append(f"not a node or an edge: {line!r}")
    problems += [f"edge to an undefined node: {a} -> {b}" for a, b in edges if not {a, b} <= defined]
    return problems


def mermaid_blocks(markdown: str) -> list[str]:
    md = MarkdownIt("commonmark").enable("table")
    return [t.content for t in md.parse(markdown) if t.type == "fence" and t.info.strip() == "mermaid"]


@pytest.mark.parametrize("nodes", sorted(SIZES))
def test_the_comment_renders_with_one_well_formed_mermaid_flowchart(nodes: int) -> None:
    saved = SIZES[nodes]()
    parts = render_markdown.render_parts(saved, view=render_markdown.View("github", "plan.bin", "5" * 64, None))
    text = "\n".join(parts)
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<table>" in html and "<h3>What restarts, and for how long</h3>" in html
    (diagram,) = mermaid_blocks(text)
    assert flowchart_problems(diagram) == []
    assert [f"p{i}" for i in range(1, 5)] == re.findall(r"^  (p\d)\[", diagram, re.M)


def test_the_503_node_comment_says_what_restarts_rolls_out_rolls_back_and_is_revoked() -> None:
    text = render_markdown.render(SIZES[503]())
    assert "every kube-apiserver (3 control planes) and every kubelet (503 nodes) restarts, 3 times" in text
    assert "then a canary of 5 workers (and the phase's gates on it), then the other workers, 50 at a time" in text
    assert "| 1 accept | 3 | 11 | 16 |" in text and "Expected duration: about 2 s" in text
    assert "**Phases 1 accept, 2 swap (before any credential is written): automatic rollback.**" in text
    assert "**From phase 3 outputs on: no rollback.**" in text
    assert "Talos API CA `sha256:123a7a95562e` (subject O=talos, valid until 2028-09-07) stops being trusted" in text
    assert "Kubernetes API CA `sha256:400c6a01ea25` (subject O=kubernetes, valid until 2028-09-07)" in text
    assert "(model check): the configs of all 503 nodes accept" in text  # the files provider contacts no node
    assert "reaches all" not in text


def test_phases_have_one_numbering_in_text_markdown_and_json() -> None:
    from render_scenarios import document

    from trustplan.render import text as render_text

    saved = SIZES[5]()
    names = [p["name"] for p in document(saved)["phases"]]
    assert names == ["accept", "swap", "outputs", "remove"]
    md, txt = render_markdown.render(saved), render_text.text(saved)
    for i, name in enumerate(names, start=1):
        assert f"Phase {i}: {name}" in txt
        assert f"{i} {name}" in md
    assert "Phase 4: remove: remove the CAs" in md
    assert "4. remove: remove the CAs" in render_markdown.render_summary(saved)


@pytest.mark.parametrize(
    "broken",
    [
        'flowchart LR\n  p1["accept"]\n  p1 --> p2',  # an edge to a node never defined
        'flowchart LR\n  p1["a "quoted" label"]',  # a quote inside a label ends it early
        'graph sideways\n  p1["accept"]',  # no direction
        'flowchart LR\n  p1["accept"\n  p2["swap"]',  # an unclosed shape
    ],
)
def test_the_flowchart_check_rejects_broken_diagrams(broken: str) -> None:
    assert flowchart_problems(broken) != []

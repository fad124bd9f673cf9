"""Draw docs/pr-comment.png: the pull-request comment of a 5-node rotation (the golden
tests/render/golden/size-5.github.md, as `trustplan plan --format markdown` writes it), roughly as
GitHub shows it: headings, the warning alert, bullets, tables, and the mermaid diagram drawn as boxes.

    .venv/bin/python scripts/pr_comment_image.py [--check]

The PNG carries the SHA-256 of the Markdown it was drawn from (text chunk `Source-SHA256`);
`--check` exits 1 when the golden changed since (tests/render/test_comment_image.py runs it).
Only the first screen is drawn: everything above "### Talos API CA: what changes where".
"""

from __future__ import annotations

import hashlib
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "render" / "golden" / "size-5.github.md"
IMAGE = ROOT / "docs" / "pr-comment.png"
STOP = "### Talos API CA: what changes where"
WIDTH = 150  # characters per line of body text


def source_text() -> str:
    return SOURCE.read_text().split(STOP, 1)[0]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(text: str) -> str:
    return re.sub(r"\*\*|`", "", text).replace("<br/>", " ")


def _flowchart(block: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str, bool]]]:
    nodes: list[tuple[str, str]] = []
    edges: list[tuple[str, str, bool]] = []
    for line in block:
        if m := re.fullmatch(r'\s*(\w+)\W*"([^"]+)"\W*', line):
            label = "\n".join(textwrap.fill(part, 22) for part in m.group(2).replace(": ", ":<br/>").split("<br/>"))
            nodes.append((m.group(1), label))
        elif m := re.fullmatch(r"\s*(\w+) (-->|-\. .* \.->) (\w+)", line):
            edges.append((m.group(1), m.group(3), m.group(2) != "-->"))
    return nodes, edges


def draw(text: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    items: list[tuple[str, str]] = []  # (style, text)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```mermaid"):
            j = lines.index("```", i + 1)
            items.append(("mermaid", "\n".join(lines[i + 2 : j])))
            i = j + 1
            continue
        if line.startswith("## "):
            items.append(("h2", _plain(line[3:])))
        elif line.startswith("### "):
            items.append(("h3", _plain(line[4:])))
        elif line.startswith("> [!"):
            items.append(("alert", "Warning"))
        elif line.startswith("> - "):
            items += [("quote", w) for w in textwrap.wrap("• " + _plain(line[4:]), WIDTH - 4)]
        elif line.startswith("|---"):
            pass
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            items.append(("table", "  ".join(f"{_plain(c):<19}"[:24] for c in cells)))
        elif line.startswith("- "):
            items += [("bullet", w) for w in textwrap.wrap("• " + _plain(line[2:]), WIDTH)]
        elif line.strip():
            items += [("text", w) for w in textwrap.wrap(_plain(line), WIDTH)]
        else:
            items.append(("gap", ""))
        i += 1

    heights = {"h2": 0.42, "h3": 0.34, "alert": 0.26, "quote": 0.2, "table": 0.19, "bullet": 0.2, "text": 0.2,
               "gap": 0.08, "mermaid": 1.9}
    total = sum(heights[s] for s, _ in items) + 0.4
    fig = plt.figure(figsize=(11, total), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, total)
    ax.axis("off")
    y = total - 0.25
    for style, body in items:
        h = heights[style]
        if style == "h2":
            ax.text(0.25, y - 0.25, body, fontsize=15, weight="bold", va="center")
        elif style == "h3":
            ax.text(0.25, y - 0.2, body, fontsize=12.5, weight="bold", va="center")
        elif style == "alert":
            ax.add_patch(plt.Rectangle((0.25, y - h), 0.04, h, color="#d29922"))
            ax.text(0.4, y - h / 2, "⚠ Warning", fontsize=10, weight="bold", color="#9a6700", va="center")
        elif style == "quote":
            ax.add_patch(plt.Rectangle((0.25, y - h), 0.04, h, color="#d29922"))
            ax.text(0.4, y - h / 2, body, fontsize=8.6, va="center")
        elif style == "table":
            ax.text(0.3, y - h / 2, body, fontsize=8, family="monospace", va="center")
        elif style in ("bullet", "text"):
            ax.text(0.25, y - h / 2, body, fontsize=8.8, va="center")
        elif style == "mermaid":
            nodes, edges = _flowchart(body.splitlines())
            main = [n for n in nodes if n[0] != "rb"]
            step = 10.4 / max(1, len(main))
            where = {}
            for k, (node_id, label) in enumerate(main):
                x = 0.3 + k * step
                where[node_id] = (x + step * 0.42, y - 0.55)
                gate = node_id.startswith("g")
                ax.add_patch(FancyBboxPatch((x, y - 1.05), step * 0.84, 1.0, boxstyle="round,pad=0.02",
                                            fc="#ddf4ff" if gate else "#f6f8fa", ec="#57606a"))
                ax.text(x + step * 0.42, y - 0.55, label, fontsize=6.6, ha="center", va="center")
            if any(n[0] == "rb" for n in nodes):
                where["rb"] = (3.0, y - 1.6)
                ax.add_patch(FancyBboxPatch((1.6, y - 1.75), 2.8, 0.3, boxstyle="round,pad=0.02", fc="#fff8c5",
                                            ec="#9a6700"))
                ax.text(3.0, y - 1.6, "automatic rollback to the CAs of before", fontsize=7, ha="center",
                        va="center")
            for a, b, dashed in edges:
                if a in where and b in where:
                    (xa, ya), (xb, yb) = where[a], where[b]
                    if not dashed:
                        xa, xb = xa + step * 0.42, xb - step * 0.42
                    ax.annotate("", (xb, yb + (0.15 if dashed else 0)), (xa, ya - (0.5 if dashed else 0)),
                                arrowprops={"arrowstyle": "->", "ls": "--" if dashed else "-", "color": "#57606a"})
        y -= h
    fig.savefig(out, metadata={"Software": None, "Source-SHA256": digest(text)})
    plt.close(fig)


def stored_digest(path: Path) -> str | None:
    from PIL import Image

    with Image.open(path) as image:
        value = image.info.get("Source-SHA256")
    return str(value) if value else None


def main(argv: list[str]) -> int:
    text = source_text()
    if "--check" in argv:
        if not IMAGE.exists() or stored_digest(IMAGE) != digest(text):
            print(f"{IMAGE} is out of date: run .venv/bin/python scripts/pr_comment_image.py", file=sys.stderr)
            return 1
        return 0
    draw(text, IMAGE)
    print(f"wrote {IMAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

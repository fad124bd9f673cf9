"""Long Markdown split into comment-sized parts (GitHub stops a comment at 65,536 characters).

A rendering is a list of Chunks, pieces that are never cut. `join` writes them as one text; `split`
packs them into parts of at most PART_LIMIT characters. A part never cuts a table row or a group's
diff; a table or `<details>` block cut by a part boundary is closed at the end of the part and
reopened, marked "(continued)", at the start of the next. Every part says its number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Split when the whole rendering is longer than this; every part stays at or below it.
PART_LIMIT = 60_000
#: GitHub's hard limit for one comment, for reference (a part is always well below it).
GITHUB_COMMENT_LIMIT = 65_536
#: Printed between parts on stdout; an HTML comment, so it is invisible if pasted into Markdown.
PART_DELIMITER = "<!-- trustplan: next part -->"


@dataclass(frozen=True)
class Chunk:
    """A piece of the rendering that is never split. Chunks with the same `context` share one
    opening (`open`, e.g. a table header or `<details>` + code fence) and one `close`."""

    text: str
    context: str = ""
    open: str = ""
    reopen: str = ""
    close: str = ""


def join(items: Iterable[Chunk]) -> str:
    text, context, close = "", "", ""
    for c in items:
        if c.context != context:
            text += close + c.open
            context, close = c.context, c.close
        text += c.text
    return text + close


def _hard_split(c: Chunk, budget: int) -> Iterator[Chunk]:
    """A chunk larger than a part (never expected) is cut at line boundaries."""
    piece = ""
    for line in c.text.splitlines(keepends=True):
        if piece and len(piece) + len(line) > budget:
            yield Chunk(piece, c.context, c.open, c.reopen, c.close)
            piece = ""
        piece += line[:budget]
    if piece:
        yield Chunk(piece, c.context, c.open, c.reopen, c.close)


def split(items: list[Chunk], limit: int = PART_LIMIT, heading: str = "") -> list[str]:
    """Pack chunks into parts of at most `limit` characters, each saying "part i/n"."""
    budget = limit - len(f"**{heading}part 999/999 (continued)**\n\n*; continued in the next comment*\n")
    bodies: list[str] = []
    body, context, close = "", "", ""
    pieces = (p for big in items for p in (_hard_split(big, budget // 2) if len(big.text) > budget // 2 else (big,)))
    for c in pieces:
        switching = c.context != context
        cost = (len(close) + len(c.open) + len(c.close) if switching else len(close)) + len(c.text)
        if body and len(body) + cost > budget:
            bodies.append(body + close)
            body = (c.open if switching else c.reopen) if c.context else ""
            context, close = c.context, c.close
            body += c.text
            continue
        if switching:
            body += close + c.open
            context, close = c.context, c.close
        body += c.text
    bodies.append(body + close)
    n = len(bodies)
    if n == 1:
        return bodies
    parts = []
    for i, b in enumerate(bodies, start=1):
        if i == 1:
            first, _, rest = b.partition("\n")  # the heading stays the first line
            parts.append(f"{first}\n\n*{heading}part 1/{n}; continued in the next comment*\n{rest}")
        else:
            parts.append(f"**{heading}part {i}/{n} (continued)**\n\n{b}")
    return parts

"""docs/architecture.md matches the code: its rules table is the one tests/test_layers.py enforces,
every file or folder it names exists, and every function or class it names is defined."""

from __future__ import annotations

import re

import pytest
from test_layers import ALLOWED, LEAVES, ROOT

DOC = ROOT / "docs" / "architecture.md"
#: where a short path in the page (`engine/access.py`) may live
BASES = (ROOT, ROOT / "trustplan")


def rules_table(text: str) -> dict[str, frozenset[str]]:
    """Package -> what it may import, from the `| Package | Folder | What it is | May import |` table."""
    section = text.split("## Packages and their rules", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Package")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        allowed = cells[3]
        table[cells[0]] = frozenset() if allowed == "nothing" else frozenset(a.strip() for a in allowed.split(","))
    return table


def named_paths(text: str) -> list[str]:
    return [c for c in re.findall(r"`([^`\s]+)`", text) if "/" in c and not c.startswith("-")]


def named_identifiers(text: str) -> list[str]:
    return sorted({c for c in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text)})


def _defined(name: str, sources: str) -> bool:
    return re.search(rf"^\s*(async def|def|class) {name}\b|^\s*{name}(: [^=]+)? = ", sources, re.M) is not None


TEXT = DOC.read_text(encoding="utf-8")
FILES = [
    p for folder in ("trustplan", "planner", "providers", "state", "schemas", "sim")
    for p in (ROOT / folder).rglob("*.py") if "proto" not in p.parts
]
SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in FILES)
#: modules and packages, which the page names by their last part (`certgen`, `trustplan`)
MODULES = {p.stem for p in FILES} | {p.parent.name for p in FILES}


def test_the_rules_table_is_the_enforced_one() -> None:
    expected = {layer: allowed for layer, allowed in ALLOWED.items() if layer not in LEAVES}
    assert rules_table(TEXT) == expected


@pytest.mark.parametrize("path", named_paths(TEXT))
def test_every_named_file_exists(path: str) -> None:
    assert any((base / path).exists() for base in BASES), f"docs/architecture.md names {path}, which does not exist"


def test_every_named_function_or_class_is_defined() -> None:
    words = {"nothing", "now", "trustplan_sim"}  # plain words in backticks (and import names), not code
    missing = [n for n in named_identifiers(TEXT) if n not in words | MODULES and not _defined(n, SOURCES)]
    assert missing == [], f"docs/architecture.md names what the code does not define: {missing}"


def test_the_checks_can_fail() -> None:
    doc = "## Packages and their rules\n| Package | F | W | May import |\n|---|\n| render | r | x | errors, engine |\n"
    assert rules_table(doc) == {"render": frozenset({"errors", "engine"})}
    assert rules_table(doc) != {k: v for k, v in ALLOWED.items() if k == "render"}
    assert named_paths("see `engine/gone.py` and `-o`") == ["engine/gone.py"]
    assert not _defined("no_such_function", SOURCES)
    assert _defined("make_plan", SOURCES)
    assert "gone" not in MODULES and "certgen" in MODULES

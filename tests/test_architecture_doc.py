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


# --- the I/O rule: user files are read through trustplan/system (safeio, safeyaml) ----------------------
#: (file, function) -> why that function may read a file by itself. An entry that no longer matches
#: anything fails the test, so the list only shrinks.
DIRECT_READS_ALLOWED: dict[tuple[str, str], str] = {
    ("state/local.py", "write"): "the previous state, copied to <state>.backup: trustplan's own file, which "
    "`read` has already read through safeio",
    ("state/local.py", "_holder"): "the holder record trustplan writes into its own lock file; anything "
    "unreadable is reported as 'another process'",
    ("trustplan/cli/sim.py", "_read_pid"): "sim.json, the pid file `trustplan sim up` writes for `sim down`",
    ("schemas/__init__.py", "load"): "the JSON Schemas shipped inside the package (importlib.resources)",
    ("providers/talos/proto/generate.py", "generate"): "`make proto`: a development script reading the "
    "repository's own .proto files",
}
READERS = {"read_text", "read_bytes"}
YAML_LOADS = {"load", "safe_load", "load_all", "safe_load_all", "full_load", "unsafe_load"}


def direct_reads(source: str) -> list[tuple[str, str]]:
    """(function, call) for each read of a file that bypasses trustplan/system: Path.read_text() or
    .read_bytes() (not a module's function of that name), yaml.load and friends, json.load, open()."""
    import ast

    tree = ast.parse(source)
    modules = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
               for a in n.names}
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Call):
                f = child.func
                on = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
                attr = f.attr if isinstance(f, ast.Attribute) else None
                if (
                    attr in READERS and on not in modules  # Path.read_text(), not planfile.read_bytes(path)
                    or on == "yaml" and attr in YAML_LOADS
                    or on in {"json", "io"} and attr in {"load", "open"}
                    or isinstance(f, ast.Name) and f.id == "open"
                ):
                    found.append((name, ast.unparse(child)))
            visit(child, name)

    visit(tree, "<module>")
    return found


def _package_reads() -> dict[tuple[str, str], list[str]]:
    reads: dict[tuple[str, str], list[str]] = {}
    for path in FILES + [ROOT / "providers" / "talos" / "proto" / "generate.py"]:
        rel = str(path.relative_to(ROOT))
        if rel.startswith("trustplan/system/"):
            continue
        for func, call in direct_reads(path.read_text(encoding="utf-8")):
            reads.setdefault((rel, func), []).append(call)
    return reads


def test_user_files_are_read_only_through_system() -> None:
    reads = _package_reads()
    offences = {f"{file}: {func}: {calls}" for (file, func), calls in reads.items()
                if (file, func) not in DIRECT_READS_ALLOWED}
    assert offences == set(), "read it with trustplan.system.safeio.read_regular (and safeyaml.load)"
    stale = set(DIRECT_READS_ALLOWED) - set(reads)
    assert stale == set(), f"allowed direct reads that no longer happen: remove them from the list: {stale}"


def test_the_io_check_can_fail() -> None:
    source = (
        "import yaml\nfrom trustplan.formats import planfile\n"
        "def load(path):\n    return yaml.load(path.read_text(), Loader=X)\n"
        "def ok(path):\n    return planfile.read_bytes(path), safeyaml.load(text)\n"
        "async def raw(p):\n    with open(p) as f:\n        return json.load(f)\n"
    )
    assert direct_reads(source) == [
        ("load", "yaml.load(path.read_text(), Loader=X)"), ("load", "path.read_text()"),
        ("raw", "open(p)"), ("raw", "json.load(f)"),
    ]

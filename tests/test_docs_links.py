"""The documentation points at things that exist (issue 21, item 5).

For README.md, CONTRIBUTING.md and every docs/*.md (pages written by anyone, now or later):
- every relative link goes to a file or folder of the checkout, and a `#anchor` to a heading of
  the page it names (GitHub's heading slugs);
- every path of the repository named in backticks exists (`scripts/demo.sh`, `tests/x.py::test_y`
  with its test function, `engine/runner.py` short for trustplan/engine/runner.py);
- every `make TARGET` in code is a target of the Makefile;
- every `trustplan COMMAND` in code is a command of the CLI (and `trustplan GROUP COMMAND` of a group).

Only links, paths, targets and commands: never style. `test_the_checker_finds_each_kind_of_break`
shows each check failing on a small broken page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
#: where a command starts: the start of a span or line, a prompt, or after a shell separator
COMMAND_START = r"(?:^|[$;|&(]\s*|&&\s*|\|\|\s*)(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
MAKE = re.compile(COMMAND_START + r"make(?:[ \t]+-\S+)*[ \t]+([a-z][\w-]*)", re.M)
TRUSTPLAN = re.compile(COMMAND_START + r"trustplan[ \t]+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?", re.M)


@dataclass(frozen=True)
class Repo:
    """What the pages are checked against: the checkout, its make targets, the CLI's commands."""

    root: Path
    make_targets: frozenset[str]
    commands: dict[str, frozenset[str] | None]  # command -> sub-commands of a group, None for a command

    @property
    def top_folders(self) -> frozenset[str]:
        return frozenset(p.name for p in self.root.iterdir() if p.is_dir() and p.name not in {".git", ".venv"})

    @property
    def package_folders(self) -> frozenset[str]:
        """trustplan's sub-packages, which pages name without the prefix (`engine/runner.py`)."""
        pkg = self.root / "trustplan"
        return frozenset(p.name for p in pkg.iterdir() if p.is_dir()) if pkg.is_dir() else frozenset()


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found | set(HTML_ANCHOR.findall(text))


def code_spans(text: str) -> list[str]:
    """Inline code outside fenced blocks, and the lines of fenced blocks."""
    prose = FENCE.sub("", text)
    fenced = [line for block in FENCE.finditer(text) for line in block.group(0).splitlines()[1:-1]]
    return [m.group(2) for m in INLINE.finditer(prose)] + fenced


def inline_spans(text: str) -> list[str]:
    return [m.group(2) for m in INLINE.finditer(FENCE.sub("", text))]


def check_links(page: Path, text: str, repo: Repo) -> list[str]:
    problems = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: {path_part} does not exist")
            continue
        if repo.root.resolve() not in (dest, *dest.parents):
            problems.append(f"{target}: outside the repository")
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(repo.root.resolve())}")
    return problems


def repo_path(word: str, repo: Repo) -> tuple[Path, str] | None:
    """The file a word of code names, and the test function after `::`, if it names one of ours."""
    word = word.lstrip("(['\"").rstrip(")],;:.'\"")
    path, _, func = word.partition("::")
    path = path.partition("#")[0]  # `docs/x.md#section`: the file is what must exist
    if "/" not in path or "://" in path or "..." in path or path.startswith(("/", "~", "-")):
        return None
    first = path.split("/", 1)[0]
    if first in repo.top_folders:
        return repo.root / path, func
    if first in repo.package_folders and (path.endswith((".py", "/"))):
        return repo.root / "trustplan" / path, func
    return None


def check_paths(text: str, repo: Repo) -> list[str]:
    problems = []
    for span in inline_spans(text):
        for word in span.split():
            named = repo_path(word, repo)
            if named is None:
                continue
            path, func = named
            matches = list(path.parent.glob(path.name)) if "*" in path.name else [path] if path.exists() else []
            if not matches:
                problems.append(f"`{word}`: {path.relative_to(repo.root)} does not exist")
            elif func and not re.search(rf"^\s*(async )?def {re.escape(func.split('[')[0])}\(",
                                        matches[0].read_text(encoding="utf-8"), re.M):
                problems.append(f"`{word}`: {path.relative_to(repo.root)} has no test {func}")
    return problems


def check_commands(text: str, repo: Repo) -> list[str]:
    problems = []
    for span in code_spans(text):
        for target in MAKE.findall(span):
            if target not in repo.make_targets:
                problems.append(f"`make {target}`: no such target in the Makefile")
        for command, sub in TRUSTPLAN.findall(span):
            if command not in repo.commands:
                problems.append(f"`trustplan {command}`: no such command")
            else:
                group = repo.commands[command]
                if group is not None and sub and sub not in group:
                    problems.append(f"`trustplan {command} {sub}`: no such command")
    return problems


def check_page(page: Path, repo: Repo) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return check_links(page, text, repo) + check_paths(text, repo) + check_commands(text, repo)


def makefile_targets(makefile: Path) -> frozenset[str]:
    text = makefile.read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", text, re.M))
    names = {name for group in targets for name in group.split()}
    return frozenset(n for n in names if not n.startswith("."))


def cli_commands() -> dict[str, frozenset[str] | None]:
    import typer

    from trustplan.cli.app import app

    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    return {
        name: frozenset(cmd.commands) if hasattr(cmd, "commands") else None
        for name, cmd in commands.items()
    }


def pages(root: Path) -> list[Path]:
    return [p for p in (root / "README.md", root / "CONTRIBUTING.md") if p.exists()] + sorted(
        (root / "docs").glob("*.md")
    )


REPO = Repo(ROOT, makefile_targets(ROOT / "Makefile"), cli_commands())


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_path_target_and_command_exists(page: Path) -> None:
    assert check_page(page, REPO) == []


def test_the_pages_are_the_split_readme() -> None:
    names = {str(p.relative_to(ROOT)) for p in pages(ROOT)}
    assert {"README.md", "CONTRIBUTING.md", "docs/walkthroughs.md", "docs/performance.md"} <= names
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 300


def test_the_checker_finds_each_kind_of_break(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "demo.sh").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_here():\n    pass\n")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Plan file, and `review`?\n")
    page = tmp_path / "README.md"
    good = (
        "# Top\n[g](docs/guide.md#plan-file-and-review) [self](#top) [web](https://example.com)\n"
        "`scripts/demo.sh` and `tests/test_x.py::test_here`, `docs/guide.md#x`, `make test`, `trustplan plan -o x`, "
        "`trustplan sim up`, `talos/x.go` (not ours), `nodes/cp-1.yaml` (a user's file)\n"
        "```console\n$ make demo && trustplan apply plan.bin\n# a comment: make no target of this\n```\n"
    )
    repo = Repo(tmp_path, frozenset({"test", "demo"}), {"plan": None, "apply": None, "sim": frozenset({"up"})})
    page.write_text(good)
    assert check_page(page, repo) == []
    broken = {
        "[g](docs/gone.md)": "docs/gone.md does not exist",
        "[g](docs/guide.md#plan)": "no heading #plan in docs/guide.md",
        "[s](#nowhere)": "no heading #nowhere in README.md",
        "`scripts/gone.sh`": "scripts/gone.sh does not exist",
        "`tests/test_x.py::test_gone`": "has no test test_gone",
        "`make tset`": "`make tset`: no such target",
        "```\n$ make bench\n```": "`make bench`: no such target",
        "`trustplan aply plan.bin`": "`trustplan aply`: no such command",
        "`trustplan sim down`": "`trustplan sim down`: no such command",
    }
    for snippet, problem in broken.items():
        page.write_text(good + "\n" + snippet + "\n")
        found = check_page(page, repo)
        assert len(found) == 1 and problem in found[0], (snippet, found)


def test_github_slugs() -> None:
    assert github_slug("Why not `talosctl rotate-ca`?") == "why-not-talosctl-rotate-ca"
    assert github_slug("The race: `talosctl rotate-ca` vs `trustplan plan` + `apply`") == (
        "the-race-talosctl-rotate-ca-vs-trustplan-plan--apply"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}

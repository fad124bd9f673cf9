"""The README's Install section works as written, in a fresh home directory (issue 14, item 2).

The commands between `<!-- install: begin -->` and `<!-- install: end -->` run in one bash, with a
new HOME, a PATH without ~/.local/bin, and a copy of this checkout named `trustplan` (its tracked
and new files: what a clone has). pip reaches PyPI for the dependencies. The installed command then
validates the bundled example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def install_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- install: begin -->\n```console\n(.*?)```\n<!-- install: end -->", text, re.S)
    assert block, "README.md has no install block"
    return [line[2:] for line in block.group(1).splitlines() if line.startswith("$ ")]


def checkout_copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.timeout(600)
def test_readme_install_section_works_in_a_fresh_shell(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work, home = tmp_path / "work", tmp_path / "home"
    home.mkdir()
    checkout_copy(work / "trustplan")
    commands = install_commands()
    assert any("pip install" in c for c in commands) and any(c.startswith("trustplan --version") for c in commands)
    path = ":".join(p for p in os.environ["PATH"].split(":") if ".venv" not in p and ".local/bin" not in p)
    env = {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", "SHELL": "/bin/bash"}
    for var in ("PYENV_ROOT", "PYENV_VERSION", "PIP_INDEX_URL", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        if var in os.environ:
            env[var] = os.environ[var]
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^trustplan \d+\.\d+\.\d+$", result.stdout, re.M)
    installed = home / ".local" / "bin" / "trustplan"
    assert installed.is_symlink()
    example = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "files", example)
    check = subprocess.run(
        ["bash", "-c", 'export PATH="$HOME/.local/bin:$PATH"; trustplan validate'],
        cwd=example, env=env, capture_output=True, text=True,
    )
    assert check.returncode == 0, check.stderr
    assert "trustplan.yaml: valid" in check.stdout + check.stderr

"""docs/pr-comment.png (the PR comment picture docs/gitops.md shows) is drawn from the current 5-node
golden comment: the script's --check compares the SHA-256 stored in the PNG with the golden's text,
and fails when the comment changed and the picture was not drawn again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pr_comment_image.py"


def test_the_picture_is_drawn_from_the_current_comment() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "](pr-comment.png)" in (ROOT / "docs" / "gitops.md").read_text()


def test_the_check_fails_when_the_comment_changed(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for part in ("scripts/pr_comment_image.py", "docs/pr-comment.png", "tests/render/golden/size-5.github.md"):
        (copy / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, copy / part)
    golden = copy / "tests/render/golden/size-5.github.md"
    golden.write_text(golden.read_text().replace("What restarts", "What reboots"))
    result = subprocess.run([sys.executable, str(copy / "scripts/pr_comment_image.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "out of date" in result.stderr
    drawn = subprocess.run([sys.executable, str(copy / "scripts/pr_comment_image.py")], capture_output=True,
                           text=True, check=False)
    assert drawn.returncode == 0, drawn.stderr
    again = subprocess.run([sys.executable, str(copy / "scripts/pr_comment_image.py"), "--check"],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0

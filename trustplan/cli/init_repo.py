"""A repository `trustplan init` leaves safe to `git add -A`: a .gitignore for what must never be
committed, and a refusal while a plaintext CA key is already tracked by git.

    ensure_gitignore(base, keystore_plain, outputs)   add trustplan's block to <base>/.gitignore
    tracked_plaintext_keys(keystore)                   plaintext keystore keys git tracks (or [])
    refuse_tracked_keys(keystore, config)              TrustplanError naming them and the fix

What is ignored: the plaintext keystore's keys (`<keystore>/*.key`; an age keystore's `*.key.age`
files are meant to be committed), the lock files (`<keystore>/index.lock`, `*.state.json.lock`),
the client credentials apply writes (talosconfig, kubeconfig: each holds a private key), Talos's
secrets.yaml (every CA key of the cluster, in plaintext), their `.backup` copies, and saved plan
files. The state file itself holds public data only and may be committed. Lines already in the
.gitignore are not repeated; nothing else in it changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from trustplan.errors import TrustplanError
from trustplan.system.atomic import write_atomic
from trustplan.system.safeio import read_regular

MARKER = "# trustplan: never commit these (written by `trustplan init`)"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def gitignore_lines(base: Path, keystore: Path, keystore_plain: bool, outputs: list[Path]) -> list[str]:
    ks = _rel(keystore, base)
    lines = []
    if keystore_plain:
        lines.append(f"/{ks}/*.key")  # plaintext CA keys: keep them out of git (age keys: *.key.age)
    lines += [f"/{ks}/index.lock", "*.state.json.lock", "*.backup", "plan.bin", "*.plan.bin"]
    lines += [f"/{_rel(p, base)}" for p in outputs]
    return lines


def ensure_gitignore(base: Path, keystore: Path, keystore_plain: bool, outputs: list[Path]) -> list[str]:
    """Append the lines `base/.gitignore` lacks (creating it); returns the lines added."""
    path = base / ".gitignore"
    existing = read_regular(path, what=".gitignore").decode(errors="replace") if path.exists() else ""
    have = {line.strip() for line in existing.splitlines()}
    missing = [line for line in gitignore_lines(base, keystore, keystore_plain, outputs) if line not in have]
    if not missing:
        return []
    text = existing + ("\n" if existing and not existing.endswith("\n") else "")
    text += ("\n" if existing else "") + MARKER + "\n" + "\n".join(missing) + "\n"
    write_atomic(path, text.encode(), mode=0o644)
    return missing


def tracked_plaintext_keys(keystore: Path) -> list[str]:
    """Plaintext keys (`*.key`) under `keystore` that git tracks (added or committed); [] outside a
    git work tree or without git."""
    git = shutil.which("git")
    if git is None or not keystore.parent.exists():
        return []
    where = keystore if keystore.is_dir() else keystore.parent
    if not where.is_dir():  # a keystore path under a file: refused later, with its own message
        return []
    proc = subprocess.run([git, "ls-files", "-z", "--", "."], cwd=where, capture_output=True, check=False)
    if proc.returncode != 0:  # not a git work tree
        return []
    names = [n for n in proc.stdout.decode(errors="replace").split("\0") if n]
    inside = [n for n in names if where == keystore or n.startswith(keystore.name + "/")]
    return sorted(n for n in inside if n.endswith(".key"))


def refuse_tracked_keys(keystore: Path, config: str) -> None:
    tracked = tracked_plaintext_keys(keystore)
    if not tracked:
        return
    shown = ", ".join(tracked[:3]) + (f" and {len(tracked) - 3} more" if len(tracked) > 3 else "")
    raise TrustplanError(
        f"{keystore}: git tracks {len(tracked)} plaintext CA key file(s) ({shown}); "
        "anyone who can read the repository can impersonate the cluster's CA",
        hint=f"encrypt the keystore with age (keystore: {{age: {{recipients: [...]}}}} in {config}, then "
        f"`trustplan keystore rekey`), or stop tracking them: `git rm --cached {keystore}/*.key` and "
        "remove them from history; nothing was written",
    )

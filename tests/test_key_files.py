"""Keys never leak: after a files-provider rotation run with umask 000, no file holding a private key
is readable by group or others, every folder trustplan created is 0700, and no credential file is
left in the temp folder. Credential files of killed runs are removed by the next run."""

from __future__ import annotations

import base64
import binascii
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import copy_example

_B64 = re.compile(rb"[A-Za-z0-9+/=]{40,}")


def holds_private_key(data: bytes) -> bool:
    """PEM private keys, as they are or base64-encoded (Talos configs, talosconfig, kubeconfig)."""
    if b"PRIVATE KEY" in data:
        return True
    for token in _B64.findall(data):
        try:
            if b"PRIVATE KEY" in base64.b64decode(token + b"=" * (-len(token) % 4)):
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def _run(cwd: Path, tmpdir: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        ["sh", "-c", f"umask 000 && {script}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_a_rotation_at_umask_000_leaves_no_readable_key_and_no_temp_file(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "cluster")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    tp = f"{sys.executable} -m trustplan"
    # (-o needs an existing folder: a missing one is refused, issue 24; --split-dir makes its own)
    result = _run(root, tmpdir, f"{tp} plan -o plan.bin --format markdown --split-dir out/parts "
                                f"&& {tp} apply plan.bin && {tp} status")
    assert result.returncode == 0, result.stderr
    assert "holds CA private keys; apply writes it with mode 0600 (it is 0644 now)" in result.stderr

    keyfiles = []
    for path in sorted(root.rglob("*")):
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            if path.name in (".trustplan", "keys", "out", "parts"):  # made by trustplan
                assert mode == 0o700, f"{path}: {mode:04o}"
        elif holds_private_key(path.read_bytes()):
            keyfiles.append(path.relative_to(root).as_posix())
            assert mode & 0o077 == 0, f"{path} holds a private key and is {mode:04o}"
    # the control planes' configs, the keystore's two keys, secrets.yaml and both client configs
    assert {"nodes/cp-1.yaml", "secrets.yaml", "talosconfig", "kubeconfig"} <= set(keyfiles)
    assert sum(1 for k in keyfiles if k.startswith(".trustplan/keys/")) == 2
    assert not any(holds_private_key(p.read_bytes()) for p in root.glob("out/**/*") if p.is_file())
    assert list(tmpdir.iterdir()) == []


def test_the_next_run_removes_credential_files_of_killed_runs(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "cluster")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    old = time.time() - 2 * 3600
    leftovers = [
        tmpdir / "trustplan-kube-abcd1234",  # an earlier version's kubernetes client folder
        tmpdir / "trustplan-x1y2z3_4.pem",  # an earlier version's TLS credential file
        tmpdir / f"trustplan-cred-{dead_pid}-abcd1234",  # a killed run's fallback folder
    ]
    leftovers[0].mkdir()
    (leftovers[0] / "client-key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    leftovers[1].write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    leftovers[2].mkdir()
    for p in leftovers[:2]:
        os.utime(p, (old, old))
    kept = [
        tmpdir / "trustplan-kube-fresh123",  # young: may belong to a run in progress
        tmpdir / f"trustplan-cred-{os.getpid()}-abcd1234",  # a live process's
        tmpdir / "trustplan-sim",  # not a name trustplan gives credential files
    ]
    for p in kept:
        p.mkdir()
    os.utime(kept[2], (old, old))
    result = _run(root, tmpdir, f"{sys.executable} -m trustplan validate")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmpdir.iterdir()) == sorted(p.name for p in kept)


def test_the_demo_version_check_leaves_no_key_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import importlib.util

    from conftest import REPO

    root = copy_example(tmp_path / "cluster")
    assert _run(root, tmp_path, f"{sys.executable} -m trustplan plan -o plan.bin && "
                                f"{sys.executable} -m trustplan apply plan.bin").returncode == 0
    spec = importlib.util.spec_from_file_location("version_check", REPO / "scripts" / "version_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))
    module.context_for(root / "talosconfig")
    assert list(tmpdir.iterdir()) == []

"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

Missing folders are created 0700 (trustplan.system.safeio.ensure_dir); any OS error becomes one
FilesystemError naming the path, and the temp file is removed on every exit path; one that a killed
process left behind (it may hold a key) is removed by the next write of the same file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from pathlib import Path

from trustplan.errors import FilesystemError
from trustplan.system.safeio import describe, ensure_dir


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    if path.is_dir():
        raise FilesystemError(f"{path}: is a directory; cannot write a file there", hint="give a file path")
    ensure_dir(path.parent)
    _remove_stale_temps(path)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise FilesystemError(f"{path}: cannot write: {describe(exc)}",
                              hint="check that the folder exists and is writable") from None
    except BaseException:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def backup_path(path: Path) -> Path:
    """Where replace_with_backup keeps the file it replaced: `<name>.backup`."""
    return path.with_name(path.name + ".backup")


def replace_with_backup(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically; first keep the current file, if different, as its backup
    (0600: the files written this way hold private keys)."""
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and old != data:
        write_atomic(backup_path(path), old, mode=0o600)
    write_atomic(path, data, mode=mode)


#: A temp file older than this is a leftover of a killed write, not one in progress.
STALE_TEMP_SECONDS = 600.0


def _remove_stale_temps(path: Path) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            st = tmp.lstat()
            if st.st_uid == os.getuid() and now - st.st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()

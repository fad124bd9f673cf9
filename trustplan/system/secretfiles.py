"""Client credentials that libraries insist on reading from a path, without leaving them on disk.

    SecretFile(data, name)   bytes readable at `.path` until close(): an anonymous in-memory file
                             (memfd, /proc/self/fd/N) on Linux, so nothing reaches the disk and
                             nothing outlives the process, even after SIGKILL; elsewhere a 0600
                             file in a 0700 folder named after our pid, removed on close
    remove_leftovers()       remove credential files and folders that earlier, killed trustplan
                             runs left in the temp folder (ours by name and owner; their process
                             is gone, or they are older than an hour)

Python's ssl and the kubernetes client only load certificates and keys from files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from trustplan.system import processes

#: Names trustplan (this version and earlier ones) gives to credential files in the temp folder.
#: (tempfile's random part is 8 characters of [a-z0-9_]).
_LEFTOVER = re.compile(
    r"^trustplan-(?:kube-[a-z0-9_]{8}|[a-z0-9_]{8}\.pem|(?:cred|kube)-(?P<pid>\d+)-[a-z0-9_]{8})$"
)
_STALE_AFTER = 3600.0


class SecretFile:
    """Bytes readable by path until close() (a context manager)."""

    def __init__(self, data: bytes, name: str = "credential") -> None:
        self._fd: int | None = None
        self._dir: str | None = None
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            fd = os.memfd_create(f"trustplan-{name}", os.MFD_CLOEXEC)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self.path = f"/proc/self/fd/{fd}"
        else:  # pragma: no cover - not Linux
            self._dir = tempfile.mkdtemp(prefix=f"trustplan-cred-{os.getpid()}-")  # 0700
            path = os.path.join(self._dir, f"{name}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.path = path

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> SecretFile:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()



def remove_leftovers(folder: str | None = None, now: float | None = None) -> list[str]:
    """Remove credential files and folders of killed trustplan runs; returns what was removed."""
    folder = folder or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != uid:
            continue
        pid = match.group("pid")
        gone = (pid is not None and int(pid) != os.getpid() and not processes.alive(int(pid))) or (
            pid is None and now - st.st_mtime > _STALE_AFTER
        )
        if not gone:
            continue
        path = os.path.join(folder, entry.name)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
    return removed

"""The local state backend: a JSON file, an advisory lock beside it, atomic writes, one backup.

The lock is `flock` on `<state>.lock`; the holder writes who it is (pid, host, user, operation, since)
into that file so that a second apply can say who holds it. The lock file exists only while it is
held: its holder removes it before letting go (a waiter that opened the removed file sees that it is
no longer the lock and opens it again), so a command leaves no lock file behind.

A state file that is a symbolic link is written through to its target (a state shared between
working copies stays one file), and the lock and the backup sit beside the target.

A write that fails (a full disk) saves the update to a rescue file beside the state, or in the
temporary folder when that fails too, and says where: the record of what apply did is never lost.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trustplan.state.backend import Holder, holder_text
from trustplan.state.document import StateDocument, empty_state, encode, load

from trustplan.errors import FilesystemError, InputError, StateError
from trustplan.system.atomic import write_atomic
from trustplan.system.safeio import describe, ensure_dir, read_regular

#: how often a waiting lock() tries the lock again
LOCK_POLL = 0.1


class LocalState:
    """The state file `path`. `clock` and `sleep` (time.monotonic, time.sleep) time a lock wait;
    tests pass their own to wait for nothing."""

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.path = path
        self._clock = clock
        self._sleep = sleep

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def target(self) -> Path:
        """The file the state is written to: `path`, or where it links to (followed to the end)."""
        if self.path.is_symlink():
            return Path(os.path.realpath(self.path))
        return self.path

    @property
    def lock_path(self) -> Path:
        target = self.target
        return target.with_name(target.name + ".lock")

    @property
    def backup_path(self) -> Path:
        target = self.target
        return target.with_name(target.name + ".backup")

    def read(self, cluster: str) -> StateDocument:
        """The current state, or an empty one (serial 0, no lineage) if there is no file yet."""
        if not self.path.exists() and not self.path.is_symlink():
            return empty_state(cluster)
        try:
            data = read_regular(self.path, what="state file")
        except InputError as exc:
            if self.path.is_symlink() and not self.path.exists():  # a link to a state not written yet
                return empty_state(cluster)
            raise StateError(str(exc), hint="the state file must be a regular file") from None
        doc = load(data, str(self.path))
        if doc.cluster != cluster:
            raise StateError(f"{self.path}: this state belongs to cluster {doc.cluster!r}, not {cluster!r}")
        return doc

    def write(self, doc: StateDocument) -> None:
        """Write atomically, keeping the previous serial as `<state>.backup`; when that fails, save
        the update to a rescue file and raise StateError saying where it is."""
        target = self.target
        try:
            if target.exists():
                try:
                    previous = target.read_bytes()
                except OSError as exc:
                    raise StateError(f"{self.path}: cannot read state to back it up: {describe(exc)}") from None
                write_atomic(self.backup_path, previous)
            write_atomic(target, encode(doc))
        except FilesystemError as exc:
            raise StateError(
                f"{self.path}: the state was not written: {str(exc).removeprefix(f'{target}: ')}"
                f"{self._rescue(doc)}",
                hint="free some space (or fix the folder), then `trustplan state migrate --from RESCUE` "
                "stores the rescued update as the state",
            ) from None

    def _rescue(self, doc: StateDocument) -> str:
        """Save `doc` beside the state, else in the temporary folder; say where (or that it failed)."""
        name = f"trustplan.state.rescue.{doc.serial}.json"
        data = encode(doc)
        failures = []
        for folder in (self.target.parent, Path(tempfile.gettempdir())):
            rescue = folder / name
            try:
                write_atomic(rescue, data, mode=0o644)
            except FilesystemError as exc:
                failures.append(f"{rescue}: {str(exc).removeprefix(f'{rescue}: ')}")
                continue
            return f"; this update (serial {doc.serial}) was saved to {rescue}"
        return f"; saving this update failed too ({'; '.join(failures)})"

    @contextmanager
    def lock(self, timeout: float, operation: str, plan_digest: str | None = None) -> Iterator[Holder]:
        """Hold the state lock; wait up to `timeout` seconds, then fail naming the holder."""
        lock_path = self.lock_path
        created = _missing_dirs(lock_path.parent)
        ensure_dir(lock_path.parent)
        deadline = self._clock() + timeout
        fd = -1
        try:
            fd = self._take(lock_path, deadline)
            holder = Holder.me(operation, plan_digest)
            with contextlib.suppress(OSError):  # who holds it is a courtesy: a full disk must not stop the lock
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder.to_dict()).encode(), 0)
            yield holder
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)  # while still holding it: a waiter on this file opens it again
                os.close(fd)
            for d in created:  # the folders made for the lock, if nothing else was put there
                with contextlib.suppress(OSError):
                    d.rmdir()

    def _take(self, lock_path: Path, deadline: float) -> int:
        """Open and flock the lock file; again when the file flocked is no longer the lock file."""
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise StateError(f"{lock_path}: cannot create the state lock: {describe(exc)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if self._clock() >= deadline:
                    raise StateError(
                        f"{self.path}: state is locked by {self._holder(lock_path)}",
                        hint="wait for it to finish, or pass --lock-timeout 5m to wait",
                    ) from None
                self._sleep(LOCK_POLL)
                continue
            if _same_file(fd, lock_path):
                return fd
            os.close(fd)  # its holder removed it as we opened it: the lock is the file there now

    def force_unlock(self, lock_id: str) -> Holder:
        """The operating system releases a flock when its holder exits: there is nothing to force."""
        raise StateError(
            f"{self.path}: the local state lock is released by the operating system when its holder exits; "
            f"there is no lock {lock_id} to force",
            hint="force-unlock is for remote backends (state: {backend: kubernetes})",
        )

    def _holder(self, lock_path: Path) -> str:
        try:
            info = json.loads(lock_path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return holder_text(Holder.from_dict(info))


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise StateError(f"{path}: cannot read the state lock: {describe(exc)}") from None
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _missing_dirs(folder: Path) -> list[Path]:
    """The folders that do not exist yet on the way to `folder`, deepest first."""
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink() and p.parent != p:
        missing.append(p)
        p = p.parent
    return missing

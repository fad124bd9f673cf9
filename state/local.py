"""The local state backend: a JSON file, an advisory lock beside it, atomic writes, one backup.

The lock is `flock` on `<state>.lock`; the holder writes who it is (pid, host, user, operation, since)
into that file so that a second apply can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trustplan.state.backend import Holder
from trustplan.state.document import StateDocument, dump, empty_state, parse

from trustplan.errors import InputError, StateError
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
        self.lock_path = path.with_name(path.name + ".lock")
        self.backup_path = path.with_name(path.name + ".backup")

    @property
    def where(self) -> str:
        return str(self.path)

    def read(self, cluster: str) -> StateDocument:
        """The current state, or an empty one (serial 0, no lineage) if there is no file yet."""
        if not self.path.exists() and not self.path.is_symlink():
            return empty_state(cluster)
        try:
            data = read_regular(self.path, what="state file")
        except InputError as exc:
            raise StateError(str(exc), hint="the state file must be a regular file") from None
        doc = parse(data, str(self.path))
        if doc["cluster"] != cluster:
            raise StateError(f"{self.path}: this state belongs to cluster {doc['cluster']!r}, not {cluster!r}")
        return doc

    def write(self, doc: StateDocument) -> None:
        """Write atomically, keeping the previous serial as `<state>.backup`."""
        if self.path.exists():
            try:
                previous = self.path.read_bytes()
            except OSError as exc:
                raise StateError(f"{self.path}: cannot read state to back it up: {describe(exc)}") from None
            write_atomic(self.backup_path, previous)
        write_atomic(self.path, dump(doc))

    @contextmanager
    def lock(self, timeout: float, operation: str, plan_digest: str | None = None) -> Iterator[Holder]:
        """Hold the state lock; wait up to `timeout` seconds, then fail naming the holder."""
        ensure_dir(self.path.parent)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"{self.lock_path}: cannot create the state lock: {describe(exc)}") from None
        deadline = self._clock() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._clock() >= deadline:
                        raise StateError(
                            f"{self.path}: state is locked by {self._holder()}",
                            hint="wait for it to finish, or pass --lock-timeout 5m to wait",
                        ) from None
                    self._sleep(LOCK_POLL)
            holder = Holder.me(operation, plan_digest)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder.to_dict()).encode(), 0)
            yield holder
        finally:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    def force_unlock(self, lock_id: str) -> Holder:
        """The operating system releases a flock when its holder exits: there is nothing to force."""
        raise StateError(
            f"{self.path}: the local state lock is released by the operating system when its holder exits; "
            f"there is no lock {lock_id} to force",
            hint="force-unlock is for remote backends (state: {backend: kubernetes})",
        )

    def _holder(self) -> str:
        try:
            info = json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return Holder.from_dict(info).describe()

"""The local state backend: a JSON file, an advisory lock beside it, atomic writes, one backup.

The lock is `flock` on `<state>.lock`; the holder writes who it is (pid, host, user, operation, since)
into that file so that a second apply can say who holds it.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trustplan.state.document import StateDocument, dump, empty_state, parse

from trustplan.atomic import write_atomic
from trustplan.errors import InputError, StateError
from trustplan.safeio import describe, ensure_dir, read_regular


class LocalState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.backup_path = path.with_name(path.name + ".backup")

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
    def lock(self, timeout: float, operation: str) -> Iterator[None]:
        """Hold the state lock; wait up to `timeout` seconds, then fail naming the holder."""
        ensure_dir(self.path.parent)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"{self.lock_path}: cannot create the state lock: {describe(exc)}") from None
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"{self.path}: state is locked by {self._holder()}",
                            hint="wait for it to finish, or pass --lock-timeout 5m to wait",
                        ) from None
                    time.sleep(0.1)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "user": _user(),
                "operation": operation,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    def _holder(self) -> str:
        try:
            info = json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return (
            f"{info.get('user', '?')}@{info.get('host', '?')} (pid {info.get('pid', '?')}, "
            f"{info.get('operation', '?')} since {info.get('since', '?')})"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

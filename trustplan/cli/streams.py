"""Output that cannot kill a command: stdout and stderr wrapped so that a write that fails (EPIPE from
`trustplan apply | head -3`, EIO from a closed terminal, ENOSPC on a redirect to a full disk, a
stderr closed with `2>&-`) loses the output, never the command. An apply goes on to its end and
records what it did in the state, which is the record that matters.

    with surviving_streams():
        ...   sys.stdout / sys.stderr are Survivors; the first failure sends the rest to /dev/null

The file descriptor of a failed stream is pointed at /dev/null (Python's advice for SIGPIPE), so
the interpreter's last flush at exit fails no more than the writes did.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import IO, Any


class Survivor(io.TextIOBase):
    """A text stream that forwards to `inner` until a write or flush fails, and then drops output.
    `lost` says why it stopped forwarding (None while it works)."""

    def __init__(self, inner: IO[str] | None, name: str) -> None:
        super().__init__()
        self.inner = inner
        self.stream_name = name
        self.lost: str | None = None if inner is not None else "closed when the command started"

    def write(self, text: str) -> int:
        if self.lost is None and self.inner is not None:
            try:
                self.inner.write(text)
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if self.lost is None and self.inner is not None:
            try:
                self.inner.flush()
            except (OSError, ValueError) as exc:
                self._lose(exc)

    def _lose(self, exc: BaseException) -> None:
        self.lost = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc) or type(exc).__name__
        inner = self.inner
        with contextlib.suppress(Exception):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, inner.fileno())  # type: ignore[union-attr]
            finally:
                os.close(null)

    def isatty(self) -> bool:
        try:
            return self.lost is None and self.inner is not None and self.inner.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self.inner is None:
            raise io.UnsupportedOperation("no file descriptor: the stream was closed")
        return self.inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _open_standard_fds() -> None:
    """A descriptor 0, 1 or 2 closed at start (`2>&-`) gets /dev/null, so no file trustplan opens
    later (a state lock, a key) can become its stdout or stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                opened = os.open(os.devnull, os.O_RDWR)
                if opened != fd:
                    os.dup2(opened, fd)
                    os.close(opened)


@contextlib.contextmanager
def surviving_streams() -> Iterator[tuple[Survivor, Survivor]]:
    """sys.stdout and sys.stderr as Survivors inside; the streams of before restored after."""
    _open_standard_fds()
    old_out, old_err = sys.stdout, sys.stderr
    out = old_out if isinstance(old_out, Survivor) else Survivor(old_out, "stdout")
    err = old_err if isinstance(old_err, Survivor) else Survivor(old_err, "stderr")
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = old_out, old_err

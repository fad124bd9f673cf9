"""Stopping an apply cleanly on SIGINT, SIGTERM (how CI cancels a job) or SIGHUP (a closed terminal).

The first signal asks the apply to stop: node writes already sent are finished (a node is never left
not knowing whether its config was applied), no new write, gate or kubelet wait starts, the state
records what was done, and the CLI prints a summary and the command that finishes the job. A
second signal exits at once. SIGKILL cannot be caught; after it the next plan reads every live
config and finishes from there.

    stop = Stop()
    with stop.on_signals(note):
        ...  stop.check() before starting work;  await stop.race(coro) around long waits
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from trustplan.errors import ApplyInterrupted

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop:
    """A stop request, set by a signal (or a test)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop request"

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def error(self) -> ApplyInterrupted:
        code = 128 + self.signum if self.signum is not None else 130
        return ApplyInterrupted(f"interrupted by {self.name}", signal_name=self.name, exit_code=code)

    def check(self) -> None:
        """Raise ApplyInterrupted if a stop was requested."""
        if self.requested:
            raise self.error()

    async def race(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` unless a stop is requested first; then cancel it and raise ApplyInterrupted."""
        self.check()
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - it was cancelled: its own failure no longer matters
            pass
        raise self.error()

    @contextmanager
    def on_signals(self, note: Callable[[str], None]) -> Iterator[None]:
        """Handle SIGINT, SIGTERM and SIGHUP while inside (main thread only; elsewhere do nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()

        def handle(signum: int) -> None:
            if self.requested:
                os._exit(128 + signum)  # the second signal: exit now
            self.request(signum)
            note(
                f"received {signal.Signals(signum).name}: finishing the node writes in flight, then recording "
                "the state (send it again to exit at once)"
            )

        installed = []
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, handle, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - not on this platform
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

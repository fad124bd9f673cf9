"""What the commands share: consoles, option types, loading the desired state, progress."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trustplan import desired as desired_mod
from trustplan.desired import DesiredState

out = Console(highlight=False, soft_wrap=True)  # data: stdout
err = Console(stderr=True, highlight=False, soft_wrap=True)  # humans: stderr

T = TypeVar("T")
log = logging.getLogger("trustplan")


class Format(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Desired-state file.", show_default=True),
]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
LockTimeout = Annotated[
    str, typer.Option("--lock-timeout", help="How long to wait for the state lock (e.g. 0s, 30s, 5m).")
]


def load_desired(path: Path) -> DesiredState:
    return desired_mod.load(path)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def seconds(text: str) -> float:
    from trustplan.planfile import parse_duration

    if text.strip() in ("0", "0s"):
        return 0.0
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def print_data(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


_HEARTBEATS: set[threading.Event] = set()


def stop_heartbeats() -> None:
    """End every heartbeat still running (a command that failed mid-step)."""
    for event in list(_HEARTBEATS):
        event.set()
    _HEARTBEATS.clear()


class ConsoleReporter:
    """Progress on stderr: bars in a terminal; in a log (CI), one line per step with its duration and
    a heartbeat line every `heartbeat` seconds while a step is still running."""

    def __init__(self, heartbeat: float = 10.0) -> None:
        self.live = err.is_terminal
        self.heartbeat = heartbeat
        self.progress: Progress | None = None
        self.task: Any = None
        self.title = ""
        self.total = 0
        self.completed = 0
        self.started = 0.0
        self._stop: threading.Event | None = None

    def start(self, title: str, total: int) -> None:
        self.done()  # a step left open ends here
        self.title, self.total, self.completed, self.started = title, total, 0, time.monotonic()
        log.info("%s: started (%d)", title, total)
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(title, total=total)
        else:
            self._stop = threading.Event()
            _HEARTBEATS.add(self._stop)
            threading.Thread(target=self._beat, args=(self._stop, title), daemon=True).start()

    def _beat(self, stop: threading.Event, title: str) -> None:
        while not stop.wait(self.heartbeat):
            elapsed = time.monotonic() - self.started
            err.print(f"{title}: still running after {elapsed:.0f}s ({self.completed}/{self.total} done)", markup=False)

    def advance(self, detail: str = "") -> None:
        self.completed += 1
        if detail:
            log.debug("%s: %s done (%d/%d)", self.title, detail, self.completed, self.total)
        if self.progress is not None:
            self.progress.advance(self.task)

    def done(self) -> None:
        if not self.title:
            return
        elapsed = time.monotonic() - self.started
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self._stop is not None:
            self._stop.set()
            _HEARTBEATS.discard(self._stop)
            self._stop = None
            err.print(f"{self.title}: finished ({self.completed}/{self.total}) in {elapsed:.1f}s", markup=False)
        log.info("%s: finished in %.1fs", self.title, elapsed)
        self.title = ""

    def note(self, message: str) -> None:
        log.info("%s", message)
        err.print(message, markup=False)

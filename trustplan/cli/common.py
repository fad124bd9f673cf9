"""What the commands share: consoles, option types, loading the desired state, progress.

This module and every command module import only what `--help` needs (typer, the stdlib): the heavy
libraries (rich, cryptography, jsonschema, kubernetes, grpclib, the simulator) are imported by the
command that runs, so `trustplan --version` and `--help` start at once (tests/test_startup.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Coroutine
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from trustplan.formats.desired import DesiredState


class LazyConsole:
    """A rich Console made on first use (importing rich costs ~50 ms, which `--version` never needs).
    Attributes set before then (no_color) are passed to the Console when it is made."""

    def __init__(self, **options: Any) -> None:
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    @property
    def console(self) -> Console:
        made: Console | None = object.__getattribute__(self, "_console")
        if made is None:
            from rich.console import Console

            made = Console(**object.__getattribute__(self, "_options"))
            object.__setattr__(self, "_console", made)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)

    def __setattr__(self, name: str, value: Any) -> None:
        console = object.__getattribute__(self, "_console")
        if console is None:
            object.__getattribute__(self, "_options")[name] = value
        else:
            setattr(console, name, value)


def real_console(console: Console) -> Console:
    """The rich Console itself, for rich objects that take one (Progress, RichHandler)."""
    return console.console if isinstance(console, LazyConsole) else console


out: Console = LazyConsole(highlight=False, soft_wrap=True)  # type: ignore[assignment]  # data: stdout
err: Console = LazyConsole(stderr=True, highlight=False, soft_wrap=True)  # type: ignore[assignment]  # humans

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
    from trustplan.formats import desired

    return desired.load(path)


def run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coro)


def seconds(text: str) -> float:
    from trustplan.cli.durations import parse_duration

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
    """Progress on stderr. In a terminal, a bar per step with done / in flight / failed and the elapsed
    time. In a log (CI), a line per node as it finishes with how long it took, a heartbeat line every
    `heartbeat` seconds while a step is still running, and a line when the step ends."""

    def __init__(self, heartbeat: float = 10.0) -> None:
        self.live = err.is_terminal
        self.heartbeat = heartbeat
        self.progress: Progress | None = None
        self.task: Any = None
        self.title = ""
        self.total = 0
        self.completed = 0
        self.failed = 0
        self.started = 0.0
        self.running: dict[str, float] = {}  # node -> when its step started
        self._stop: threading.Event | None = None

    def start(self, title: str, total: int) -> None:
        self.done()  # a step left open ends here
        self.title, self.total, self.completed, self.failed = title, total, 0, 0
        self.started = time.monotonic()
        self.running = {}
        log.info("%s: started (%d)", title, total)
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[flight]} in flight, {task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=real_console(err),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(title, total=total, flight=0, failed=0)
        else:
            self._stop = threading.Event()
            _HEARTBEATS.add(self._stop)
            threading.Thread(target=self._beat, args=(self._stop, title), daemon=True).start()

    def _beat(self, stop: threading.Event, title: str) -> None:
        while not stop.wait(self.heartbeat):
            elapsed = time.monotonic() - self.started
            _line(f"{title}: still running after {elapsed:.0f}s ({self._counts()})")

    def _counts(self) -> str:
        return f"{self.completed}/{self.total} done, {len(self.running)} in flight, {self.failed} failed"

    def _update(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.completed, flight=len(self.running), failed=self.failed)

    def begin(self, detail: str) -> None:
        self.running[detail] = time.monotonic()
        self._update()

    def advance(self, detail: str = "") -> None:
        self.completed += 1
        began = self.running.pop(detail, None)
        if detail:
            log.debug("%s: %s done (%d/%d)", self.title, detail, self.completed, self.total)
            if began is not None and self.progress is None:
                _line(f"{self.title}: {detail} ok in {time.monotonic() - began:.2f}s ({self.completed}/{self.total})")
        self._update()

    def fail(self, detail: str) -> None:
        self.failed += 1
        began = self.running.pop(detail, None)
        if began is not None and self.progress is None:
            _line(f"{self.title}: {detail} FAILED after {time.monotonic() - began:.2f}s")
        self._update()

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
            failed = f", {self.failed} failed" if self.failed else ""
            _line(f"{self.title}: finished ({self.completed}/{self.total}{failed}) in {elapsed:.1f}s")
        log.info("%s: finished in %.1fs", self.title, elapsed)
        self.title = ""

    def note(self, message: str) -> None:
        log.info("%s", message)
        err.print(message, markup=False)


def _line(text: str) -> None:
    """One progress line in a log (plain write: hundreds of nodes make hundreds of lines)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()

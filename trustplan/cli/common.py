"""What the commands share: consoles, option types, loading the desired state, progress."""

from __future__ import annotations

import asyncio
import sys
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


class ConsoleReporter:
    """Progress bars on stderr when it is a terminal, one line per step otherwise."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None
        self.title = ""

    def start(self, title: str, total: int) -> None:
        self.title = title
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

    def advance(self, detail: str = "") -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def done(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        else:
            err.print(f"{self.title}: done")

    def note(self, message: str) -> None:
        err.print(message)

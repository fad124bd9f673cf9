"""Colour and logging: styled in a terminal, plain in a pipe or a CI log.

Colour follows the terminal: none when the output is piped, none with `--no-color` or a non-empty
NO_COLOR (https://no-color.org), on every console (data, messages, progress bars, logs).
Logging is the stdlib's (`trustplan.*` loggers): rich's handler in a terminal, one timestamped line
per record otherwise; warnings only by default, `-v` info (retries, waits, gate attempts, step
timings), `-vv` or `--log-level debug` everything.
"""

from __future__ import annotations

import logging
import os

from rich.logging import RichHandler
from rich.text import Text

from trustplan.cli.common import err, out

#: the style of a plan line, by its leading symbol (+ accept, ~ swap, - remove, ? gate, ! warning)
LINE_STYLES = {"+": "green", "~": "yellow", "-": "red", "?": "cyan", "!": "bold yellow", ">": "blue"}
HEADINGS = {"Warnings:": "bold yellow", "Outputs:": "bold", "New authorities": "bold"}
LEVELS = ("debug", "info", "warning", "error")
HANDLER_NAME = "trustplan-cli"


class _Console(logging.Handler):
    """One plain line per record on stderr (the current sys.stderr, so tests can capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure(no_color: bool = False, verbose: int = 0, log_level: str | None = None) -> None:
    """Set colour and logging for this run of the command."""
    plain = no_color or bool(os.environ.get("NO_COLOR"))
    for console in (out, err):
        console.no_color = plain
    level = log_level.upper() if log_level else ("WARNING", "INFO", "DEBUG")[min(verbose, 2)]
    logger = logging.getLogger("trustplan")
    for old in [h for h in logger.handlers if h.get_name() == HANDLER_NAME]:
        logger.removeHandler(old)
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(HANDLER_NAME)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def styled(text: str) -> Text:
    """A rendered plan with its +/~/- lines, gates and warnings coloured (the text is unchanged)."""
    result = Text()
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        style = ""
        if line.startswith("  ") and stripped[:1] in LINE_STYLES and stripped[1:2] == " ":
            style = LINE_STYLES[stripped[0]]
        elif line.startswith(("Phase ", "Plan: ", "Apply complete")):
            style = "bold"
        else:
            style = next((s for h, s in HEADINGS.items() if line.startswith(h)), "")
        result.append(line, style=style)
    return result


def print_text(text: str) -> None:
    """Print a text rendering on stdout: coloured in a terminal, byte for byte as rendered otherwise."""
    if out.is_terminal:
        out.print(styled(text), end="", soft_wrap=True)
    else:
        out.file.write(text)
        out.file.flush()

"""Habits users bring from Terraform and kubectl, caught before click misreads them.

click reads `plan -out=plan.bin` as `-o ut=plan.bin` and `plan -o json` as "save the plan to a file
named json"; both would exit 0 having done something else than asked. These checks refuse them with
the spelling trustplan understands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:  # newer typer vendors click as typer._click
    from typer._click.exceptions import BadParameter, UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import BadParameter, UsageError  # type: ignore[no-redef]

#: words that name an output format (kubectl's `-o json`), and the --format value each means
FORMAT_WORDS = {"json": "json", "markdown": "markdown", "md": "markdown", "text": "text", "txt": "text"}
_SINGLE_DASH_LONG = re.compile(r"-([A-Za-z][A-Za-z0-9-]+)(?:=(.*))?")


def _command(root: Any, args: list[str]) -> tuple[Any, int]:
    """The (click) sub-command `args` invoke and the index just after its name."""
    cmd, index = root, 0
    while getattr(cmd, "commands", None) is not None and index < len(args):
        arg = args[index]
        if arg.startswith("-"):
            index += 1
            continue
        sub = cmd.commands.get(arg)
        if sub is None:
            break
        cmd, index = sub, index + 1
    return cmd, index


def check_args(root: Any, args: list[str]) -> None:
    """Refuse a single-dash long option (`-out=plan.bin`, `-detailed-exitcode`) with the `--` form."""
    cmd, start = _command(root, args)
    options: dict[str, Any] = {}
    for c in (root, cmd):
        for param in c.params:
            for opt in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())):
                if opt.startswith("--"):
                    options[opt[2:]] = param
    shorts = {opt for c in (root, cmd) for param in c.params for opt in getattr(param, "opts", ()) if len(opt) == 2}
    for i in range(start, len(args)):
        arg = args[i]
        if arg == "--":
            return
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("-o") and not arg.startswith("--") and "-o" not in shorts and "format" in options:
            word = (arg[2:].lstrip("=") or following).lower()  # `show plan.bin -o json`, `status -o wide`
            if word in FORMAT_WORDS:
                raise UsageError(f"{arg}: this command has no -o; did you mean --format {FORMAT_WORDS[word]}?")
            raise UsageError(f"{arg}{'' if arg[2:] else ' ' + following}: this command has no -o (kubectl's "
                             "output flag); it prints every column already, and --format json gives all the data")
        word = arg.lstrip("-").lower()
        if arg.startswith("-") and word in FORMAT_WORDS and word not in options and "format" in options:
            raise UsageError(f"{arg}: no such option; did you mean --format {FORMAT_WORDS[word]}?")  # `show -json`
        if (arg == "-f" or arg.startswith("-f=")) and "config" in options and "format" in options:
            value = arg[3:] or following  # kubectl's `-f FILE`: here -f is --format
            if value.lower() not in FORMAT_WORDS:
                raise UsageError(f"{arg} {value if not arg[3:] else ''}".rstrip() + ": -f is --format here; "
                                 f"the desired-state file is given with -c (did you mean -c {value}?)")
        m = _SINGLE_DASH_LONG.fullmatch(arg)
        if not m or m.group(1) not in options:
            continue
        name, value = m.group(1), m.group(2)
        param = options[name]
        takes_value = not getattr(param, "is_flag", False)
        if value is None and takes_value and i + 1 < len(args):
            value = args[i + 1]
        hint = f"--{name} {value}" if takes_value and value is not None else f"--{name}"
        raise UsageError(f"{arg}: long options take two dashes here; did you mean {hint}?")


def check_out_path(out: Path | None) -> None:
    """Refuse `-o json` and friends: a format word given where a plan file name belongs."""
    if out is None or out.suffix or len(out.parts) != 1:
        return
    word = out.name.lstrip("=").lower()
    if word in FORMAT_WORDS:
        raise BadParameter(
            f"'{out}' is an output format, not a plan file; did you mean --format {FORMAT_WORDS[word]}? "
            f"(to save the plan: --out plan.bin)",
            param_hint="'--out' / '-o'",
        )


_GLOBAL_FLAGS = re.compile(r"--no-color|--verbose|-v+")


def hoist_global_options(args: list[str]) -> list[str]:
    """Global options are accepted after the command too, as Terraform users write them
    (`trustplan plan --no-color`, `trustplan apply plan.bin -v`): they are moved to the front."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if _GLOBAL_FLAGS.fullmatch(arg) or arg.startswith("--log-level="):
            front.append(arg)
        elif arg == "--log-level" and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest

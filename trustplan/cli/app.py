"""The `trustplan` command: its sub-commands, and the one place errors become messages and exit codes.

Exit codes: 0 success (plan --detailed-exitcode: no changes), 1 error, 2 plan --detailed-exitcode
found changes. Usage errors exit 2, or 1 when --detailed-exitcode is given (2 means "changes" then).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

try:  # newer typer vendors click as typer._click
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError as _UsageError  # type: ignore[no-redef]

from trustplan import __version__
from trustplan.cli import apply, conventions, credentials, init, plan, schema, show, status, terminal, validate
from trustplan.cli.common import err, stop_heartbeats
from trustplan.cli.keystore import keystore_app
from trustplan.cli.sim import expand_k8s_flag, sim_app
from trustplan.cli.state import force_unlock, state_app
from trustplan.cli.streams import surviving_streams
from trustplan.errors import TrustplanError
from trustplan.system.secretfiles import remove_leftovers

app = typer.Typer(
    name="trustplan",
    help="Plan and apply root-CA rotations of Talos Linux clusters (Talos API and Kubernetes API CAs).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # click's plain help: typer's rich help imports rich and its own formatter (~160 ms) on every --help
    rich_markup_mode=None,
)
app.command("validate")(validate.validate)
app.command("plan")(plan.plan)
app.command("show")(show.show)
app.command("apply")(apply.apply)
app.command("status")(status.status)
app.command("init")(init.init)
app.command("force-unlock")(force_unlock)
credentials.register(state_app)
app.add_typer(state_app, name="state")
app.add_typer(keystore_app, name="keystore")
app.command("schema")(schema.schema)
app.add_typer(sim_app, name="sim")


def _version(value: bool) -> None:
    if value:
        print(f"trustplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colour anywhere (also: NO_COLOR=1). None is used when piped.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log retries, waits and gate attempts (-vv: debug).")
    ] = 0,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info, warning or error (overrides -v).")
    ] = None,
) -> None:
    """Plan and apply root-CA rotations of Talos Linux clusters."""
    if log_level is not None and log_level.lower() not in terminal.LEVELS:
        levels = ", ".join(terminal.LEVELS)
        raise typer.BadParameter(f"{log_level!r}: expected one of {levels}", param_hint="--log-level")
    terminal.configure(no_color, verbose, log_level)


def main(argv: list[str] | None = None) -> int:
    """The command line; output that cannot be written is lost, never the command (cli.streams)."""
    with surviving_streams():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = expand_k8s_flag(conventions.hoist_global_options(sys.argv[1:] if argv is None else argv))
    terminal.set_colour("--no-color" in args)  # until the root callback has read the options
    remove_leftovers()  # credential files of earlier runs that were killed (secretfiles)
    try:
        # typer rebuilds the click command from the signatures on every call (~10 ms): build it once
        command = typer.main.get_command(app)
        conventions.check_args(command, args)
        code = command.main(args=args, prog_name="trustplan", standalone_mode=False)
    except _UsageError as exc:
        exc.show(file=sys.stderr)
        return 1 if "--detailed-exitcode" in args else 2
    except typer.Abort:
        err.print("Aborted.")
        return 1
    except TrustplanError as exc:
        err.print("Error: ", style="bold red", end="")
        err.print(str(exc), markup=False, highlight=False)
        if exc.hint:
            err.print(f"  hint: {exc.hint}", highlight=False, markup=False)
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        err.print("Interrupted.")
        return 130
    finally:
        stop_heartbeats()
    return int(code or 0)

"""The `trustplan` command: its sub-commands, and the one place errors become messages and exit codes.

Exit codes: 0 success (plan --detailed-exitcode: no changes), 1 error, 2 plan --detailed-exitcode
found changes. Usage errors exit 2, or 1 when --detailed-exitcode is given (2 means "changes" then).
"""

from __future__ import annotations

import sys

import typer

try:  # newer typer vendors click as typer._click
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError as _UsageError  # type: ignore[no-redef]

from trustplan import __version__
from trustplan.cli import apply, init, plan, show, status, validate
from trustplan.cli.common import err
from trustplan.errors import TrustplanError

app = typer.Typer(
    name="trustplan",
    help="Plan and apply root-CA rotations of Talos Linux clusters (Talos API and Kubernetes API CAs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("validate")(validate.validate)
app.command("plan")(plan.plan)
app.command("show")(show.show)
app.command("apply")(apply.apply)
app.command("status")(status.status)
app.command("init")(init.init)
try:
    from trustplan.cli.sim import sim_app

    app.add_typer(sim_app, name="sim")
except ImportError:  # pragma: no cover - the simulator arrives with the talos provider
    pass


def _version(value: bool) -> None:
    if value:
        print(f"trustplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Plan and apply root-CA rotations of Talos Linux clusters."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="trustplan", standalone_mode=False)
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
    return int(code or 0)

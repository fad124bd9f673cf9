"""`trustplan apply [plan.bin]`: execute exactly a saved plan, or plan, show, ask, then apply."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from trustplan import applier, engine, pki, planfile
from trustplan.cli.common import (
    ConfigOption,
    ConsoleReporter,
    Format,
    LockTimeout,
    err,
    load_desired,
    print_data,
    run,
    seconds,
)
from trustplan.cli.plan import AllowUnlistedOption, make_plan, render_document
from trustplan.errors import TrustplanError


def apply(
    plan_file: Annotated[
        Path | None, typer.Argument(help="A saved plan; without it, plan first and ask.", metavar="[PLAN]")
    ] = None,
    config: ConfigOption = Path("trustplan.yaml"),
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Apply a fresh plan without asking.")] = False,
    lock_timeout: LockTimeout = "0s",
    allow_unlisted: AllowUnlistedOption = None,
    no_rollback: Annotated[
        bool,
        typer.Option(
            "--no-rollback",
            help="When a step fails before the new credentials are written, leave the nodes as they are "
            "(default: return them to their CAs of before).",
        ),
    ] = False,
) -> None:
    """Apply a saved plan exactly, refusing it if anything it was made from changed."""
    if plan_file is not None:
        data = _read(plan_file)
        document = planfile.decode(data, str(plan_file))
        source = str(plan_file)
        signing = load_desired(config).plan_signing_key
        if signing is not None:  # only plans signed with this key may be applied
            planfile.check_signature(data, source, planfile.load_verify_key(signing, str(config)))
    else:
        planned = make_plan(config, "1h", lock_timeout, allow_unlisted)
        print_data(render_document(planned.document, Format.text))
        if not planned.plan.has_changes:
            return
        if not auto_approve:
            if not sys.stdin.isatty():
                raise TrustplanError(
                    "refusing to apply without confirmation: stdin is not a terminal",
                    hint="pass --auto-approve, or save a plan with -o and apply that file",
                )
            if input("Apply this plan? Only 'yes' is accepted: ").strip() != "yes":
                err.print("Apply cancelled; nothing was changed.")
                raise typer.Exit(1)
        planned.save_new_keys()
        data = planfile.encode(planned.document)
        document = planned.document
        source = "the plan above"
    desired = load_desired(config)
    result = run(
        applier.apply_desired(desired, document, engine.plan_digest(data), source, pki.utcnow(), ConsoleReporter(),
                              seconds(lock_timeout), rollback=not no_rollback)
    )
    for w in result.written:
        err.print(f"wrote {w}", markup=False)
    print_data(
        f"Apply complete: {sum(1 for s in result.steps if s['kind'] == 'write')} node changes, "
        f"{sum(1 for s in result.steps if s['kind'] == 'gate')} gates passed. "
        f"State serial {result.state['serial']} in {desired.state}.\n"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustplanError(
            f"{path}: plan file not found", hint="make one with `trustplan plan -o plan.bin`"
        ) from None

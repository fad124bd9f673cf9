"""`trustplan apply [plan.bin]`: execute exactly a saved plan, or plan, show, ask, then apply."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from trustplan.cli import terminal
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
from trustplan.cli.planflow import AllowUnlistedOption, ParallelismOption, plan_config, render_plan
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
    parallelism: ParallelismOption = None,
) -> None:
    """Apply a saved plan exactly, refusing it if anything it was made from changed."""
    from trustplan.engine import applier
    from trustplan.formats import planfile
    from trustplan.render import text as render
    from trustplan.talos import pki

    if plan_file is not None:
        if parallelism is not None:
            raise typer.BadParameter("a saved plan runs with the rollout saved in it; give --parallelism to "
                                     "`trustplan plan`", param_hint="--parallelism")
        data = _read(plan_file)
        source = str(plan_file)
        desired = load_desired(config)
        signing = desired.plan_signing_key
        if signing is not None:  # only plans signed with this key may be applied: check before decoding
            planfile.check_signature(data, source, planfile.load_verify_key(signing, str(config)))
        saved = planfile.decode(data, source)
    else:
        if load_desired(config).plan_signing_key is not None:  # plan_config loads it again, under the lock
            raise TrustplanError(
                f"{config}: planSigning is set, so only a saved plan signed with that key can be applied; "
                "`trustplan apply` without a plan file would apply an unsigned plan",
                hint="make the plan with `trustplan plan -o plan.bin --sign-key KEY`, review it, then "
                "`trustplan apply plan.bin`; nothing was changed",
            )
        planned = plan_config(config, "1h", lock_timeout, allow_unlisted, parallelism)
        terminal.print_text(render_plan(planned.saved, Format.text))
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
        data = planfile.encode(planned.saved)
        saved = planned.saved
        source = "the plan above"
        desired = load_desired(config)
    result = run(
        applier.apply_desired(
            applier.ApplyRequest(desired, saved, planfile.plan_digest(data), source, pki.utcnow(),
                                 seconds(lock_timeout), rollback=not no_rollback),
            ConsoleReporter(),
        )
    )
    # each written output was reported as it was written ("outputs: wrote ..."): not repeated here
    line = render.apply_line(saved.plan, result.writes, result.gates)
    print_data(f"{line} State serial {result.state.serial} in {desired.state_backend().where}.\n")


def _read(path: Path) -> bytes:
    from trustplan.formats import planfile

    return planfile.read_bytes(path)

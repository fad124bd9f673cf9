"""`trustplan plan`: read every node, diff against the desired state, save and print the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustplan import engine, pki, planfile, render
from trustplan.atomic import write_atomic
from trustplan.cli.common import (
    ConfigOption,
    ConsoleReporter,
    Format,
    FormatOption,
    LockTimeout,
    err,
    load_desired,
    print_data,
    run,
    seconds,
)
from trustplan.keystore import Keystore
from trustplan.planner.document import from_document
from trustplan.state import LocalState


def render_document(doc: dict, fmt: Format) -> str:  # type: ignore[type-arg]
    if fmt is Format.json:
        return render.json_text(doc)
    plan = from_document(doc)
    return render.markdown(plan, doc) if fmt is Format.markdown else render.text(plan, doc)


def make_plan(config: Path, expires_in: str, lock_timeout: str) -> tuple[engine.Planned, object, Keystore]:
    desired = load_desired(config)
    try:
        expiry = planfile.parse_duration(expires_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from None
    store = LocalState(desired.state)
    keystore = Keystore(desired.keystore)
    provider = engine.make_provider(desired)

    async def go() -> engine.Planned:
        try:
            with store.lock(seconds(lock_timeout), "plan"):
                state = store.read(desired.cluster)
            return await engine.make(desired, provider, keystore, state, pki.utcnow(), expiry, ConsoleReporter())
        finally:
            await provider.close()

    planned = run(go())
    for note in planned.notes:
        err.print(f"warning: {note}", markup=False)
    return planned, desired, keystore


def plan(
    config: ConfigOption = Path("trustplan.yaml"),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save the plan to this file (plan.bin).")] = None,
    fmt: FormatOption = Format.text,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when there are no changes, 2 when there are, 1 on error."),
    ] = False,
    expires_in: Annotated[str, typer.Option("--expires-in", help="How long the saved plan stays valid.")] = "72h",
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Diff every node's live config against the desired state and print (and save) the plan."""
    planned, _, keystore = make_plan(config, expires_in, lock_timeout)
    if planned.plan.has_changes:
        planned.resolved.save_new(keystore)  # new CA keys go to the keystore before any node sees them
    if out is not None:
        write_atomic(out, planfile.encode(planned.document), mode=0o644)
        err.print(f"Saved the plan to {out}; apply it with: trustplan apply {out}", markup=False)
    print_data(render_document(planned.document, fmt))
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)

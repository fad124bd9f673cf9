"""`trustplan show plan.bin`: render a saved plan, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustplan.cli.common import Format, FormatOption, err
from trustplan.cli.plan import FlavorOption, SplitDirOption, SummaryOption, check_output_paths, emit, markdown_view


def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved with `trustplan plan -o`.", metavar="PLAN")],
    fmt: FormatOption = Format.text,
    summary: SummaryOption = False,
    split_dir: SplitDirOption = None,
    flavor: FlavorOption = "github",
) -> None:
    """Render a saved plan (text, Markdown or JSON) without touching any node."""
    from trustplan.formats import planfile

    check_output_paths(None, split_dir)
    data = planfile.read_bytes(plan_file)
    saved = planfile.decode(data, str(plan_file))
    if saved.signer is not None:
        err.print(f"{plan_file}: signed by Ed25519 key {saved.signer}", markup=False)
    if saved.inconsistent:  # shown as the file says; a reviewer should know apply will not take it
        sections = ", ".join(repr(s) for s in saved.inconsistent)
        err.print(f"warning: {plan_file}: the plan document's {sections} section says something other than its "
                  "steps (edited, or written by a newer trustplan); `trustplan apply` refuses this plan",
                  markup=False)
    emit(saved, fmt, summary, split_dir, markdown_view(flavor, plan_file, data))

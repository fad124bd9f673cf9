"""`trustplan show plan.bin`: render a saved plan, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustplan import planfile
from trustplan.cli.common import Format, FormatOption
from trustplan.cli.plan import SplitDirOption, SummaryOption, emit


def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved with `trustplan plan -o`.", metavar="PLAN")],
    fmt: FormatOption = Format.text,
    summary: SummaryOption = False,
    split_dir: SplitDirOption = None,
) -> None:
    """Render a saved plan (text, Markdown or JSON) without touching any node."""
    doc = planfile.read(plan_file)
    emit(doc, fmt, summary, split_dir)

"""`trustplan show plan.bin`: render a saved plan, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustplan import planfile
from trustplan.cli.common import Format, FormatOption, print_data
from trustplan.cli.plan import render_document


def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved with `trustplan plan -o`.", metavar="PLAN")],
    fmt: FormatOption = Format.text,
) -> None:
    """Render a saved plan (text, Markdown or JSON) without touching any node."""
    doc = planfile.read(plan_file)
    print_data(render_document(doc, fmt))

"""`trustplan schema desired|plan|state`: print (or write) a JSON Schema shipped with trustplan."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trustplan import schemas
from trustplan.cli.common import err, print_data
from trustplan.system.atomic import write_atomic


class SchemaName(str, Enum):
    desired = "desired"
    plan = "plan"
    state = "state"


def schema_text(name: str) -> str:
    return json.dumps(schemas.load(name), indent=2) + "\n"


def schema(
    name: Annotated[SchemaName, typer.Argument(help="desired (trustplan.yaml), plan (plan.bin's JSON) or state.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write it to this file (e.g. for editors: .trustplan/desired.schema.json)."),
    ] = None,
) -> None:
    """Print the JSON Schema of the desired state, the plan document or the state document."""
    text = schema_text(name.value)
    if out is None:
        print_data(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text.encode(), mode=0o644)
    err.print(f"Wrote the {name.value} schema to {out}", markup=False)

"""`trustplan status`: the trust matrix (nodes x CAs) from the live configs, and drift from the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustplan.cli.common import ConfigOption, Format, FormatOption, load_desired, print_data, run

if TYPE_CHECKING:
    from trustplan.live import LiveCluster


def status(
    config: ConfigOption = Path("trustplan.yaml"),
    fmt: FormatOption = Format.text,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when the cluster matches the state, 2 on drift, 1 on error."),
    ] = False,
) -> None:
    """Show which CA is issuing and accepted on every node, and where the live cluster drifted from the state."""
    from trustplan import engine
    from trustplan.cli.status_report import build_report, markdown, text
    from trustplan.live import read_cluster

    desired = load_desired(config)
    provider = engine.make_provider(desired)

    async def go() -> LiveCluster:
        try:
            return await read_cluster(provider, desired.nodes, tuple(desired.trust))
        finally:
            await provider.close()

    live = run(go())
    state = desired.state_backend().read(desired.cluster)
    report = build_report(live, state)
    if fmt is Format.json:
        print_data(json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif fmt is Format.markdown:
        print_data(markdown(report))
    else:
        text(report)
    if detailed_exitcode and report["drift"]:
        raise typer.Exit(2)

"""`trustplan status`: the trust matrix (nodes x CAs) from the live configs, and drift from the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustplan.cli.common import ConfigOption, Format, FormatOption, err, load_desired, out, print_data, run

if TYPE_CHECKING:
    from trustplan.engine.live import LiveCluster


def status(
    config: ConfigOption = Path("trustplan.yaml"),
    fmt: FormatOption = Format.text,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when the cluster matches the state, 2 on drift, 1 on error."),
    ] = False,
) -> None:
    """Show which CA is issuing and accepted on every node, and where the live cluster drifted from the state."""
    from trustplan.engine import access
    from trustplan.engine.credentials import check_outputs
    from trustplan.engine.leftbehind import left_behind
    from trustplan.engine.statusreport import build_report
    from trustplan.render.status import markdown, text
    from trustplan.talos import pki

    desired = load_desired(config)
    provider = access.make_provider(desired)

    now = pki.utcnow()

    behind: list[str] = []

    async def go() -> LiveCluster:
        try:
            keystore = desired.open_keystore()
            live, reader = await access.read_live(desired, provider, keystore, tuple(desired.trust), now)
            behind.extend(await left_behind(desired, provider, live, reader))
        finally:
            await provider.close()
        if reader is not None:
            err.print(f"note: read the nodes with a fallback credential ({access.reader_label(desired, reader)})",
                      markup=False)
        for line in behind:
            err.print(line, markup=False)
        return live

    live = run(go())
    for check in check_outputs(desired, live, now):
        if not check.works:
            err.print(f"warning: {check.output} {check.path} does not work: {check.problem}; "
                      "`trustplan plan` rewrites it", markup=False)
    state = desired.state_backend().read(desired.cluster)
    report = build_report(live, state)
    if fmt is Format.json:
        print_data(json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif fmt is Format.markdown:
        print_data(markdown(report, now))
    else:
        text(report, out)
    if detailed_exitcode and (report["drift"] or behind):  # a member left behind is drift too
        raise typer.Exit(2)

"""The flow `trustplan plan` and `trustplan apply` share: make a plan from trustplan.yaml (loading
it, planning under the state's lock, printing the notes) and render it as `--format` asks; the
options both commands take."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustplan.cli.common import ConsoleReporter, Format, err, load_desired, run, seconds
from trustplan.cli.durations import parse_duration

if TYPE_CHECKING:  # imported by the functions that use them: `--help` does not load them
    from trustplan.engine import planning as engine
    from trustplan.formats.planfile.savedplan import SavedPlan
    from trustplan.planner.model import PKI
    from trustplan.render import markdown as render_markdown


ParallelismOption = Annotated[
    int | None,
    typer.Option(
        "--parallelism",
        min=1,
        help="At most N nodes at once in each step (workers, gates; control planes at most their rollout "
        "setting). Saved in the plan. Default: the desired state's rollout.",
    ),
]


AllowUnlistedOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-unlisted",
        metavar="NODE",
        help="A cluster member left out of cluster.nodes on purpose (a node that is really gone); repeatable.",
    ),
]


AllowDisruptiveOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-disruptive",
        metavar="KIND",
        help="On a Talos before 1.14: replace the legacy single value of KIND (aggregator, serviceaccount) in "
        "place; the plan says what breaks and for how long (docs/credentials.md). Repeatable.",
    ),
]
DISRUPTIVE_KINDS = ("aggregator", "serviceaccount")


def disruptive_kinds(values: list[str] | None) -> tuple[PKI, ...]:
    """--allow-disruptive values, checked: the kinds a replacement in place is offered for."""
    out: list[PKI] = []
    for value in values or []:
        for kind in (v.strip() for v in value.split(",") if v.strip()):
            if kind == "encryption":
                raise typer.BadParameter(
                    "not offered for the encryption key: replacing its only key leaves every Secret in etcd "
                    "unreadable (nothing can decrypt them to rewrite); upgrade Talos to v1.14.0 or later",
                    param_hint="--allow-disruptive",
                )
            if kind not in DISRUPTIVE_KINDS:
                raise typer.BadParameter(f"{kind!r}: expected one of {', '.join(DISRUPTIVE_KINDS)}",
                                         param_hint="--allow-disruptive")
            out.append(kind)  # type: ignore[arg-type]  # one of DISRUPTIVE_KINDS
    return tuple(dict.fromkeys(out))


def plan_config(
    config: Path,
    expires_in: str,
    lock_timeout: str,
    allow_unlisted: list[str] | None = None,
    parallelism: int | None = None,
    allow_disruptive: list[str] | None = None,
) -> engine.Planned:
    """Load `config`, make its plan under the state's lock (new CA keys not saved yet) and print the notes."""
    import dataclasses

    from trustplan.engine import planning as engine
    from trustplan.talos import pki

    disruptive = disruptive_kinds(allow_disruptive)
    desired = load_desired(config)
    if not desired.age_recipients:  # plaintext keys: refuse to add to a keystore git already tracks
        from trustplan.cli.init_repo import refuse_tracked_keys

        refuse_tracked_keys(desired.keystore, str(config))
    if parallelism is not None:  # saved in the plan: apply runs it so
        desired = dataclasses.replace(desired, rollout=desired.rollout.limited(parallelism))
    try:
        expiry = parse_duration(expires_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from None
    planned = run(
        engine.plan_desired(
            desired, pki.utcnow(), expiry, ConsoleReporter(), seconds(lock_timeout), tuple(allow_unlisted or ()),
            disruptive,
        )
    )
    for note in planned.notes:
        err.print(note, markup=False)
    return planned


def render_plan(
    saved: SavedPlan, fmt: Format, summary: bool = False, view: render_markdown.View | None = None
) -> str:
    """A saved plan as `--format` asks (Markdown as one text; `emit` splits it into comments)."""
    from trustplan.render import markdown as render_markdown
    from trustplan.render import text as render

    if fmt is Format.json:
        return render.json_text(saved)
    if fmt is Format.markdown:
        view = view or render_markdown.View()
        return render_markdown.render_summary(saved, view) if summary else render_markdown.render(saved, view)
    return render.summary(saved) if summary else render.text(saved)



"""`trustplan plan`: read every node, diff against the desired state, save and print the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustplan import engine, pki, planfile, render, render_markdown
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
from trustplan.planner.document import from_document


def render_document(doc: dict, fmt: Format, summary: bool = False) -> str:  # type: ignore[type-arg]
    if fmt is Format.json:
        return render.json_text(doc)
    plan = from_document(doc)
    if fmt is Format.markdown:
        return render_markdown.render_summary(plan, doc) if summary else render.markdown(plan, doc)
    if summary:
        return render.summary_line(plan) + "\n" + "".join(f"  ! {w}\n" for w in plan.warnings)
    return render.text(plan, doc)


SummaryOption = Annotated[
    bool, typer.Option("--summary", help="Short form: summary, warnings, new CAs, one row per distinct change.")
]
SplitDirOption = Annotated[
    Path | None,
    typer.Option(
        "--split-dir",
        help="Markdown only: also write the rendering as part-1.md, part-2.md, ... (each fits one GitHub comment).",
    ),
]


def emit(doc: dict, fmt: Format, summary: bool, split_dir: Path | None) -> None:  # type: ignore[type-arg]
    """Print the plan; Markdown longer than one comment is printed in parts separated by a delimiter line."""
    if fmt is not Format.markdown:
        if split_dir is not None:
            raise typer.BadParameter("--split-dir needs --format markdown", param_hint="--split-dir")
        print_data(render_document(doc, fmt, summary))
        return
    parts = render_markdown.render_parts(from_document(doc), doc, summary)
    if split_dir is not None:
        split_dir.mkdir(parents=True, exist_ok=True)
        for stale in split_dir.glob("part-*.md"):
            stale.unlink()
        for i, part in enumerate(parts, start=1):
            write_atomic(split_dir / f"part-{i}.md", part.encode(), mode=0o644)
        err.print(f"Wrote {len(parts)} Markdown part(s) to {split_dir}/part-*.md", markup=False)
    print_data(f"\n{render_markdown.PART_DELIMITER}\n\n".join(parts))


AllowUnlistedOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-unlisted",
        metavar="NODE",
        help="A cluster member left out of cluster.nodes on purpose (a node that is really gone); repeatable.",
    ),
]


def make_plan(
    config: Path, expires_in: str, lock_timeout: str, allow_unlisted: list[str] | None = None
) -> engine.Planned:
    desired = load_desired(config)
    try:
        expiry = planfile.parse_duration(expires_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from None
    planned = run(
        engine.plan_desired(
            desired, pki.utcnow(), expiry, ConsoleReporter(), seconds(lock_timeout), tuple(allow_unlisted or ())
        )
    )
    for note in planned.notes:
        err.print(note, markup=False)
    return planned


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
    summary: SummaryOption = False,
    split_dir: SplitDirOption = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Sign the saved plan with this Ed25519 private key (PEM).")
    ] = None,
    allow_unlisted: AllowUnlistedOption = None,
) -> None:
    """Diff every node's live config against the desired state and print (and save) the plan."""
    signing_key = planfile.load_signing_key(sign_key) if sign_key is not None else None
    planned = make_plan(config, expires_in, lock_timeout, allow_unlisted)
    if planned.plan.has_changes:
        planned.save_new_keys()  # new CA keys go to the keystore before any node sees them
    if out is not None:
        write_atomic(out, planfile.encode(planned.document, signing_key), mode=0o644)
        err.print(f"Saved the plan to {out}; apply it with: trustplan apply {out}", markup=False)
    emit(planned.document, fmt, summary, split_dir)
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)

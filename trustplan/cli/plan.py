"""`trustplan plan`: read every node, diff against the desired state, save and print the plan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustplan.cli import conventions, terminal
from trustplan.cli.common import (
    ConfigOption,
    Format,
    FormatOption,
    LockTimeout,
    err,
    print_data,
)
from trustplan.cli.planflow import (
    AllowDisruptiveOption,
    AllowUnlistedOption,
    ParallelismOption,
    plan_config,
    render_plan,
)
from trustplan.errors import FilesystemError
from trustplan.system.atomic import write_atomic
from trustplan.system.safeio import check_writable, ensure_dir

if TYPE_CHECKING:  # imported by the functions that use them: `--help` does not load them
    from trustplan.formats.planfile.savedplan import SavedPlan
    from trustplan.render import markdown as render_markdown


SummaryOption = Annotated[
    bool, typer.Option("--summary", help="Short form: summary, warnings, new CAs, one row per distinct change.")
]
SplitDirOption = Annotated[
    Path | None,
    typer.Option(
        "--split-dir",
        help="Markdown only: also write the rendering as part-1.md, part-2.md, ... (each fits one comment).",
    ),
]
FlavorOption = Annotated[
    str,
    typer.Option(
        "--markdown-flavor",
        help="Markdown for github (alerts, folds), gitlab (its alert syntax, folds) or plain (no HTML, no alerts).",
    ),
]


def markdown_view(flavor: str, file: Path | None, data: bytes | None) -> render_markdown.View:
    """What the Markdown says about where it goes and the plan file it shows (SHA-256, signer)."""
    import hashlib

    from trustplan.formats import planfile
    from trustplan.render import markdown as render_markdown

    if flavor not in render_markdown.FLAVORS:
        choices = ", ".join(render_markdown.FLAVORS)
        raise typer.BadParameter(f"{flavor!r}: expected one of {choices}", param_hint="--markdown-flavor")
    if data is None:
        return render_markdown.View(flavor)
    signer = planfile.signer(data)
    return render_markdown.View(
        flavor,
        str(file) if file is not None else None,
        hashlib.sha256(data).hexdigest(),
        planfile.key_fingerprint(signer) if signer is not None else None,
    )


def emit(
    saved: SavedPlan,
    fmt: Format,
    summary: bool,
    split_dir: Path | None,
    view: render_markdown.View | None = None,
) -> None:
    """Print the plan; Markdown longer than one comment is printed in parts separated by a delimiter line."""
    from trustplan.render import markdown as render_markdown

    if fmt is not Format.markdown:
        if split_dir is not None:
            raise typer.BadParameter("--split-dir needs --format markdown", param_hint="--split-dir")
        text = render_plan(saved, fmt, summary)
        if fmt is Format.text:
            terminal.print_text(text)
        else:
            print_data(text)
        return
    parts = render_markdown.render_parts(saved, summary, view=view or render_markdown.View())
    if split_dir is not None:
        ensure_dir(split_dir)
        for stale in split_dir.glob("part-*.md"):
            stale.unlink()
        for i, part in enumerate(parts, start=1):
            write_atomic(split_dir / f"part-{i}.md", part.encode(), mode=0o644)
        err.print(f"Wrote {len(parts)} Markdown part(s) to {split_dir}/part-*.md", markup=False)
    print_data(f"\n{render_markdown.PART_DELIMITER}\n\n".join(parts))


def check_output_paths(out: Path | None, split_dir: Path | None) -> None:
    """Refuse, before any work, an output file that is a folder or a split folder that is a file."""
    if out is not None and out.is_dir():
        raise typer.BadParameter(f"{out} is a directory; give the plan file's path (e.g. {out}/plan.bin)",
                                 param_hint="--out")
    if split_dir is not None and split_dir.exists() and not split_dir.is_dir():
        raise typer.BadParameter(f"{split_dir} exists and is not a directory", param_hint="--split-dir")
    if out is not None:
        if not out.parent.exists():  # a typo in the folder must not become a new folder
            raise FilesystemError(
                f"{out}: cannot save the plan: the folder {out.parent} does not exist",
                hint=f"create it first (mkdir -p {out.parent}) or give another path; nothing was written",
            )
        check_writable(out, "the plan file")
    if split_dir is not None:
        check_writable(split_dir / "part-1.md", "the Markdown parts")


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
    flavor: FlavorOption = "github",
    allow_unlisted: AllowUnlistedOption = None,
    allow_disruptive: AllowDisruptiveOption = None,
    parallelism: ParallelismOption = None,
) -> None:
    """Diff every node's live config against the desired state and print (and save) the plan."""
    from trustplan.formats import planfile

    conventions.check_out_path(out)
    check_output_paths(out, split_dir)
    signing_key = planfile.load_signing_key(sign_key) if sign_key is not None else None
    planned = plan_config(config, expires_in, lock_timeout, allow_unlisted, parallelism, allow_disruptive)
    if planned.plan.has_changes:
        planned.save_new_keys()  # new CA keys go to the keystore before any node sees them
    data = None
    if out is not None:
        data = planfile.encode(planned.saved, signing_key)
        write_atomic(out, data, mode=0o644)
    emit(planned.saved, fmt, summary, split_dir, markdown_view(flavor, out, data))
    if out is not None:  # last, as Terraform does: a long plan does not scroll it away
        err.print(f"Saved the plan to {out}; apply it with: trustplan apply {out}", markup=False)
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)

"""`trustplan state migrate` and `trustplan force-unlock`: move the state between a file and the
configured backend, and release a lock whose holder is gone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustplan.cli.common import ConfigOption, LockTimeout, err, load_desired, print_data, seconds
from trustplan.errors import StateError
from trustplan.system.atomic import write_atomic

if TYPE_CHECKING:
    from trustplan.state import StateDocument

state_app = typer.Typer(
    help="Move the state between a file and the configured backend.", no_args_is_help=True, rich_markup_mode=None
)

Force = Annotated[bool, typer.Option("--force", help="Overwrite a destination that holds another or newer state.")]


@state_app.command("migrate")
def migrate(
    from_file: Annotated[
        Path | None, typer.Option("--from", help="Push this state file into the configured backend.")
    ] = None,
    to_file: Annotated[Path | None, typer.Option("--to", help="Pull the backend's state into this file.")] = None,
    config: ConfigOption = Path("trustplan.yaml"),
    lock_timeout: LockTimeout = "0s",
    force: Force = False,
) -> None:
    """Copy a local state file into the configured backend (--from FILE), or the backend's state into a
    file (--to FILE), under the backend's lock. The source is left as it was."""
    if (from_file is None) == (to_file is None):
        raise typer.BadParameter("give exactly one of --from FILE or --to FILE")
    desired = load_desired(config)
    backend = desired.state_backend()
    with backend.lock(seconds(lock_timeout), "state migrate"):
        current = backend.read(desired.cluster)
        if from_file is not None:
            incoming = _read_file(from_file, desired.cluster)
            _check_newer(incoming, current, backend.where, force)
            backend.write(incoming)
            print_data(f"Copied serial {incoming.serial} from {from_file} to {backend.where}.\n")
        else:
            assert to_file is not None
            if current.serial == 0:
                raise StateError(f"{backend.where}: holds no state yet; nothing to copy")
            if to_file.exists():
                _check_newer(current, _read_file(to_file, desired.cluster), str(to_file), force)
            from trustplan.state.document import encode

            write_atomic(to_file, encode(current), mode=0o644)
            print_data(f"Copied serial {current.serial} from {backend.where} to {to_file}.\n")
    err.print("The source was left as it was; point `state:` in the desired state at the copy to use it.")


def _read_file(path: Path, cluster: str) -> StateDocument:
    from trustplan.state import LocalState

    if not path.exists():
        raise StateError(f"{path}: state file not found")
    return LocalState(path).read(cluster)


def _check_newer(incoming: StateDocument, current: StateDocument, where: str, force: bool) -> None:
    """Refuse to replace a state of another lineage, or a newer one, unless forced."""
    if force or current.serial == 0:
        return
    if current.lineage != incoming.lineage:
        raise StateError(
            f"{where}: holds another state (lineage {current.lineage}, serial {current.serial}); "
            f"copying lineage {incoming.lineage} over it would lose it",
            hint="pass --force only if that state is known to be obsolete",
        )
    if current.serial >= incoming.serial:
        raise StateError(
            f"{where}: already holds serial {current.serial}, not older than serial {incoming.serial} "
            "being copied; nothing was changed",
            hint="pass --force to overwrite it anyway",
        )


def force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The lock ID the lock error named.", metavar="LOCK_ID")],
    config: ConfigOption = Path("trustplan.yaml"),
) -> None:
    """Release the state lock LOCK_ID whose holder is gone (killed, its machine lost)."""
    desired = load_desired(config)
    backend = desired.state_backend()
    holder = backend.force_unlock(lock_id)
    print_data(f"Released lock {lock_id} of {holder.describe()} on {backend.where}.\n")

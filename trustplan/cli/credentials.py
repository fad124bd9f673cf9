"""`trustplan state push-credentials` / `pull-credentials`: the credentials apply wrote (talosconfig,
kubeconfig), age-encrypted, in a Secret next to the kubernetes state (trustplan.state.credstore), so
a CI job whose secret store still holds the credential the last rotation revoked finds the new one.

    push-credentials   after apply: encrypt each configured output that exists to
                       keystore.age.recipients and store it (only ciphertext leaves the runner)
    pull-credentials   before plan/apply: write each stored output back (0600), decrypted with the
                       keystore's identity; with nothing stored yet, the files on disk are kept
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trustplan.cli.common import ConfigOption, err, load_desired, print_data
from trustplan.errors import TrustplanError

if TYPE_CHECKING:
    from trustplan.formats.desired import DesiredState
    from trustplan.formats.keystore_age import AgeSealer
    from trustplan.state.kubernetes import KubernetesState


def _remote(config: Path) -> tuple[DesiredState, KubernetesState, AgeSealer]:
    from trustplan.formats.keystore_age import AgeSealer
    from trustplan.state.kubernetes import KubernetesState

    desired = load_desired(config)
    backend = desired.state_backend()
    if not isinstance(backend, KubernetesState) or not desired.age_recipients:
        raise TrustplanError(
            f"{config}: the credentials are stored next to a kubernetes state and encrypted with the age keystore",
            hint="set `state: {backend: kubernetes, ...}` and `keystore: {age: {recipients: [...]}}`",
        )
    sealer = AgeSealer(desired.age_recipients, desired.age_identity, str(config))
    return desired, backend, sealer


def push_credentials(config: ConfigOption = Path("trustplan.yaml")) -> None:
    """Store the talosconfig and kubeconfig apply wrote, age-encrypted, next to the kubernetes state."""
    from trustplan.state import credstore
    from trustplan.state.backend import Holder
    from trustplan.system.safeio import read_regular

    desired, backend, sealer = _remote(config)
    paths = {"talosconfig": desired.talosconfig_output, "kubeconfig": desired.kubeconfig_output}
    sealed = {k: sealer.seal(read_regular(p, what=k)) for k, p in paths.items() if p is not None and p.exists()}
    if not sealed:
        raise TrustplanError(f"{config}: no talosconfig or kubeconfig output on disk to store")
    writer = Holder.me("push-credentials").describe()
    credstore.push(backend.api, backend.spec, sealed, {"trustplan.dev/written-by": writer})
    print_data(f"Stored {', '.join(sealed)} (age-encrypted) in {credstore.where(backend.spec)}.\n")


def pull_credentials(config: ConfigOption = Path("trustplan.yaml")) -> None:
    """Write back the credentials stored by push-credentials (decrypted with the keystore's identity)."""
    from trustplan.state import credstore
    from trustplan.system.atomic import write_atomic

    desired, backend, sealer = _remote(config)
    stored = credstore.pull(backend.api, backend.spec)
    paths = {"talosconfig": desired.talosconfig_output, "kubeconfig": desired.kubeconfig_output}
    written = []
    for kind, blob in stored.items():
        path = paths.get(kind)
        if path is None:
            continue
        write_atomic(path, sealer.open(blob, f"{credstore.where(backend.spec)} {kind}.age"), mode=0o600)
        written.append(f"{kind} {path}")
    if not written:
        err.print(f"{credstore.where(backend.spec)}: no stored credentials yet; keeping the files on disk",
                  markup=False)
        return
    print_data(f"Wrote {', '.join(written)} from {credstore.where(backend.spec)}.\n")


def register(app: typer.Typer) -> None:
    app.command("push-credentials")(push_credentials)
    app.command("pull-credentials")(pull_credentials)

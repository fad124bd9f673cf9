"""`trustplan keystore rekey`: encrypt every CA key in the keystore to the recipients listed now."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trustplan.cli.common import ConfigOption, err, load_desired, print_data
from trustplan.errors import KeystoreError
from trustplan.system.safeio import describe

if TYPE_CHECKING:
    from trustplan.formats.keystore import Keystore
    from trustplan.talos import pki

keystore_app = typer.Typer(help="Manage the CA keystore.", no_args_is_help=True, rich_markup_mode=None)


@keystore_app.command("rekey")
def rekey(config: ConfigOption = Path("trustplan.yaml")) -> None:
    """Re-encrypt every CA key to keystore.age.recipients (add or remove a recipient in trustplan.yaml,
    then run this). Plaintext keys left from before encryption was turned on are encrypted and removed.
    Decrypting needs an identity that can read the keys today (keystore.age.identity or
    $TRUSTPLAN_AGE_IDENTITY)."""
    from trustplan.formats.keystore import Keystore, resume_rekey
    from trustplan.formats.keystore import rekey as rekey_keystore

    desired = load_desired(config)
    store = desired.open_keystore()
    if store.sealer is None:
        raise KeystoreError(
            f"{desired.path}: keystore.age is not configured; there is nothing to encrypt to",
            hint="set keystore: {path: DIR, age: {recipients: [age1...]}}",
        )
    try:
        resumed = resume_rekey(store.root)  # a rekey that was stopped: finish or undo it first
    except OSError as exc:
        raise KeystoreError(f"{store.root}: cannot finish the stopped rekey: {describe(exc)}") from None
    if resumed is not None:
        err.print(f"{store.root}: {resumed}", markup=False)
    plain = Keystore(store.root)
    fps = store.fingerprints()
    if not fps:
        raise KeystoreError(f"{store.root}: the keystore holds no keys")
    keys = {fp: _load_any(store, plain, fp)[1] for fp in fps}  # all first: one unreadable key changes nothing
    try:
        rekey_keystore(store, keys)  # a new keystore beside the old one, renamed into place
    except OSError as exc:
        raise KeystoreError(
            f"{store.root}: cannot re-encrypt the keystore: {describe(exc)}",
            hint="the keystore is whole (old or new); run `trustplan keystore rekey` again to finish",
        ) from None
    print_data(f"Encrypted {len(fps)} CA key(s) in {store.root} to {len(desired.age_recipients)} recipient(s).\n")


@keystore_app.command("check")
def check(config: ConfigOption = Path("trustplan.yaml")) -> None:
    """Decrypt every CA key with the configured identity and match it to its certificate (for CI: fail
    early when the keystore or its identity is missing). Prints fingerprints only."""
    desired = load_desired(config)
    store = desired.open_keystore()
    fps = store.fingerprints()
    if not fps:
        raise KeystoreError(
            f"{store.root}: the keystore holds no keys",
            hint="make the plan where the keys are kept, and commit the (encrypted) keystore or restore it",
        )
    for fp in fps:
        store.load(fp)
    mode = f"age, {len(desired.age_recipients)} recipient(s)" if store.sealer else "plaintext"
    print_data(f"{len(fps)} CA key(s) in {store.root} ({mode}) open and match their certificates:\n")
    print_data("".join(f"  {fp}\n" for fp in fps))


def _load_any(store: Keystore, plain: Keystore, fp: str) -> tuple[pki.CACert, pki.PrivateKey]:
    """A key as it is stored now: sealed, or plaintext from before encryption was turned on."""
    return store.load(fp) if store.key_path(fp).exists() else plain.load(fp)

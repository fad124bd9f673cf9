"""CA keys encrypted at rest with age: the keystore's files are `<hex>.key.age`, never `<hex>.key`.

Keys are encrypted to every recipient in `keystore.age.recipients` (age `age1...` or SSH public keys)
and decrypted with an identity from `keystore.age.identity` (a file) or `$TRUSTPLAN_AGE_IDENTITY`
(the identity text itself, for CI secrets). A key is encrypted in memory and only the ciphertext is
written: with encryption on, no CA key touches disk in plaintext. The identity is read only when a
key is needed, so `trustplan plan` that only mints new CAs needs the recipients, not the identity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyrage

from trustplan.errors import KeystoreError
from trustplan.system.safeio import read_regular

IDENTITY_ENV = "TRUSTPLAN_AGE_IDENTITY"


class AgeSealer:
    """Seals (encrypts) key bytes to the recipients and opens them with the identity."""

    suffix = ".key.age"

    def __init__(self, recipients: Sequence[str], identity_file: Path | None, source: str) -> None:
        self.source = source
        self.identity_file = identity_file
        self.recipients = [_recipient(r, source, i) for i, r in enumerate(recipients)]
        self._identities: list[Any] | None = None

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(pyrage.encrypt(plaintext, self.recipients))

    def open(self, ciphertext: bytes, where: str) -> bytes:
        try:
            return bytes(pyrage.decrypt(ciphertext, self.identities()))
        except pyrage.DecryptError as exc:
            raise KeystoreError(
                f"{where}: cannot decrypt this key with the age identity ({exc})",
                hint="use an identity whose public key is among keystore.age.recipients "
                "(`trustplan keystore rekey` on a machine that can decrypt adds recipients)",
            ) from None

    def identities(self) -> list[Any]:
        if self._identities is None:
            text, where = self._identity_text()
            self._identities = parse_identities(text, where)
        return self._identities

    def _identity_text(self) -> tuple[str, str]:
        if self.identity_file is not None:
            where = str(self.identity_file)
            # a regular file only (a FIFO is refused before it is opened, never waited on)
            data = read_regular(self.identity_file, what="age identity file")
            try:
                return data.decode("utf-8"), where
            except UnicodeDecodeError as exc:  # the bytes are a secret: say where, never what
                raise KeystoreError(
                    f"{where}: the age identity file is not UTF-8 text (an invalid byte at offset {exc.start})",
                    hint="an age identity file holds AGE-SECRET-KEY-1... lines (or an OpenSSH private key)",
                ) from None
        text = os.environ.get(IDENTITY_ENV, "")
        if not text.strip():
            raise KeystoreError(
                f"{self.source}: keystore.age: no identity to decrypt the CA keys with",
                hint=f"set keystore.age.identity to a file, or ${IDENTITY_ENV} to the identity (AGE-SECRET-KEY-1...)",
            )
        return text, f"${IDENTITY_ENV}"


def parse_identities(text: str, where: str) -> list[Any]:
    """age identities (one per line, `#` comments) or one OpenSSH private key."""
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(text.encode())]
        except (pyrage.IdentityError, ValueError) as exc:
            raise KeystoreError(f"{where}: not a usable SSH identity ({exc})") from None
    identities = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:  # the message would not help, and must not echo the line
            raise KeystoreError(f"{where}: line {n} is not an age identity (AGE-SECRET-KEY-1...)") from None
    if not identities:
        raise KeystoreError(f"{where}: holds no age identity (AGE-SECRET-KEY-1...)")
    return identities


def _recipient(text: str, source: str, i: int) -> Any:
    try:
        if text.startswith("ssh-"):
            return pyrage.ssh.Recipient.from_str(text)
        return pyrage.x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise KeystoreError(f"{source}: keystore.age.recipients[{i}]: not an age or SSH public key ({exc})") from None

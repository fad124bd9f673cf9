"""The keystore: CA private keys, by fingerprint, in a 0700 directory of 0600 files.

Layout:  <keystore>/<hex>.key   the key (Talos PEM encoding), 0600
         <keystore>/<hex>.crt   the certificate
         <keystore>/index.json  generated authority name -> fingerprint, so a re-plan reuses the
                                CA it generated before instead of minting another

With a sealer (keystore.age in trustplan.yaml, see keystore_age.py) a key is stored as
`<hex>.key.age`, encrypted before it is written; a plaintext `<hex>.key` is then refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from cryptography import x509

from trustplan import pki
from trustplan.atomic import write_atomic
from trustplan.errors import KeystoreError


class Sealer(Protocol):
    """Turns key bytes into what is stored, and back (age encryption)."""

    suffix: str

    def seal(self, plaintext: bytes) -> bytes: ...

    def open(self, ciphertext: bytes, where: str) -> bytes: ...


class Keystore:
    def __init__(self, root: Path, sealer: Sealer | None = None) -> None:
        self.root = root
        self.sealer = sealer

    def key_path(self, fp: str) -> Path:
        return self.root / f"{self._hex(fp)}{self.sealer.suffix if self.sealer else '.key'}"

    def fingerprints(self) -> list[str]:
        """Every CA whose key is here, sealed or not."""
        found = {p.name.split(".")[0] for p in self.root.glob("*.key*") if p.name.endswith((".key", ".key.age"))}
        return sorted(f"sha256:{h}" for h in found)

    def _hex(self, fp: str) -> str:
        return fp.removeprefix("sha256:")

    def _index(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"{self.root / 'index.json'}: unreadable keystore index ({exc})") from None
        return {str(k): str(v) for k, v in data.items()}

    def generated(self, name: str) -> str | None:
        """The fingerprint of the CA generated earlier for authority `name`, if its key is still here."""
        fp = self._index().get(name)
        return fp if fp and self.has(fp) else None

    def has(self, fp: str) -> bool:
        plain = self.root / f"{self._hex(fp)}.key"  # with a sealer: found, and refused by load() until rekeyed
        return self.key_path(fp).exists() or plain.exists()

    def load(self, fp: str) -> tuple[pki.CACert, pki.PrivateKey]:
        """The CA and its key; KeystoreError if missing or if the key does not match."""
        key_path = self.key_path(fp)
        crt_path = self.root / f"{self._hex(fp)}.crt"
        plain = self.root / f"{self._hex(fp)}.key"
        if self.sealer is not None and not key_path.exists() and plain.exists():
            raise KeystoreError(
                f"{plain}: the key of CA {fp} is stored in plaintext, and keystore encryption is on",
                hint="run `trustplan keystore rekey` to encrypt it (and remove the plaintext file)",
            )
        try:
            key_pem = key_path.read_bytes()
            crt_pem = crt_path.read_bytes()
        except FileNotFoundError:
            raise KeystoreError(
                f"{key_path}: the private key of CA {fp} is missing from the keystore",
                hint="restore the keystore directory from backup, or make a new plan",
            ) from None
        if self.sealer is not None:
            key_pem = self.sealer.open(key_pem, str(key_path))
        key = pki.load_key_pem(key_pem, str(key_path))
        ca = pki.CACert.from_pem(crt_pem, str(crt_path))
        if ca.fingerprint != fp or not pki.key_matches(ca.cert, key):
            raise KeystoreError(f"{key_path}: the key in the keystore does not match CA {fp}")
        return ca, key

    def save(self, cert: x509.Certificate, key: pki.PrivateKey, name: str | None = None) -> str:
        """Store a CA key (0600) and certificate; record `name` for generated authorities."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        fp = pki.fingerprint(cert)
        pem = pki.key_to_pem(key)
        write_atomic(self.key_path(fp), self.sealer.seal(pem) if self.sealer else pem, mode=0o600)
        write_atomic(self.root / f"{self._hex(fp)}.crt", pki.cert_to_pem(cert), mode=0o644)
        if name is not None:
            index = self._index()
            index[name] = fp
            write_atomic(
                self.root / "index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), mode=0o600
            )
        return fp

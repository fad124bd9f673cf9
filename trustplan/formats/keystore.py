"""The keystore: CA private keys, by fingerprint, in a 0700 directory of 0600 files.

Layout:  <keystore>/<hex>.key   the key (Talos PEM encoding), 0600
         <keystore>/<hex>.crt   the certificate
         <keystore>/index.json  generated authority name -> fingerprint, so a re-plan reuses the
                                CA it generated before instead of minting another
         <keystore>/index.lock  flock held while CAs are stored and the index updated: two plans
                                at once store one CA per name (the second is refused, and re-plans)

With a sealer (keystore.age in trustplan.yaml, see keystore_age.py) a key is stored as
`<hex>.key.age`, encrypted before it is written; a plaintext `<hex>.key` is then refused.

`rekey` (re-encrypting every key to new recipients) never changes the keystore in place: the new
keystore is written beside it as `<keystore>.rekey` (marked complete last), then renamed into place,
and the old one removed. Killed at any point, the keystore is either the old one or the new one,
whole; running `trustplan keystore rekey` again finishes (or restarts) the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cryptography import x509

from trustplan.errors import InputError, KeystoreError
from trustplan.planner.model import PKI
from trustplan.system.atomic import write_atomic
from trustplan.system.safeio import describe, ensure_dir, read_regular
from trustplan.talos import kubecreds, pki


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
        self._check_rekey()
        found = {p.name.split(".")[0] for p in self.root.glob("*.key*") if p.name.endswith((".key", ".key.age"))}
        return sorted(f"sha256:{h}" for h in found)

    def _check_rekey(self) -> None:
        """Refuse to use a keystore that a killed rekey left between its two renames."""
        if not self.root.exists() and (_rekey_dir(self.root) / REKEY_DONE).exists():
            raise KeystoreError(
                f"{self.root}: a `trustplan keystore rekey` was stopped while it put the re-encrypted keystore "
                f"in place ({_rekey_dir(self.root)} holds it, whole)",
                hint="run `trustplan keystore rekey` again: it finishes the job",
            )

    def _hex(self, fp: str) -> str:
        return fp.removeprefix("sha256:")

    def _index(self) -> dict[str, str]:
        self._check_rekey()
        path = self.root / "index.json"
        try:
            os.stat(path)
            data = json.loads(read_regular(path, what="keystore index"))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeystoreError(f"{path}: unreadable keystore index ({describe(exc)})",
                                hint="check the keystore path in the desired state") from None
        except InputError as exc:
            raise KeystoreError(str(exc), hint="check the keystore path in the desired state") from None
        except RecursionError:
            raise KeystoreError(f"{path}: unreadable keystore index (nested too deeply)") from None
        except ValueError as exc:
            raise KeystoreError(f"{self.root / 'index.json'}: unreadable keystore index ({exc})") from None
        if not isinstance(data, dict):
            raise KeystoreError(f"{self.root / 'index.json'}: unreadable keystore index (not a JSON object)")
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
        if not key_path.exists() or not crt_path.exists():
            raise KeystoreError(
                f"{key_path}: the private key of CA {fp} is missing from the keystore",
                hint="restore the keystore directory from backup, or make a new plan",
            )
        try:
            key_pem = read_regular(key_path, what="CA key")
            crt_pem = read_regular(crt_path, what="CA certificate")
        except InputError as exc:
            raise KeystoreError(str(exc), hint="restore the keystore directory from backup") from None
        if self.sealer is not None:
            key_pem = self.sealer.open(key_pem, str(key_path))
        key = pki.load_key_pem(key_pem, str(key_path))
        ca = pki.CACert.from_pem(crt_pem, str(crt_path))
        if ca.fingerprint != fp or not pki.key_matches(ca.cert, key):
            raise KeystoreError(f"{key_path}: the key in the keystore does not match CA {fp}")
        return ca, key

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the keystore's lock (flock on `index.lock`): minting and the index are one step."""
        ensure_dir(self.root)
        try:
            os.chmod(self.root, 0o700)
            fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeystoreError(f"{self.root}: cannot use the keystore: {describe(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a few file writes: wait
            yield
        finally:
            os.close(fd)

    def save_generated(
        self,
        items: list[tuple[str | None, x509.Certificate, pki.PrivateKey]],
        indexed: dict[str, str | None] | None = None,
    ) -> list[str]:
        """Store CAs minted for one plan, under the lock, all or none. `indexed` is what the index
        said for each name when the plan was made: if another run recorded a CA for one of these
        names since, store nothing and say so (one CA per name)."""
        fresh = _missing(self.root)  # folders this call creates: removed again if it fails
        written: list[Path] = []
        try:
            with self.locked():
                return self._save_locked(items, indexed or {}, written)
        except BaseException:
            for path in written:  # all or none: no unindexed CA key is left behind
                with contextlib.suppress(OSError):
                    path.unlink()
            if fresh:
                with contextlib.suppress(OSError):
                    (self.root / "index.lock").unlink()
                for folder in fresh:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise

    def _save_locked(
        self,
        items: list[tuple[str | None, x509.Certificate, pki.PrivateKey]],
        indexed: dict[str, str | None],
        written: list[Path],
    ) -> list[str]:
        index = self._index()
        for name, cert, _ in items:
            other = index.get(name) if name is not None else None
            before = indexed.get(name or "")
            if other is not None and other not in (before, pki.fingerprint(cert)) and self.has(other):
                raise KeystoreError(
                    f"{self.root}: another trustplan run generated CA {other} for authority {name!r} "
                    "while this plan was being made; this plan was not saved, and its CA was discarded",
                    hint="run `trustplan plan` again: it reuses that CA",
                )
        fps = []
        for name, cert, key in items:
            fp = pki.fingerprint(cert)
            pem = pki.key_to_pem(key)
            for path, data, mode in ((self.key_path(fp), self.sealer.seal(pem) if self.sealer else pem, 0o600),
                                     (self.root / f"{self._hex(fp)}.crt", pki.cert_to_pem(cert), 0o644)):
                new = not path.exists()
                write_atomic(path, data, mode=mode)
                if new:
                    written.append(path)
            if name is not None:
                index[name] = fp
            fps.append(fp)
        if any(name is not None for name, _, _ in items):
            write_atomic(
                self.root / "index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), mode=0o600
            )
        return fps


    def save_material(
        self, items: list[tuple[str | None, str, kubecreds.Material]], indexed: dict[str, str | None] | None = None
    ) -> None:
        """Store keys without a certificate (a service-account key, a secretbox key) and CAs of the
        control-plane-only kinds, by fingerprint: the secret sealed like a CA key (`<hex>.key`),
        the public part beside it (`<hex>.crt` for a CA, `<hex>.pub` otherwise, empty for secretbox)."""
        with self.locked():
            index = self._index()
            for name, fp, _ in items:
                other = index.get(name) if name is not None else None
                before = (indexed or {}).get(name or "")
                if other is not None and other not in (before, fp) and self.has(other):
                    raise KeystoreError(
                        f"{self.root}: another trustplan run generated {other} for authority {name!r} "
                        "while this plan was being made; this plan was not saved, and its key was discarded",
                        hint="run `trustplan plan` again: it reuses that key",
                    )
            for name, fp, m in items:
                assert m.secret is not None
                write_atomic(self.key_path(fp), self.sealer.seal(m.secret) if self.sealer else m.secret, mode=0o600)
                public = ".crt" if b"CERTIFICATE" in m.public else ".pub"
                if m.public:  # a secretbox key has no public part: no empty file beside it
                    write_atomic(self.root / f"{self._hex(fp)}{public}", m.public, mode=0o644)
                if name is not None:
                    index[name] = fp
            if any(name is not None for name, _, _ in items):
                write_atomic(
                    self.root / "index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), mode=0o600
                )

    def load_material(self, fp: str, kind: PKI) -> kubecreds.Material:
        """A key stored by save_material (or a CA stored by save), checked against its fingerprint."""
        key_path = self.key_path(fp)
        public_path = next(
            (p for p in (self.root / f"{self._hex(fp)}.crt", self.root / f"{self._hex(fp)}.pub") if p.exists()),
            None,
        )
        if not key_path.exists():
            raise KeystoreError(
                f"{key_path}: the key {fp} is missing from the keystore",
                hint="restore the keystore directory from backup, or make a new plan",
            )
        try:
            secret = read_regular(key_path, what="key")
            public = read_regular(public_path, what="public part of a key") if public_path is not None else b""
        except InputError as exc:
            raise KeystoreError(str(exc), hint="restore the keystore directory from backup") from None
        if self.sealer is not None:
            secret = self.sealer.open(secret, str(key_path))
        m = kubecreds.Material(public, secret, kubecreds.secretbox_name(fp) if kind == "encryption" else None)
        if kubecreds.fingerprint(kind, m) != fp:
            raise KeystoreError(f"{key_path}: the key in the keystore does not match {fp}")
        return m

#: the file that marks `<keystore>.rekey` complete (written last, after every key)
REKEY_DONE = ".rekey-complete"


def _rekey_dir(root: Path) -> Path:
    return root.with_name(root.name + ".rekey")


def _old_dir(root: Path) -> Path:
    return root.with_name(root.name + ".old")


def resume_rekey(root: Path) -> str | None:
    """Finish or undo what a killed rekey left: a complete new keystore not yet in place is put in
    place; a partial one is removed (the old keystore is whole); the old one left after the swap is
    removed. What was done, for a message (None: nothing was left)."""
    new, old = _rekey_dir(root), _old_dir(root)
    done = None
    if new.exists():
        if (new / REKEY_DONE).exists():
            if root.exists():
                os.rename(root, old)
            os.rename(new, root)
            done = "finished the re-encryption a stopped `keystore rekey` had written"
        else:
            shutil.rmtree(new)
            done = "removed the partial re-encryption a stopped `keystore rekey` left (the keystore was whole)"
    (root / REKEY_DONE).unlink(missing_ok=True)
    if old.exists():
        shutil.rmtree(old)
    return done


def rekey(store: Keystore, keys: dict[str, pki.PrivateKey], after_each: Callable[[str], None] | None = None) -> None:
    """Re-encrypt `keys` (every key of `store`) with `store.sealer` into a new keystore beside it,
    then put that in place. `after_each` is called after each key is written (tests stop it there)."""
    assert store.sealer is not None
    root, new = store.root, _rekey_dir(store.root)
    with store.locked():
        if new.exists():
            shutil.rmtree(new)
        ensure_dir(new)
        os.chmod(new, 0o700)
        for path in sorted(root.iterdir()):  # certificates, the index, anything else: as they are
            if path.name == "index.lock" or path.name.endswith((".key", ".key.age")) or not path.is_file():
                continue
            write_atomic(new / path.name, read_regular(path), mode=path.stat().st_mode & 0o777)
        for fp, key in keys.items():
            sealed = store.sealer.seal(pki.key_to_pem(key))  # encrypted in memory; only ciphertext is written
            write_atomic(new / store.key_path(fp).name, sealed, mode=0o600)
            if after_each is not None:
                after_each(fp)
        write_atomic(new / REKEY_DONE, b"", mode=0o600)
        os.rename(root, _old_dir(root))
        os.rename(new, root)
    resume_rekey(root)  # removes the old keystore and the mark


def _missing(folder: Path) -> list[Path]:
    """The folders that do not exist yet on the way to `folder`, deepest first."""
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink() and p.parent != p:
        missing.append(p)
        p = p.parent
    return missing

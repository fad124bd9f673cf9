"""`cluster.etcd.ca` as a trust bundle: how trustplan reads, checks and writes the etcd CA field.

Talos has no accepted list for the etcd CA; it writes the field's `crt` verbatim to etcd's CA file (so
every block is trusted, by peers and clients alike) and issues every etcd leaf from its FIRST block
with `key` (docs/talos-model.md, "The etcd CA"). So the field holds the issuer first, then the CAs it
also accepts, and the key of the first. Talos validates none of this (`talosctl validate --strict`
accepts a garbage block or a key of another CA), so `check` does:

    check(crt, key, source, path, now)   every block a usable CA, nothing else in crt, key of the first
    read(doc)                            EtcdTrust(issuer, accepted, issuer_has_key) or None (a worker)
    write(doc, issuer, key, accepted)    set the field: issuer first, then the accepted CAs
    rotation_values(old, new)            the field's value in each phase of the graceful rotation
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from trustplan.errors import CAError
from trustplan.talos import pki

FIELD = "cluster.etcd.ca"
ALGORITHMS = ("ecdsa-p256", "rsa")  # what Talos's NewEtcdCA and an imported etcd CA may use


@dataclass(frozen=True)
class EtcdTrust:
    """The etcd CA field of one control plane, by fingerprint: the issuing CA (first block) and the
    other CAs its members trust (the rest)."""

    issuer: str
    accepted: tuple[str, ...]
    issuer_has_key: bool

    @property
    def trusted(self) -> frozenset[str]:
        return frozenset((self.issuer, *self.accepted))


def _without_blocks(crt: bytes) -> bytes:
    rest = crt
    for block in pki.split_pem_bundle(crt):
        rest = rest.replace(block.rstrip(b"\n"), b"", 1)
    return rest.strip()


def check(crt: bytes, key: bytes | None, source: str, path: str = FIELD,
          now: dt.datetime | None = None) -> list[x509.Certificate]:
    """The certificates of the field, issuer first; CAError naming source and path when a block is no
    usable CA, when anything but certificates is in `crt`, when a CA is listed twice, or when `key`
    does not match the first block (Talos would sign leaves nobody can verify)."""
    now = now or pki.utcnow()
    blocks = pki.split_pem_bundle(crt)
    if not blocks:
        raise CAError(source, "holds no PEM certificate", path=f"{path}.crt")
    if _without_blocks(crt):
        raise CAError(source, "holds something besides PEM certificates (etcd would refuse to start)",
                      path=f"{path}.crt")
    certs = [pki.load_cert_pem(block, source, f"{path}.crt") for block in blocks]
    seen: set[str] = set()
    for k, cert in enumerate(certs):
        where = f"{path}.crt[{k}]"
        alg = pki.algorithm_name(cert.public_key())
        if alg not in ALGORITHMS:
            raise CAError(source, f"an etcd CA cannot use {alg} (allowed: {', '.join(ALGORITHMS)})", path=where)
        pki.check_ca(cert, None, "kubernetes", now, source, where)
        fp = pki.fingerprint(cert)
        if fp in seen:
            raise CAError(source, f"lists CA {pki.short(fp)} twice", path=where)
        seen.add(fp)
    if key is not None and not pki.key_matches(certs[0], pki.load_key_pem(key, source, f"{path}.key")):
        raise CAError(source, "the key does not match the first certificate, the one Talos issues etcd "
                      "certificates from (put the CA that goes with the key first)", path=f"{path}.key")
    return certs


def read(doc: Any, source: str) -> EtcdTrust | None:
    """The field of a parsed v1alpha1 config document, or None when it has none (a worker)."""
    ca = ((doc or {}).get("cluster") or {}).get("etcd", {}) or {}
    ca = ca.get("ca") if isinstance(ca, dict) else None
    if not isinstance(ca, dict) or not ca.get("crt"):
        return None
    crt = pki.b64decode_pem(ca["crt"], source, f"{FIELD}.crt")
    key = pki.b64decode_pem(ca["key"], source, f"{FIELD}.key") if ca.get("key") else None
    certs = check(crt, key, source)
    fps = [pki.fingerprint(c) for c in certs]
    return EtcdTrust(fps[0], tuple(fps[1:]), key is not None)


def bundle(issuer_pem: bytes, accepted: list[bytes]) -> bytes:
    """The `crt` value: the issuer first, then each accepted CA once (the issuer never twice)."""
    return pki.pem_bundle([issuer_pem, *accepted])


def write(doc: Any, issuer_pem: bytes, key_pem: bytes, accepted: list[bytes]) -> None:
    """Set the field of a parsed v1alpha1 document in place (base64 of PEM, as Talos writes it)."""
    crt = bundle(issuer_pem, accepted)
    check(crt, key_pem, "<new etcd CA field>")
    etcd = doc.setdefault("cluster", {}).setdefault("etcd", {})
    etcd["ca"] = {"crt": base64.b64encode(crt).decode(), "key": base64.b64encode(key_pem).decode()}


def rotation_values(old: tuple[bytes, bytes], new: tuple[bytes, bytes]) -> dict[str, tuple[bytes, bytes]]:
    """(crt, key) of the field in each phase of the graceful rotation (old, new: crt PEM, key PEM):
    accept trusts both and still issues from the old CA, swap issues from the new one and still trusts
    the old, remove trusts the new one alone."""
    return {
        "accept": (bundle(old[0], [new[0]]), old[1]),
        "swap": (bundle(new[0], [old[0]]), new[1]),
        "remove": (bundle(new[0], []), new[1]),
    }

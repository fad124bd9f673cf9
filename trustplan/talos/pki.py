"""CA material: load, check and encode certificates and keys the way Talos does (making them is
trustplan.talos.certgen).

Talos stores certificates and keys as base64 of the PEM text, and identifies CA entries by the exact
PEM bytes. trustplan identifies a CA by `sha256:<hex>` of its DER certificate and keeps the PEM bytes
it read so that it can write an entry back unchanged.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustplan.errors import CAError

# re-exported for the layers below the planner's reach (providers/, state/)
from trustplan.planner.model import PKI as PKI
from trustplan.planner.model import PKIS as PKIS
from trustplan.planner.timestamps import iso_time as iso_time
from trustplan.talos.fingerprint import sha256_fingerprint

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

EXPIRY_WARNING = dt.timedelta(days=90)
#: Certificates are back-dated a little so that clocks a few seconds apart do not refuse them.
BACKDATE = dt.timedelta(minutes=5)

#: Key algorithms a CA of each PKI may use (Talos: Ed25519 by default; Kubernetes: ECDSA P-256).
ALLOWED_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "talos": ("ed25519", "ecdsa-p256", "rsa"),
    "kubernetes": ("ecdsa-p256", "rsa"),
}
_ED25519_HEADER = "ED25519 PRIVATE KEY"
#: The smallest RSA key trustplan accepts for a CA.
MIN_RSA_BITS = 2048


_READ: dict[bytes, CACert] = {}  # CACert.from_pem, by PEM bytes (CACert is immutable)


@dataclass(frozen=True)
class CACert:
    """A CA certificate as found somewhere, with the exact PEM bytes it was read with."""

    pem: bytes
    cert: x509.Certificate = field(compare=False, repr=False)
    fingerprint: str

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "<certificate>") -> CACert:
        """The CA in `pem` (exactly one certificate). The same few CAs are read from every node's
        config, several times a run: a successful read is remembered by its bytes."""
        found = _READ.get(pem)
        if found is None:
            cert = load_cert_pem(pem, source)
            found = cls(pem=pem, cert=cert, fingerprint=fingerprint(cert))
            if len(_READ) < 4096:
                _READ[pem] = found
        return found

    @classmethod
    def from_cert(cls, cert: x509.Certificate) -> CACert:
        return cls(pem=cert_to_pem(cert), cert=cert, fingerprint=fingerprint(cert))

    @property
    def algorithm(self) -> str:
        return algorithm_name(self.cert.public_key())

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def fingerprint(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the DER certificate: how trustplan names a CA."""
    return sha256_fingerprint(cert.public_bytes(serialization.Encoding.DER))


def short(fp: str) -> str:
    """A fingerprint shortened for tables: `sha256:1a2b3c4d5e6f`."""
    return fp[: len("sha256:") + 12]


def algorithm_name(key: object) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ecdsa-" + {"secp256r1": "p256", "secp384r1": "p384"}.get(key.curve.name, key.curve.name)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "rsa"
    return type(key).__name__


# --- encodings -------------------------------------------------------------------------------


def b64encode_pem(pem: bytes) -> str:
    """The Talos encoding of a PEM blob inside YAML: standard base64 of the whole PEM text."""
    return base64.b64encode(pem).decode("ascii")


def b64decode_pem(value: object, source: str, path: str) -> bytes:
    """Decode a base64-of-PEM field; the error names the file and the YAML path."""
    if not isinstance(value, str):
        raise CAError(source, f"expected a base64 string, got {type(value).__name__}", path=path)
    if value == "******":
        raise CAError(source, "the value is redacted ('******'); trustplan needs the real data", path=path)
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CAError(source, f"not valid base64 ({exc})", path=path) from None
    if b"-----BEGIN " not in data:
        raise CAError(source, "base64 decodes to something that is not PEM text", path=path)
    return data


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: PrivateKey) -> bytes:
    """Encode a key the way Talos writes it: `ED25519 PRIVATE KEY` (PKCS#8 body), `EC PRIVATE KEY`."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        body = base64.encodebytes(der).decode("ascii").replace("\n", "")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return (
            f"-----BEGIN {_ED25519_HEADER}-----\n" + "\n".join(lines) + f"\n-----END {_ED25519_HEADER}-----\n"
        ).encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def key_to_pkcs8_pem(key: PrivateKey) -> bytes:
    """Standard `PRIVATE KEY` PEM, for libraries (OpenSSL, ssl) that do not know Talos's header."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_cert_pem(pem: bytes, source: str, path: str | None = None) -> x509.Certificate:
    """Exactly one PEM certificate (a bundle is split with split_pem_bundle first)."""
    count = pem.count(b"-----BEGIN CERTIFICATE-----")
    if count > 1:
        raise CAError(
            source, f"holds {count} certificates where one is expected (only the first would be used)", path=path
        )
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CAError(source, f"not a valid PEM certificate ({exc})", path=path) from None


def load_key_pem(pem: bytes, source: str, path: str | None = None) -> PrivateKey:
    """Load a private key, accepting Talos's non-standard `ED25519 PRIVATE KEY` header."""
    text = pem.decode("ascii", errors="replace")
    try:
        if f"-----BEGIN {_ED25519_HEADER}-----" in text:
            body = text.split(f"-----BEGIN {_ED25519_HEADER}-----", 1)[1].split("-----END", 1)[0]
            key = serialization.load_der_private_key(base64.b64decode("".join(body.split())), password=None)
        else:
            key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, binascii.Error) as exc:
        reason = str(exc).split("\n")[0].split(". See https://")[0] or type(exc).__name__
        raise CAError(source, f"not a valid unencrypted PEM private key ({reason})", path=path) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(source, f"unsupported key type {type(key).__name__}", path=path)
    return key


def split_pem_bundle(data: bytes) -> list[bytes]:
    """Split concatenated PEM certificates into their blocks (each with a trailing newline)."""
    blocks: list[bytes] = []
    marker = b"-----END CERTIFICATE-----"
    rest = data
    while marker in rest:
        head, rest = rest.split(marker, 1)
        start = head.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(head[start:] + marker + b"\n")
    return blocks


def bundle_fingerprints(bundle: bytes, source: str = "<certificate>") -> tuple[str, ...]:
    """The fingerprints of the certificates in a PEM bundle, in order; CAError naming `source` for a
    block that is no certificate."""
    return tuple(CACert.from_pem(pem, source).fingerprint for pem in split_pem_bundle(bundle))


def pem_bundle(pems: list[bytes]) -> bytes:
    """Concatenate PEM certificates into one CA bundle, each once (by fingerprint), newline-ended."""
    seen: set[str] = set()
    out: list[bytes] = []
    for pem in pems:
        fp = fingerprint(load_cert_pem(pem, "<ca>"))
        if fp not in seen:
            seen.add(fp)
            out.append(pem if pem.endswith(b"\n") else pem + b"\n")
    return b"".join(out)


# --- checks ----------------------------------------------------------------------------------


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    pub = key.public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == pub.public_bytes(*fmt))


def check_ca(
    cert: x509.Certificate,
    key: PrivateKey | None,
    pki: PKI,
    now: dt.datetime,
    source: str,
    path: str | None = None,
) -> list[str]:
    """Raise CAError if the cert cannot serve as this PKI's CA; return warnings (expiring soon)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError(source, "certificate is not a CA (basicConstraints CA:true is missing)", path=path)
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CAError(
            source, "CA certificate has no keyUsage extension (keyCertSign is required)", path=path
        ) from None
    if not ku.key_cert_sign:
        raise CAError(source, "CA certificate may not sign certificates (keyUsage lacks keyCertSign)", path=path)
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise CAError(
            source, f"RSA key of {public.key_size} bits is too weak for a CA (at least {MIN_RSA_BITS})", path=path
        )
    if cert.not_valid_after_utc <= now:
        raise CAError(source, f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", path=path)
    if cert.not_valid_before_utc > now + BACKDATE:
        raise CAError(
            source, f"certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", path=path
        )
    alg = algorithm_name(cert.public_key())
    if alg not in ALLOWED_ALGORITHMS[pki]:
        allowed = ", ".join(ALLOWED_ALGORITHMS[pki])
        raise CAError(source, f"a {pki} CA cannot use {alg} (allowed: {allowed})", path=path)
    if key is not None and not key_matches(cert, key):
        raise CAError(source, "the private key does not match the certificate's public key", path=path)
    warnings = []
    left = cert.not_valid_after_utc - now
    if left < EXPIRY_WARNING:
        warnings.append(f"{source}: CA expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d})")
    return warnings


def verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if `cert` carries a valid signature by `issuer` (and names it as issuer)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def utcnow() -> dt.datetime:
    """Now, in UTC, to the second (certificates carry whole seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)

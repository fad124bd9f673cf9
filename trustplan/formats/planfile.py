"""plan.bin: a versioned, integrity-checked container for the canonical plan document.

    offset  size  content
    0       10    magic b"TRUSTPLAN\\0"
    10      2     format version, big-endian (1)
    12      4     length N of the document, big-endian
    16      N     the plan document: canonical JSON (sorted keys, no spaces, UTF-8)
    16+N    32    SHA-256 of bytes [0, 16+N)
    48+N    100   optional signature: b"SIG\\0", the signer's Ed25519 public key (32 bytes) and its
                  signature (64 bytes) over bytes [0, 48+N)

The document binds the plan to what it was computed from: every node's live config digest, the
state lineage and serial, the desired-state digest, the tool version, and an expiry. It never holds
a private key. A flipped byte anywhere fails the digest (or the magic, or the length).

    new(plan, bindings, paths, rollout) -> SavedPlan   a fresh plan, its document schema-checked
    encode(saved, signing_key) -> bytes                the file
    decode(data, source) -> SavedPlan                  container, JSON, schema, structure, then typed
    read(path) -> SavedPlan
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from trustplan import __version__, schemas
from trustplan.errors import PlanFileError
from trustplan.formats import savedplan
from trustplan.formats.plancheck import check_structure
from trustplan.formats.savedplan import Bindings, PlanRollout, SavedPlan
from trustplan.planner import Plan
from trustplan.planner.ops import OutputKind
from trustplan.planner.timestamps import iso_time
from trustplan.talos.fingerprint import sha256_fingerprint

MAGIC = b"TRUSTPLAN\0"
SIG_MAGIC = b"SIG\0"
_SIG_SIZE = len(SIG_MAGIC) + 32 + 64
FORMAT_VERSION = savedplan.FORMAT_VERSION
_HEADER = struct.Struct(">10sHI")


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def new(
    plan: Plan,
    bindings: Bindings,
    paths: dict[OutputKind, str],
    rollout: PlanRollout | None,
    format_minor: int = savedplan.FORMAT_MINOR,
) -> SavedPlan:
    """A freshly made plan as it will be saved (its document checked against the plan schema)."""
    bindings = dataclasses.replace(  # the document keeps whole seconds: so does the typed plan
        bindings, created=bindings.created.replace(microsecond=0), expires=bindings.expires.replace(microsecond=0)
    )
    doc = savedplan.document(plan, bindings, paths, rollout, format_minor)
    validate_document(doc, "plan")
    return SavedPlan(
        plan=plan,
        bindings=bindings,
        outputs=tuple(savedplan.SavedOutput(o, paths.get(o.output)) for o in plan.outputs),
        rollout=rollout,
        format_minor=format_minor,
        document=canonical_json(doc),
    )


def encode(saved: SavedPlan, signing_key: ed25519.Ed25519PrivateKey | None = None) -> bytes:
    """The plan file of a saved plan (signed with `signing_key` if given)."""
    return _container(saved.document, signing_key)


def encode_document(document: dict[str, Any], signing_key: ed25519.Ed25519PrivateKey | None = None) -> bytes:
    """A plan file around any document (tests craft doctored plans with it)."""
    return _container(canonical_json(document), signing_key)


def _container(body: bytes, signing_key: ed25519.Ed25519PrivateKey | None) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    data = head + hashlib.sha256(head).digest()
    if signing_key is not None:
        public = signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        data += SIG_MAGIC + public + signing_key.sign(data)
    return data


def signer(data: bytes) -> bytes | None:
    """The raw Ed25519 public key that signed an (already decoded) plan file, or None if unsigned."""
    if len(data) < _HEADER.size:
        return None
    end = _HEADER.size + _HEADER.unpack_from(data)[2] + 32
    if len(data) != end + _SIG_SIZE or data[end : end + len(SIG_MAGIC)] != SIG_MAGIC:
        return None
    return data[end + len(SIG_MAGIC) : end + len(SIG_MAGIC) + 32]


def key_fingerprint(public: bytes) -> str:
    return sha256_fingerprint(public)


def check_signature(data: bytes, source: str, trusted: ed25519.Ed25519PublicKey) -> None:
    """Refuse a plan that is unsigned or not signed by `trusted` (desired state `planSigning`)."""
    want = trusted.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    got = signer(data)
    if got is None:
        raise PlanFileError(
            f"{source}: the plan is not signed, and planSigning requires a signature",
            hint="make the plan with `trustplan plan -o plan.bin --sign-key KEY`; nothing was changed",
        )
    if got != want:
        raise PlanFileError(
            f"{source}: the plan is signed by key {key_fingerprint(got)}, not by the "
            f"planSigning key {key_fingerprint(want)}",
            hint="apply only plans made by the signer you trust (e.g. your CI); nothing was changed",
        )
    try:
        trusted.verify(data[-64:], data[: -(len(SIG_MAGIC) + 32 + 64)])
    except InvalidSignature:
        raise PlanFileError(
            f"{source}: the plan's signature is not valid; it has been modified",
            hint="re-create it with `trustplan plan -o ... --sign-key KEY` and review it again",
        ) from None


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key (PEM) to sign plans with."""
    from trustplan.errors import InputError
    from trustplan.system.safeio import read_regular
    from trustplan.talos import pki

    data = read_regular(path, what="signing key file")
    if b"PRIVATE KEY-----" not in data:
        raise InputError(str(path), "not a PEM private key: --sign-key takes the Ed25519 private key that signs "
                         "plans", hint="make one with `openssl genpkey -algorithm ed25519 -out plan-signing.pem`")
    key = pki.load_key_pem(data, str(path))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(str(path), f"plans are signed with Ed25519 keys, not {pki.algorithm_name(key)}")
    return key


def load_verify_key(path: Path, source: str) -> ed25519.Ed25519PublicKey:
    """The Ed25519 public key (PEM) of `planSigning.publicKey`."""
    from trustplan.errors import InputError
    from trustplan.system.safeio import read_regular

    data = read_regular(path, source, "planSigning public key file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InputError(source, f"{path} is not a PEM public key ({exc})", path="planSigning.publicKey") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(source, f"{path} is not an Ed25519 public key", path="planSigning.publicKey")
    return key


def decode(data: bytes, source: str) -> SavedPlan:
    """Check magic, version, length, digest (and a signature's shape), the JSON, the plan schema and
    the document's structure; return the typed plan. Never partially trusts input: anything wrong
    is one PlanFileError naming the file and where. Whether the signature is valid is
    check_signature's job."""
    if len(data) < _HEADER.size + 32 or data[:10] != MAGIC:
        raise PlanFileError(
            f"{source}: not a trustplan plan file (bad magic)", hint="make one with `trustplan plan -o plan.bin`"
        )
    magic, version, length = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise PlanFileError(
            f"{source}: plan file format version {version} is not supported (this trustplan reads version "
            f"{FORMAT_VERSION})",
            hint=f"re-run `trustplan plan` with trustplan {__version__}",
        )
    end = _HEADER.size + length + 32
    signed = len(data) == end + _SIG_SIZE and data[end : end + len(SIG_MAGIC)] == SIG_MAGIC
    if len(data) != end and not signed:
        raise PlanFileError(
            f"{source}: plan file is truncated or has extra bytes; it has been modified",
            hint="re-create it with `trustplan plan -o ...`",
        )
    head, digest = data[: end - 32], data[end - 32 : end]
    if hashlib.sha256(head).digest() != digest:
        raise PlanFileError(
            f"{source}: plan file digest does not match its content; it has been modified",
            hint="re-create it with `trustplan plan -o ...` and review it again",
        )
    try:
        doc: dict[str, Any] = json.loads(head[_HEADER.size :].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PlanFileError(
            f"{source}: plan document is not valid JSON ({exc})", hint="re-create it with `trustplan plan -o ...`"
        ) from None
    except RecursionError:
        raise PlanFileError(
            f"{source}: plan document is nested too deeply to be a plan",
            hint="re-create it with `trustplan plan -o ...`",
        ) from None
    if not isinstance(doc, dict):
        raise PlanFileError(f"{source}: plan document is not a JSON object",
                            hint="re-create it with `trustplan plan -o ...`")
    validate_document(doc, source)
    check_structure(doc, source)
    key = signer(data)
    return savedplan.from_document(doc, head[_HEADER.size :], key_fingerprint(key) if key is not None else None)


def validate_document(doc: dict[str, Any], source: str) -> None:
    if schemas.is_valid("plan", doc):
        return
    import jsonschema  # ~0.1 s: only to word the error of an invalid document

    try:
        schemas.validator("plan").validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise PlanFileError(
            f"{source}: plan document does not match the plan schema at {where}: {exc.message}",
            hint="it was not made by this trustplan, or was edited; re-create it with `trustplan plan -o ...`",
        ) from None
    except RecursionError:
        raise PlanFileError(f"{source}: plan document is nested too deeply to be a plan",
                            hint="re-create it with `trustplan plan -o ...`") from None


def read_bytes(path: Path) -> bytes:
    """The bytes of a plan file: a regular file, not a folder, FIFO or device."""
    from trustplan.system.safeio import read_regular

    if not path.exists() and not path.is_symlink():
        raise PlanFileError(f"{path}: plan file not found", hint="make one with `trustplan plan -o plan.bin`")
    return read_regular(path, what="plan file", hint="give the plan file made by `trustplan plan -o plan.bin`")


def read(path: Path) -> SavedPlan:
    return decode(read_bytes(path), str(path))


def check_expiry(saved: SavedPlan, now: dt.datetime, source: str) -> None:
    if now >= saved.bindings.expires:
        raise PlanFileError(
            f"{source}: plan expired at {iso_time(saved.bindings.expires)}",
            hint="make a fresh plan with `trustplan plan -o ...` and review it again",
        )


#: The longest duration trustplan accepts (plan expiry, lock timeout): a year.
MAX_DURATION = dt.timedelta(days=366)


def parse_duration(text: str, maximum: dt.timedelta = MAX_DURATION) -> dt.timedelta:
    """`72h`, `30m`, `3d`, `90s` -> timedelta, at most `maximum`; raises ValueError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isascii() or not text[:-1].isdigit() \
            or int(text[:-1]) <= 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 72h, 30m, 7d)")
    digits = text[:-1].lstrip("0")
    if len(digits) > 12 or int(digits) * units[text[-1]] > maximum.total_seconds():
        raise ValueError(f"duration {text!r} is too long (at most {maximum.days}d)")
    return dt.timedelta(seconds=int(digits) * units[text[-1]])

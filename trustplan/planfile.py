"""plan.bin: a versioned, integrity-checked container for the canonical plan document.

    offset  size  content
    0       10    magic b"TRUSTPLAN\\0"
    10      2     format version, big-endian (1)
    12      4     length N of the document, big-endian
    16      N     the plan document: canonical JSON (sorted keys, no spaces, UTF-8)
    16+N    32    SHA-256 of bytes [0, 16+N)

The document binds the plan to what it was computed from: every node's live config digest, the
state lineage and serial, the desired-state digest, the tool version, and an expiry. It never holds
a private key. A flipped byte anywhere fails the digest (or the magic, or the length).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import jsonschema

from trustplan import __version__, schemas
from trustplan.errors import PlanFileError

MAGIC = b"TRUSTPLAN\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">10sHI")


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(document: dict[str, Any]) -> bytes:
    body = canonical_json(document)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + hashlib.sha256(head).digest()


def decode(data: bytes, source: str) -> dict[str, Any]:
    """Check magic, version, length and digest; return the document. Never partially trusts input."""
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
    if len(data) != _HEADER.size + length + 32:
        raise PlanFileError(
            f"{source}: plan file is truncated or has extra bytes; it has been modified",
            hint="re-create it with `trustplan plan -o ...`",
        )
    head, digest = data[:-32], data[-32:]
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
    validate_document(doc, source)
    return doc


def validate_document(doc: dict[str, Any], source: str) -> None:
    try:
        schemas.validator("plan").validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise PlanFileError(
            f"{source}: plan document does not match the plan schema at {where}: {exc.message}",
            hint="it was not made by this trustplan, or was edited; re-create it with `trustplan plan -o ...`",
        ) from None


def read(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PlanFileError(f"{path}: plan file not found", hint="make one with `trustplan plan -o plan.bin`") from None
    return decode(data, str(path))


def check_expiry(doc: dict[str, Any], now: dt.datetime, source: str) -> None:
    expires = dt.datetime.strptime(doc["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    if now >= expires:
        raise PlanFileError(
            f"{source}: plan expired at {doc['expires']}",
            hint="make a fresh plan with `trustplan plan -o ...` and review it again",
        )


def parse_duration(text: str) -> dt.timedelta:
    """`72h`, `30m`, `3d`, `90s` -> timedelta; raises ValueError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 72h, 30m, 7d)")
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])

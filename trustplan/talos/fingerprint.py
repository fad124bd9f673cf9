"""`sha256:<hex>`, the one way trustplan names what it hashes: a CA (its DER certificate), a machine
config, the desired state, a plan file's signing key, a saved plan."""

from __future__ import annotations

import hashlib


def sha256_fingerprint(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

"""The key ring: CA certificates and keys by fingerprint, from a plan's material and the keystore
(plan's dry run and apply's rewrites look keys up here)."""

from __future__ import annotations

from trustplan.engine.authorities import Material
from trustplan.errors import KeystoreError
from trustplan.formats.keystore import Keystore
from trustplan.talos import pki


class KeyRing:
    """CA certificates and keys by fingerprint: the plan's material plus the keystore."""

    def __init__(self, material: dict[str, Material], keystore: Keystore | None) -> None:
        self.material = material
        self.keystore = keystore

    def ca(self, fp: str) -> pki.CACert:
        if fp in self.material:
            return self.material[fp].ca
        raise KeystoreError(f"CA {fp} is unknown to this plan")

    def cert_pem(self, fp: str) -> bytes:
        return self.ca(fp).pem

    def key(self, fp: str) -> pki.PrivateKey:
        m = self.material.get(fp)
        if m is not None and m.key is not None:
            return m.key
        if self.keystore is not None:
            ca, key = self.keystore.load(fp)
            self.material[fp] = Material(ca, m.pki if m else "talos", "generate", m.name if m else None, key)
            return key
        raise KeystoreError(f"no private key for CA {fp}")

    def key_pem(self, fp: str) -> bytes:
        return pki.key_to_pem(self.key(fp))

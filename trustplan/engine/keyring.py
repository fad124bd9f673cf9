"""The key ring: CA certificates and keys by fingerprint, from a plan's material and the keystore
(plan's dry run and apply's rewrites look keys up here); also the keys of the control-plane-only
kinds (a service-account signing key, a secretbox key) that have no certificate."""

from __future__ import annotations

from trustplan.engine.authorities import KeyMaterial, Material
from trustplan.errors import KeystoreError
from trustplan.formats.keystore import Keystore
from trustplan.planner.model import KINDS, PKI
from trustplan.talos import kubecreds, pki


class KeyRing:
    """CA certificates and keys by fingerprint: the plan's material plus the keystore."""

    def __init__(
        self, material: dict[str, Material], keystore: Keystore | None, keys: dict[str, KeyMaterial] | None = None
    ) -> None:
        self.material = material
        self.keystore = keystore
        self.keys = keys if keys is not None else {}

    def material_for(self, kind: PKI, fp: str) -> kubecreds.Material:
        """An authority of a control-plane-only kind with its secret (the plan's, else the keystore's)."""
        k = self.keys.get(fp)
        if k is not None and k.has_secret:
            return k.material
        if self.keystore is not None:
            m = self.keystore.load_material(fp, kind)
            self.keys[fp] = KeyMaterial(kind, "generate", k.name if k else None, m)
            return m
        raise KeystoreError(f"no secret for {KINDS[kind].name} {fp}")

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

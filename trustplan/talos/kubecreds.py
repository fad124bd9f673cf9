"""The control-plane-only Kubernetes credentials in a machine config: the aggregator CA, the
service-account signing key and the encryption-at-rest (secretbox) key, in either layout.

- 1.14 documents (pkg/machinery/config/types/k8s, Talos v1.14.1):
  `KubeAggregatorCAConfig` {issuingCA: {cert, key}, acceptedCAs: [PEM]} (aggregator_ca.go);
  `KubeServiceAccountConfig` {issuer: {privateKey, issuerURL}, accepted: {publicKeys: [PEM]}}
  (service_account.go; the issuing key's public key is accepted implicitly);
  `KubeEtcdEncryptionConfig` {config: <EncryptionConfiguration>} (etcd_encryption.go): the keys of
  the first `secretbox` provider of the first resource block; the first key encrypts, every key
  decrypts (kube-apiserver's rule).
- legacy v1alpha1 single values: `cluster.aggregatorCA` {crt, key}, `cluster.serviceAccount.key`,
  `cluster.secretboxEncryptionSecret` (nothing to accept into). Talos refuses a config that has
  both (V1Alpha1ConflictValidate in each document's file).

`moved` turns a legacy value into its 1.14 document with the same meaning: the same issuer, and for
the service-account key the issuer URL Talos derives from `cluster.controlPlane.endpoint`
(v1alpha1_k8s_bridge.go, serviceAccountShim), for the encryption key the configuration Talos builds
from the legacy secret (internal/.../k8stemplates/apiserver.go: secretbox key "key2", then identity).
Pure: reads and returns documents (dicts); machineconfig writes them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trustplan.errors import InputError
from trustplan.planner.model import PKI
from trustplan.talos import certgen, pki
from trustplan.talos.fingerprint import sha256_fingerprint

#: "field": a kind whose only home is a v1alpha1 field (the etcd CA, cluster.etcd.ca, read as a bundle)
Layout = Literal["document", "legacy", "absent", "field"]
DOC_KINDS: dict[str, str] = {
    "aggregator": "KubeAggregatorCAConfig",
    "serviceaccount": "KubeServiceAccountConfig",
    "encryption": "KubeEtcdEncryptionConfig",
}
LEGACY_PATHS: dict[str, str] = {
    "aggregator": "cluster.aggregatorCA",
    "serviceaccount": "cluster.serviceAccount.key",
    "encryption": "cluster.secretboxEncryptionSecret",
}
#: the first Talos whose configs take the documents (the version contract's MultidocKubernetesConfig)
DOCUMENTS_SINCE = (1, 14)
SECRETBOX_KEY_BYTES = 32


@dataclass(frozen=True)
class Material:
    """One authority as a config holds it. `public`: a CA's certificate PEM, a signing key's public
    key PEM, b"" for a secretbox key; `secret`: the private key PEM / the 32 key bytes, or None when
    the config holds the public part only; `name`: a secretbox key's name in the configuration."""

    public: bytes
    secret: bytes | None = field(default=None, repr=False)
    name: str | None = None


@dataclass(frozen=True)
class KindFields:
    layout: Layout
    issuer: Material | None
    accepted: tuple[Material, ...] = ()


def fingerprint(kind: PKI, m: Material) -> str:
    """The identity the plan names: a CA's certificate fingerprint, a signing key's SHA-256 of its
    public key (DER SubjectPublicKeyInfo), a secretbox key's domain-separated SHA-256 (a digest of
    32 random bytes: it does not reveal the key)."""
    match kind:
        case "aggregator" | "talos" | "kubernetes" | "etcd":
            return pki.CACert.from_pem(m.public).fingerprint
        case "serviceaccount":
            der = serialization.load_pem_public_key(m.public).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return sha256_fingerprint(der)
        case "encryption":
            assert m.secret is not None
            return sha256_fingerprint(b"trustplan secretbox key v1\0" + m.secret)
        case _:
            assert_never(kind)


def secretbox_name(fp: str) -> str:
    """The name trustplan gives a secretbox key it makes (stable: from the key's fingerprint). The
    name is what etcd values carry in their `k8s:enc:secretbox:v1:<name>:` prefix."""
    return "trustplan-" + fp.removeprefix("sha256:")[:12]


def public_pem(private_pem: bytes, source: str, path: str) -> bytes:
    key = pki.load_key_pem(private_pem, source, path)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _doc(docs: list[Any], kind: PKI) -> int | None:
    want = DOC_KINDS[kind]
    return next((i for i, d in enumerate(docs) if isinstance(d, dict) and d.get("kind") == want), None)


def _pem(value: object, source: str, path: str) -> bytes:
    if not isinstance(value, str) or "-----BEGIN " not in value:
        raise InputError(source, "not a PEM string", path=path)
    return value.encode("utf-8")


def _secretbox(value: object, source: str, path: str) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(source, "not base64", path=path) from None
    if len(raw) != SECRETBOX_KEY_BYTES:
        raise InputError(source, f"a secretbox key is {SECRETBOX_KEY_BYTES} bytes, this one {len(raw)}", path=path)
    return raw


def secretbox_keys(doc: dict[str, Any], source: str) -> tuple[list[Any], str]:
    """The key list of the first secretbox provider of the first resource block, and its path."""
    kind = DOC_KINDS["encryption"]
    resources = ((doc.get("config") or {}).get("resources")) or []
    for r, block in enumerate(resources):
        for p, entry in enumerate((block or {}).get("providers") or []):
            if isinstance(entry, dict) and isinstance(entry.get("secretbox"), dict):
                keys = entry["secretbox"].setdefault("keys", [])
                if keys is None:
                    keys = entry["secretbox"]["keys"] = []
                if not isinstance(keys, list):
                    raise InputError(source, "keys is not a list", path=f"{kind}.config.resources[{r}]")
                return keys, f"{kind}.config.resources[{r}].providers[{p}].secretbox.keys"
    raise InputError(
        source,
        "no secretbox provider in the encryption configuration",
        path=f"{kind}.config",
        hint="trustplan rotates secretbox keys only",
    )


def read(docs: list[Any], v1alpha1: dict[str, Any], kind: PKI, source: str) -> KindFields:
    """One kind's fields, from whichever layout the config uses (a config with both is refused)."""
    if kind == "etcd":
        return _read_etcd(v1alpha1, source)
    cluster = v1alpha1.get("cluster") or {}
    index = _doc(docs, kind)
    legacy = _legacy_value(cluster, kind)
    if index is not None and legacy:
        raise InputError(
            source,
            f"set both in the v1alpha1 config ({LEGACY_PATHS[kind]}) and in a {DOC_KINDS[kind]} document",
            path=LEGACY_PATHS[kind],
            hint="Talos refuses such a config: keep it in the document",
        )
    if index is None:
        return _read_legacy(cluster, kind, source) if legacy else KindFields("absent", None)
    doc = docs[index]
    name = DOC_KINDS[kind]
    match kind:
        case "aggregator":
            issuing = doc.get("issuingCA") or {}
            issuer = None
            if issuing.get("cert"):
                key = _pem(issuing["key"], source, f"{name}.issuingCA.key") if issuing.get("key") else None
                issuer = Material(_pem(issuing["cert"], source, f"{name}.issuingCA.cert"), key)
            accepted = tuple(
                Material(_pem(e, source, f"{name}.acceptedCAs[{i}]"))
                for i, e in enumerate(doc.get("acceptedCAs") or [])
            )
            return KindFields("document", issuer, accepted)
        case "serviceaccount":
            private = (doc.get("issuer") or {}).get("privateKey")
            issuer = None
            if private:
                pem = _pem(private, source, f"{name}.issuer.privateKey")
                issuer = Material(public_pem(pem, source, f"{name}.issuer.privateKey"), pem)
            keys = ((doc.get("accepted") or {}).get("publicKeys")) or []
            accepted = tuple(Material(_pem(k, source, f"{name}.accepted.publicKeys[{i}]")) for i, k in enumerate(keys))
            return KindFields("document", issuer, accepted)
        case "encryption":
            keys, path = secretbox_keys(copy.deepcopy(doc), source)
            found = tuple(
                Material(
                    b"", _secretbox((k or {}).get("secret"), source, f"{path}[{i}].secret"), str((k or {}).get("name"))
                )
                for i, k in enumerate(keys)
            )
            return KindFields("document", found[0] if found else None, found[1:])
        case "talos" | "kubernetes" | "etcd":
            raise ValueError(f"{kind} is not read here (machineconfig.ca_fields)")
        case _:
            assert_never(kind)


def _read_etcd(v1alpha1: dict[str, Any], source: str) -> KindFields:
    """cluster.etcd.ca as a bundle (trustplan.talos.etcdca): the first block issues, with `key`."""
    from trustplan.talos import etcdca

    ca = ((v1alpha1.get("cluster") or {}).get("etcd") or {}).get("ca")
    if not isinstance(ca, dict) or not ca.get("crt"):
        return KindFields("absent", None)
    crt = pki.b64decode_pem(ca["crt"], source, f"{etcdca.FIELD}.crt")
    key = pki.b64decode_pem(ca["key"], source, f"{etcdca.FIELD}.key") if ca.get("key") else None
    certs = etcdca.check(crt, key, source)
    pems = [pki.cert_to_pem(c) for c in certs]
    return KindFields("field", Material(pems[0], key), tuple(Material(p) for p in pems[1:]))


def _legacy_value(cluster: dict[str, Any], kind: PKI) -> object:
    match kind:
        case "aggregator":
            return (cluster.get("aggregatorCA") or {}).get("crt")
        case "serviceaccount":
            return (cluster.get("serviceAccount") or {}).get("key")
        case "encryption":
            return cluster.get("secretboxEncryptionSecret")
        case _:
            return None


def _read_legacy(cluster: dict[str, Any], kind: PKI, source: str) -> KindFields:
    path = LEGACY_PATHS[kind]
    match kind:
        case "aggregator":
            ca = cluster["aggregatorCA"]
            cert = pki.b64decode_pem(ca["crt"], source, f"{path}.crt")
            key = pki.b64decode_pem(ca["key"], source, f"{path}.key") if ca.get("key") else None
            return KindFields("legacy", Material(cert, key))
        case "serviceaccount":
            key = pki.b64decode_pem(cluster["serviceAccount"]["key"], source, path)
            return KindFields("legacy", Material(public_pem(key, source, path), key))
        case "encryption":
            return KindFields(
                "legacy", Material(b"", _secretbox(cluster["secretboxEncryptionSecret"], source, path), "key2")
            )
        case _:
            raise ValueError(kind)


def write(doc: dict[str, Any], kind: PKI, fields: KindFields) -> dict[str, Any]:
    """A copy of the kind's 1.14 document holding `fields` (every other key kept)."""
    out: dict[str, Any] = copy.deepcopy(doc)
    issuer = fields.issuer
    match kind:
        case "aggregator":
            if issuer is not None:
                issuing = {"cert": issuer.public.decode()}
                if issuer.secret:
                    issuing["key"] = issuer.secret.decode()
                out["issuingCA"] = issuing
            out["acceptedCAs"] = [m.public.decode() for m in fields.accepted]
            if not out["acceptedCAs"]:
                del out["acceptedCAs"]
        case "serviceaccount":
            assert issuer is not None and issuer.secret is not None
            out.setdefault("issuer", {})["privateKey"] = issuer.secret.decode()
            accepted = dict(out.get("accepted") or {})
            accepted["publicKeys"] = [m.public.decode() for m in fields.accepted]
            if not accepted["publicKeys"]:
                del accepted["publicKeys"]
            if accepted:
                out["accepted"] = accepted
            else:
                out.pop("accepted", None)
        case "encryption":
            keys, _ = secretbox_keys(out, "<document>")
            keys[:] = [
                {"name": m.name, "secret": base64.b64encode(m.secret or b"").decode()}
                for m in ((issuer,) if issuer else ()) + fields.accepted
            ]
        case "talos" | "kubernetes" | "etcd":
            raise ValueError(kind)
        case _:
            assert_never(kind)
    return out


def write_legacy(v1alpha1: dict[str, Any], kind: PKI, fields: KindFields) -> dict[str, Any]:
    """A copy of the v1alpha1 document with the kind's legacy single value replaced by `fields.issuer`
    (a Talos before 1.14, `--allow-disruptive`): nothing can be accepted beside it."""
    issuer = fields.issuer
    if issuer is None or issuer.secret is None or fields.accepted:
        raise ValueError(f"{LEGACY_PATHS[kind]} holds one value with its key, nothing accepted")
    v1 = dict(v1alpha1)
    cluster = v1["cluster"] = dict(v1.get("cluster") or {})
    match kind:
        case "aggregator":
            cluster["aggregatorCA"] = {"crt": pki.b64encode_pem(issuer.public), "key": pki.b64encode_pem(issuer.secret)}
        case "serviceaccount":
            cluster["serviceAccount"] = {"key": pki.b64encode_pem(issuer.secret)}
        case "encryption":
            cluster["secretboxEncryptionSecret"] = base64.b64encode(issuer.secret).decode()
        case "talos" | "kubernetes" | "etcd":
            raise ValueError(kind)
        case _:
            assert_never(kind)
    return v1


def moved(v1alpha1: dict[str, Any], kind: PKI, fields: KindFields) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the v1alpha1 document without the legacy value, the new 1.14 document with the same meaning)."""
    v1 = dict(v1alpha1)
    cluster = v1["cluster"] = dict(v1.get("cluster") or {})
    doc: dict[str, Any] = {"apiVersion": "v1alpha1", "kind": DOC_KINDS[kind]}
    match kind:
        case "aggregator":
            cluster.pop("aggregatorCA", None)
        case "serviceaccount":
            cluster.pop("serviceAccount", None)
            endpoint = ((cluster.get("controlPlane") or {}).get("endpoint")) or ""
            doc["issuer"] = {"privateKey": "", "issuerURL": endpoint}
        case "encryption":
            cluster.pop("secretboxEncryptionSecret", None)
            doc["config"] = {
                "resources": [{"resources": ["secrets"], "providers": [{"secretbox": {"keys": []}}, {"identity": {}}]}]
            }
        case "talos" | "kubernetes" | "etcd":
            raise ValueError(kind)
        case _:
            assert_never(kind)
    return v1, write(doc, kind, KindFields("document", fields.issuer, fields.accepted))


def documents_supported(version: str | None) -> bool:
    """Whether a Talos version (e.g. "v1.14.1") takes the 1.14 documents; None (unknown) is not."""
    if not version:
        return False
    try:
        major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= DOCUMENTS_SINCE


#: what Talos generates for each kind (generate/secrets/bundle.go, ca.go in Talos v1.14.1): an
#: ECDSA P-256 aggregator CA, an ECDSA P-256 etcd CA with O=etcd (NewEtcdCA: x509.ECDSA(true)),
#: a 4096-bit RSA service-account key (the version contract's
#: UseRSAServiceAccountKey), 32 random bytes for secretbox (CreateEncryptionToken)
DEFAULT_ALGORITHM: dict[str, str] = {
    "aggregator": "ecdsa-p256", "etcd": "ecdsa-p256", "serviceaccount": "rsa", "encryption": "secretbox"
}
RSA_BITS = 4096
NO_EXPIRY = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, tzinfo=dt.UTC))


def generate(kind: PKI, algorithm: str | None, now: dt.datetime, validity: dt.timedelta) -> Material:
    """A new authority of a control-plane-only kind, made the way Talos makes it."""
    algorithm = algorithm or DEFAULT_ALGORITHM[kind]
    match kind:
        case "aggregator":
            cert, ca_key = certgen.generate_ca("kubernetes", now, algorithm, validity)
            return Material(pki.cert_to_pem(cert), pki.key_to_pem(ca_key))
        case "etcd":
            cert, ca_key = certgen.generate_ca("etcd", now, algorithm, validity)
            return Material(pki.cert_to_pem(cert), pki.key_to_pem(ca_key))
        case "serviceaccount":
            key: pki.PrivateKey = (
                rsa.generate_private_key(65537, RSA_BITS)
                if algorithm == "rsa"
                else ec.generate_private_key(ec.SECP256R1())
            )
            private = pki.key_to_pem(key)
            return Material(public_pem(private, "<generated>", "key"), private)
        case "encryption":
            secret = os.urandom(SECRETBOX_KEY_BYTES)
            return Material(b"", secret, secretbox_name(fingerprint("encryption", Material(b"", secret))))
        case "talos" | "kubernetes":
            raise ValueError(kind)
        case _:
            assert_never(kind)


def import_key(kind: PKI, data: bytes, source: str) -> Material:
    """An imported key without a certificate: a PEM private key (service account) or a file with
    the base64 of 32 bytes (secretbox)."""
    if kind == "encryption":
        secret = _secretbox(data.decode("ascii", "replace").strip(), source, "key")
        return Material(b"", secret, secretbox_name(fingerprint("encryption", Material(b"", secret))))
    return Material(public_pem(data, source, "key"), data)


def describe(kind: PKI, m: Material) -> tuple[str, str]:
    """(subject, algorithm) for the plan's list of authorities."""
    if kind == "encryption":
        return "(secretbox key " + (m.name or "") + ")", "secretbox"
    if b"CERTIFICATE" in m.public:
        ca = pki.CACert.from_pem(m.public)
        return ca.subject, ca.algorithm
    key = serialization.load_pem_public_key(m.public)
    if isinstance(key, rsa.RSAPublicKey):
        return "(signing key)", f"rsa-{key.key_size}"
    return "(signing key)", "ecdsa-p256"

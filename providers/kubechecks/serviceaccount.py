"""The service-account signing key as every API server answers for it (issue 22).

- `signs_with`: TokenRequest (for kube-system/trustplan-gate, created on first use) signs with one of
  the expected keys: the `kid` header, as kube-apiserver computes it (base64url of the SHA-256 of the
  DER SubjectPublicKeyInfo, k8s.io/kubernetes pkg/serviceaccount/jwt.go keyIDFromPublicKey).
- `resigned_accepted`: the claims of such a token, signed again with an accepted private key, are
  accepted (a SelfSubjectReview with the token alone names the gate's ServiceAccount).
- `legacy_tokens`: the Secret-based tokens (type kubernetes.io/service-account-token) whose JWT is
  signed with one of the given public keys: the clients that break when that key is removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from trustplan.providers.base import TLSIdentity
from trustplan.providers.kubechecks.api import CheckFailed, call, context, host, review

GATE_NAMESPACE, GATE_ACCOUNT = "kube-system", "trustplan-gate"
LEGACY_TYPE = "kubernetes.io/service-account-token"


def key_id(public_pem: bytes) -> str:
    """kube-apiserver's `kid`: base64url(SHA-256(DER SubjectPublicKeyInfo)), unpadded."""
    der = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(hashlib.sha256(der).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_kid(token: str) -> str:
    return str(json.loads(_unb64(token.split(".")[0])).get("kid", ""))


def resign(token: str, private_pem: bytes) -> str:
    """The token's claims signed again with `private_pem` (RS256 or ES256), `kid` of its public key."""
    key = serialization.load_pem_private_key(private_pem, None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if isinstance(key, rsa.RSAPrivateKey):
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        alg = "ES256"
    else:
        raise ValueError("a service-account key must be RSA or ECDSA P-256")
    header = _b64(json.dumps({"alg": alg, "kid": key_id(public)}, separators=(",", ":")).encode())
    signing_input = f"{header}.{token.split('.')[1]}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{_b64(signature)}"


def token_request(server: str, admin: TLSIdentity) -> str:
    """A token for kube-system/trustplan-gate from `server` (the ServiceAccount is created when absent)."""
    ctx = context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    base = f"/api/v1/namespaces/{GATE_NAMESPACE}/serviceaccounts"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": GATE_ACCOUNT}}
    status, _ = call(server, ctx, "GET", f"{base}/{GATE_ACCOUNT}")
    if status == 404:
        status, _ = call(server, ctx, "POST", base, account)
        if status not in (201, 409):
            raise CheckFailed(f"{host(server)}: creating ServiceAccount {GATE_ACCOUNT}: HTTP {status}")
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    status, doc = call(server, ctx, "POST", f"{base}/{GATE_ACCOUNT}/token", body)
    token = str(doc.get("status", {}).get("token", "")) if status == 201 else ""
    if not token:
        raise CheckFailed(f"{host(server)}: TokenRequest for {GATE_ACCOUNT}: HTTP {status}")
    return token


def token_accepted(server: str, kube_ca: bytes, token: str, what: str) -> None:
    """A SelfSubjectReview with `token` as the only credential names the gate's ServiceAccount."""
    status, user = review(server, context(kube_ca), {"Authorization": f"Bearer {token}"})
    want = f"system:serviceaccount:{GATE_NAMESPACE}:{GATE_ACCOUNT}"
    if status != 201 or user != want:
        raise CheckFailed(f"{host(server)}: a token signed with {what} was refused (HTTP {status})")


def signs_with(server: str, admin: TLSIdentity, kids: set[str]) -> None:
    """TokenRequest on `server` signs with a key whose `kid` is in `kids`."""
    if token_kid(token_request(server, admin)) not in kids:
        raise CheckFailed(f"{host(server)}: TokenRequest signs with a key the gate does not expect")


def resigned_accepted(server: str, admin: TLSIdentity, secret: bytes, label: str) -> None:
    """A TokenRequest token's claims signed again with `secret` are accepted by `server`."""
    token_accepted(server, admin.ca_bundle_pem, resign(token_request(server, admin), secret), label)


def signed_by(token: str, public_pem: bytes) -> bool:
    """Whether the JWT `token` carries a valid RS256/ES256 signature by `public_pem`."""
    try:
        header, claims, sig = token.split(".")
        signature, signed = _unb64(sig), f"{header}.{claims}".encode()
        key = serialization.load_pem_public_key(public_pem)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, binascii.Error):
        return False
    return True


def legacy_tokens(server: str, admin: TLSIdentity, publics: list[bytes]) -> list[str]:
    """namespace/name of every Secret of type kubernetes.io/service-account-token whose token is
    signed with one of `publics` (read through `server` with the admin credential)."""
    ctx = context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    status, doc = call(server, ctx, "GET", f"/api/v1/secrets?fieldSelector=type%3D{LEGACY_TYPE.replace('/', '%2F')}")
    if status != 200:
        raise CheckFailed(f"{host(server)}: listing Secrets of type {LEGACY_TYPE}: HTTP {status}")
    found = []
    for item in doc.get("items") or []:
        meta = item.get("metadata") or {}
        raw = (item.get("data") or {}).get("token") or ""
        try:
            token = base64.b64decode(raw).decode()
        except (ValueError, binascii.Error):
            continue
        if any(signed_by(token, p) for p in publics):
            found.append(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    return sorted(found)

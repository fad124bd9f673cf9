"""The real API servers' answer for the gates of the aggregator CA and the service-account key (issue 22).

- aggregator: every API server authenticates a request that carries a front-proxy client
  certificate (CN front-proxy-client, the name Talos allows: --requestheader-allowed-names) from each
  accepted CA and `X-Remote-User` / `X-Remote-Group`: a SelfSubjectReview names the user sent. The
  `extension-apiserver-authentication` ConfigMap (kube-system) carries every accepted CA.
- service accounts: a token signed with each accepted key (the claims of a TokenRequest token for
  kube-system/trustplan-gate, signed again, `kid` as kube-apiserver computes it: base64url of the
  SHA-256 of the DER SubjectPublicKeyInfo, k8s.io/kubernetes pkg/serviceaccount/jwt.go
  keyIDFromPublicKey) is accepted by every API server; TokenRequest on every API server signs
  with the issuing key (its `kid`).

Blocking calls over TLS that is always verified (the Kubernetes CA bundle of the phase); the
engine runs them in a worker thread and retries until its deadline. Keys and certs stay in memory
(trustplan.system.secretfiles); no token or key is ever part of a message.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from trustplan.providers.base import TLSIdentity

from trustplan.system.secretfiles import SecretFile

FRONT_PROXY_CN = "front-proxy-client"
GATE_USER = "trustplan:aggregator-gate"
GATE_GROUP = "trustplan:gates"
GATE_NAMESPACE, GATE_ACCOUNT = "kube-system", "trustplan-gate"
CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
CALL_TIMEOUT = 5.0


class CheckFailed(Exception):
    """What an API server answered that the gate does not accept (retried until the deadline)."""


def _context(ca_bundle: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_bundle.decode())
    ctx.check_hostname = True
    if cert_pem is not None and key_pem is not None:
        with SecretFile(cert_pem, "gate-crt") as crt, SecretFile(key_pem, "gate-key") as key:
            ctx.load_cert_chain(crt.path, key.path)
    return ctx


def _call(
    server: str, ctx: ssl.SSLContext, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    parts = urlsplit(server)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=ctx, timeout=CALL_TIMEOUT)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise CheckFailed(f"{parts.netloc}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else {}
    except ValueError:
        return response.status, {}


def _review(server: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, str]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    status, doc = _call(server, ctx, "POST", REVIEW, body, headers)
    return status, str(doc.get("status", {}).get("userInfo", {}).get("username", "")) if status == 201 else ""


def front_proxy_user(server: str, kube_ca: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """A SelfSubjectReview with a front-proxy client cert and X-Remote-User: the user must be the one sent."""
    ctx = _context(kube_ca, cert_pem, key_pem)
    status, user = _review(server, ctx, {"X-Remote-User": GATE_USER, "X-Remote-Group": GATE_GROUP})
    if status != 201 or user != GATE_USER:
        raise CheckFailed(
            f"{urlsplit(server).netloc}: a front-proxy request was not authenticated as {GATE_USER} "
            f"(HTTP {status}{', user ' + user if user else ''})"
        )


def configmap_cas(server: str, admin: TLSIdentity) -> list[x509.Certificate]:
    """The CAs of `requestheader-client-ca-file` in kube-system/extension-apiserver-authentication."""
    ctx = _context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    status, doc = _call(server, ctx, "GET", CONFIGMAP)
    if status != 200:
        raise CheckFailed(f"{urlsplit(server).netloc}: reading extension-apiserver-authentication: HTTP {status}")
    pem = str((doc.get("data") or {}).get("requestheader-client-ca-file", ""))
    return x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []


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
    ctx = _context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    base = f"/api/v1/namespaces/{GATE_NAMESPACE}/serviceaccounts"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": GATE_ACCOUNT}}
    status, _ = _call(server, ctx, "GET", f"{base}/{GATE_ACCOUNT}")
    if status == 404:
        status, _ = _call(server, ctx, "POST", base, account)
        if status not in (201, 409):
            raise CheckFailed(f"{urlsplit(server).netloc}: creating ServiceAccount {GATE_ACCOUNT}: HTTP {status}")
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    status, doc = _call(server, ctx, "POST", f"{base}/{GATE_ACCOUNT}/token", body)
    token = str(doc.get("status", {}).get("token", "")) if status == 201 else ""
    if not token:
        raise CheckFailed(f"{urlsplit(server).netloc}: TokenRequest for {GATE_ACCOUNT}: HTTP {status}")
    return token


def token_accepted(server: str, kube_ca: bytes, token: str, what: str) -> None:
    """A SelfSubjectReview with `token` as the only credential names the gate's ServiceAccount."""
    status, user = _review(server, _context(kube_ca), {"Authorization": f"Bearer {token}"})
    want = f"system:serviceaccount:{GATE_NAMESPACE}:{GATE_ACCOUNT}"
    if status != 201 or user != want:
        raise CheckFailed(f"{urlsplit(server).netloc}: a token signed with {what} was refused (HTTP {status})")

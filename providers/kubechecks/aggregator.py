"""The aggregator (front-proxy) CA as every API server answers for it (issue 22).

- `front_proxy_user`: an API server authenticates a request that carries a front-proxy client
  certificate (CN front-proxy-client, the name Talos allows: --requestheader-allowed-names) from an
  accepted CA and `X-Remote-User` / `X-Remote-Group`: a SelfSubjectReview names the user sent.
- `configmap_has`: the `extension-apiserver-authentication` ConfigMap (kube-system) carries every
  accepted CA (what aggregated API servers read to trust the API servers' proxy requests).
- `own_proxy_cert_from`: an API server's own front-proxy client certificate (the one it presents to
  aggregated API servers, --proxy-client-cert-file) is issued by the given CA. Talos issues it
  from the aggregator issuing CA (KubernetesDynamicCertsController) and serves it in the COSI
  resource `secrets/KubernetesDynamicCerts.secrets.talos.dev/k8s-dynamic-certs` (`frontProxy`),
  which the Talos provider reads (docs/talos-model.md, "The API servers' own front-proxy cert").
"""

from __future__ import annotations

from cryptography import x509
from trustplan.providers.base import TLSIdentity
from trustplan.providers.kubechecks.api import CheckFailed, call, context, host, review

from trustplan.talos import pki

FRONT_PROXY_CN = "front-proxy-client"
GATE_USER = "trustplan:aggregator-gate"
GATE_GROUP = "trustplan:gates"
CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


def front_proxy_user(server: str, kube_ca: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """A SelfSubjectReview with a front-proxy client cert and X-Remote-User: the user must be the one sent."""
    ctx = context(kube_ca, cert_pem, key_pem)
    status, user = review(server, ctx, {"X-Remote-User": GATE_USER, "X-Remote-Group": GATE_GROUP})
    if status != 201 or user != GATE_USER:
        raise CheckFailed(
            f"{host(server)}: a front-proxy request was not authenticated as {GATE_USER} "
            f"(HTTP {status}{', user ' + user if user else ''})"
        )


def configmap_cas(server: str, admin: TLSIdentity) -> list[x509.Certificate]:
    """The CAs of `requestheader-client-ca-file` in kube-system/extension-apiserver-authentication."""
    ctx = context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    status, doc = call(server, ctx, "GET", CONFIGMAP)
    if status != 200:
        raise CheckFailed(f"{host(server)}: reading extension-apiserver-authentication: HTTP {status}")
    pem = str((doc.get("data") or {}).get("requestheader-client-ca-file", ""))
    return x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []


def configmap_has(server: str, admin: TLSIdentity, want: set[str]) -> None:
    """The ConfigMap carries every CA fingerprint of `want`."""
    have = {pki.fingerprint(c) for c in configmap_cas(server, admin)}
    if want - have:
        raise CheckFailed(f"extension-apiserver-authentication lacks {len(want - have)} accepted aggregator CA(s)")


def own_proxy_cert_from(node: str, cert_pem: bytes, ca_pem: bytes, ca_label: str) -> None:
    """The API server's own front-proxy client cert (`cert_pem`, as the node serves it) is signed by
    the CA `ca_pem` and names front-proxy-client. Raises CheckFailed saying what it is instead."""
    if not cert_pem.strip():
        raise CheckFailed(f"node {node}: serves no front-proxy client certificate (KubernetesDynamicCerts)")
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    ca = x509.load_pem_x509_certificates(ca_pem)[0]
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if cns != [FRONT_PROXY_CN]:
        raise CheckFailed(f"node {node}: the front-proxy client certificate names {cns}, not {FRONT_PROXY_CN}")
    if not pki.verify_issued_by(cert, ca):
        raise CheckFailed(
            f"node {node}: the API server's own front-proxy client certificate is not issued by {ca_label} "
            f"(issuer {cert.issuer.rfc4514_string() or '(empty)'})"
        )


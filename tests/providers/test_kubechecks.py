"""The pure parts of the issue 22 checks (providers/kubechecks): whose signature a front-proxy cert
or a token carries. The calls to real servers are proven in tests/realk8s."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from trustplan.providers.kubechecks import aggregator as agg
from trustplan.providers.kubechecks import serviceaccount as sa
from trustplan.providers.kubechecks.api import CheckFailed

from trustplan.talos import certgen, pki


def leaf(cn: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert, another CA's cert, a client cert with CN `cn` from the first CA), PEM."""
    now = pki.utcnow()
    ca, key = certgen.generate_ca("kubernetes", now)
    other, _ = certgen.generate_ca("kubernetes", now)
    cert, _ = certgen.issue_client_cert(ca, key, "test", now, common_name=cn)
    return pki.cert_to_pem(ca), pki.cert_to_pem(other), pki.cert_to_pem(cert)


def test_own_front_proxy_cert_must_come_from_the_ca() -> None:
    ca, other, cert = leaf(agg.FRONT_PROXY_CN)
    agg.own_proxy_cert_from("10.5.0.2", cert, ca, "new")  # passes
    with pytest.raises(CheckFailed, match=r"node 10.5.0.2: .* is not issued by new \(issuer"):
        agg.own_proxy_cert_from("10.5.0.2", cert, other, "new")
    with pytest.raises(CheckFailed, match="serves no front-proxy client certificate"):
        agg.own_proxy_cert_from("10.5.0.2", b"", ca, "new")
    ca, _, wrong_cn = leaf("kube-apiserver")
    with pytest.raises(CheckFailed, match="names \\['kube-apiserver'\\], not front-proxy-client"):
        agg.own_proxy_cert_from("10.5.0.2", wrong_cn, ca, "new")


@pytest.mark.parametrize(
    "make", [lambda: rsa.generate_private_key(65537, 2048), lambda: ec.generate_private_key(ec.SECP256R1())]
)
def test_a_token_is_signed_by_the_key_that_signed_it_only(make: object) -> None:
    key, other = make(), make()  # type: ignore[operator]
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "x"}).encode()).decode().rstrip("=")
    token = sa.resign(f"e30.{claims}.sig", pki.key_to_pem(key))
    public = key.public_key()
    from cryptography.hazmat.primitives import serialization

    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    other_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert sa.signed_by(token, pem) and sa.token_kid(token) == sa.key_id(pem)
    assert not sa.signed_by(token, other_pem)
    assert not sa.signed_by(token[:-4] + "AAAA", pem)
    assert not sa.signed_by("not a token", pem)

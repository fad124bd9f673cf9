"""Making certificates the way Talos does: CAs (10 years, O=talos / O=kubernetes) and the client
and server certificates they issue. Reading, encoding and checking them is trustplan.talos.pki.
"""

from __future__ import annotations

import datetime as dt
import os
from ipaddress import ip_address

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan.talos.pki import BACKDATE, PKI, PrivateKey

CA_VALIDITY = dt.timedelta(hours=87600)
CLIENT_VALIDITY = dt.timedelta(days=365)
SERVER_VALIDITY = dt.timedelta(hours=24)
ORGANIZATION = {"talos": "talos", "kubernetes": "kubernetes", "etcd": "etcd"}


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign for a CA: what Talos puts on its certificates."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise ValueError(f"unknown algorithm {algorithm}")


def _sign_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def default_algorithm(pki: PKI) -> str:
    return "ed25519" if pki == "talos" else "ecdsa-p256"


def generate_ca(
    pki: PKI, now: dt.datetime, algorithm: str | None = None, validity: dt.timedelta = CA_VALIDITY
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA shaped like Talos's: O=talos or O=kubernetes, 10 years, CA:true."""
    key = _new_key(algorithm or default_algorithm(pki))
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION[pki])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _key_usage(cert_sign=True),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
        .sign(key, _sign_hash(key))
    )
    return cert, key


def authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKID Go's x509 adds to every certificate it signs: the issuer's Subject Key Identifier.

    It matters: during a rotation a node trusts two CAs with the same subject (O=talos), and
    OpenSSL picks a chain's issuer by subject and AKID only; without an AKID it may pick the wrong
    one and refuse a valid certificate.
    """
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _leaf(
    ca_cert: x509.Certificate,
    key: PrivateKey,
    subject: x509.Name,
    now: dt.datetime,
    validity: dt.timedelta,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    """What every leaf trustplan issues shares: not a CA, back-dated, one extended key usage, and
    the issuer's key identifier as Go adds it."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(authority_key_identifier(ca_cert), critical=False)
    )


def _leaf_key_for(ca_key: PrivateKey) -> PrivateKey:
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue_client_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    organization: str,
    now: dt.datetime,
    validity: dt.timedelta = CLIENT_VALIDITY,
    common_name: str | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A client certificate (EKU exactly clientAuth) with the role in Subject O, e.g. os:admin."""
    key = _leaf_key_for(ca_key)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = _leaf(ca_cert, key, x509.Name(attrs), now, validity, ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = builder.add_extension(_key_usage(cert_sign=False), critical=True).sign(ca_key, _sign_hash(ca_key))
    return cert, key


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: dt.datetime,
    *,
    ips: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    common_name: str | None = None,
    validity: dt.timedelta = SERVER_VALIDITY,
) -> tuple[x509.Certificate, PrivateKey]:
    """A server certificate (EKU serverAuth) for the given IP and DNS names."""
    key = _leaf_key_for(ca_key)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name or (dns[0] if dns else (ips[0] if ips else "node")))]
    sans: list[x509.GeneralName] = [x509.IPAddress(ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(name) for name in dns]
    builder = _leaf(ca_cert, key, x509.Name(attrs), now, validity, ExtendedKeyUsageOID.SERVER_AUTH)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, _sign_hash(ca_key)), key

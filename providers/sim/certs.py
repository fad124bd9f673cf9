"""Leaf certificates shaped like the ones Go's crypto/x509 makes for Talos.

Go's `x509.CreateCertificate` always adds an Authority Key Identifier (the issuer's Subject Key
Identifier). That matters here: during a rotation a node trusts two CAs with the *same* subject
(`O=talos`), and OpenSSL picks a chain's issuer by subject and AKID only (it does not try the other
candidate when the signature check fails, unlike Go). Without an AKID, verification against an
OLD+NEW bundle fails at random. trustplan.pki's issuers add no AKID yet, so the simulator issues
its own leaves with these functions (same parameters as pki.issue_client_cert / issue_server_cert).
"""

from __future__ import annotations

import datetime as dt
from ipaddress import ip_address

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan import pki

_KU_SIGN_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _akid(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _builder(
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public_key: object,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - pki.BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KU_SIGN_ONLY, critical=True)
        .add_extension(_akid(ca_cert), critical=False)
    )


def _sign(builder: x509.CertificateBuilder, ca_key: pki.PrivateKey) -> x509.Certificate:
    return builder.sign(ca_key, pki._sign_hash(ca_key))


def issue_client_cert(
    ca_cert: x509.Certificate,
    ca_key: pki.PrivateKey,
    organization: str,
    now: dt.datetime,
    validity: dt.timedelta = pki.CLIENT_VALIDITY,
) -> tuple[x509.Certificate, pki.PrivateKey]:
    """A client cert (EKU exactly clientAuth, role in Subject O, no CN) like talosctl's."""
    key = pki._leaf_key_for(ca_key)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    builder = _builder(ca_cert, subject, key.public_key(), now, validity).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    return _sign(builder, ca_key), key


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: pki.PrivateKey,
    now: dt.datetime,
    *,
    ips: tuple[str, ...],
    dns: tuple[str, ...],
    common_name: str,
    validity: dt.timedelta = pki.SERVER_VALIDITY,
) -> tuple[x509.Certificate, pki.PrivateKey]:
    """An apid server cert (EKU serverAuth) for these IP and DNS names."""
    key = pki._leaf_key_for(ca_key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    sans: list[x509.GeneralName] = [x509.IPAddress(ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(name) for name in dns]
    builder = (
        _builder(ca_cert, subject, key.public_key(), now, validity)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    return _sign(builder, ca_key), key

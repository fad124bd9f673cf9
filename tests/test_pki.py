"""CA material the way Talos makes and stores it: shapes, fingerprints, encodings, checks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from conftest import CAFiles
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan.errors import CAError
from trustplan.talos import certgen, pki

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def rewrap(pem: bytes, width: int) -> bytes:
    """The same PEM with its base64 body wrapped at another width: valid, but different bytes."""
    text = pem.decode()
    head, rest = text.split("\n", 1)
    body, tail = rest.rsplit("-----END", 1)
    joined = "".join(body.split())
    lines = [joined[i : i + width] for i in range(0, len(joined), width)]
    return (head + "\n" + "\n".join(lines) + "\n-----END" + tail).encode()


@pytest.fixture(scope="module")
def talos_ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return certgen.generate_ca("talos", NOW)


@pytest.fixture(scope="module")
def kube_ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return certgen.generate_ca("kubernetes", NOW)


def test_talos_ca_is_ed25519_o_talos_ten_years_ca_true(talos_ca) -> None:  # noqa: ANN001
    cert, key = talos_ca
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "talos"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=87600)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.digital_signature
    assert pki.check_ca(cert, key, "talos", NOW, "x") == []


def test_kubernetes_ca_is_ecdsa_p256_o_kubernetes(kube_ca) -> None:  # noqa: ANN001
    cert, key = kube_ca
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.subject.rfc4514_string() == "O=kubernetes"
    assert pki.CACert.from_cert(cert).algorithm == "ecdsa-p256"


def test_fingerprint_is_sha256_of_the_der_certificate(talos_ca) -> None:  # noqa: ANN001
    cert, _ = talos_ca
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint(cert) == "sha256:" + hashlib.sha256(der).hexdigest()
    assert pki.short(pki.fingerprint(cert)) == pki.fingerprint(cert)[:19]


def test_base64_pem_round_trips_exact_bytes(ca_files: CAFiles) -> None:
    for pem in (ca_files.talos_crt, rewrap(ca_files.talos_crt, 76), ca_files.talos_crt.replace(b"\n", b"\r\n")):
        encoded = pki.b64encode_pem(pem)
        assert encoded == base64.b64encode(pem).decode()
        assert pki.b64decode_pem(encoded, "f.yaml", "machine.ca.crt") == pem


def test_unusual_pem_wrapping_keeps_its_bytes_and_its_fingerprint(ca_files: CAFiles) -> None:
    odd = rewrap(ca_files.talos_crt, 76)
    assert odd != ca_files.talos_crt
    a, b = pki.CACert.from_pem(ca_files.talos_crt), pki.CACert.from_pem(odd)
    assert a.fingerprint == b.fingerprint
    assert b.pem == odd


@pytest.mark.parametrize(
    "value, message",
    [
        (42, "expected a base64 string, got int"),
        ("******", "the value is redacted"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"hello").decode(), "base64 decodes to something that is not PEM text"),
    ],
)
def test_bad_base64_fields_name_the_file_and_path(value: object, message: str) -> None:
    with pytest.raises(CAError) as exc:
        pki.b64decode_pem(value, "nodes/cp-1.yaml", "machine.ca.crt")
    assert str(exc.value).startswith("nodes/cp-1.yaml: machine.ca.crt: ")
    assert message in str(exc.value)


def test_ed25519_key_uses_talos_header_with_a_pkcs8_body(talos_ca) -> None:  # noqa: ANN001
    _, key = talos_ca
    pem = pki.key_to_pem(key)
    assert pem.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----\n")
    assert pem.endswith(b"-----END ED25519 PRIVATE KEY-----\n")
    standard = pki.key_to_pkcs8_pem(key)  # the same body under the standard header
    assert pem.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY") == standard
    loaded = pki.load_key_pem(pem, "k")
    assert pki.key_to_pem(loaded) == pem
    assert pki.load_key_pem(standard, "k").private_bytes_raw() == key.private_bytes_raw()  # type: ignore[union-attr]


def test_ec_key_uses_ec_private_key_header(kube_ca) -> None:  # noqa: ANN001
    cert, key = kube_ca
    pem = pki.key_to_pem(key)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    loaded = pki.load_key_pem(pem, "k")
    assert pki.key_matches(cert, loaded)
    assert pki.key_to_pem(loaded) == pem


def test_bad_key_is_a_ca_error_naming_the_file() -> None:
    with pytest.raises(CAError, match=r"^ca/talos\.key: not a valid unencrypted PEM private key"):
        pki.load_key_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "ca/talos.key")


def test_bad_cert_is_a_ca_error_naming_the_file() -> None:
    with pytest.raises(CAError, match=r"^ca/talos\.crt: not a valid PEM certificate"):
        pki.CACert.from_pem(b"nope", "ca/talos.crt")


def test_check_ca_refusals(talos_ca, kube_ca, ca_files: CAFiles) -> None:  # noqa: ANN001
    cert, key = talos_ca
    leaf = x509.load_pem_x509_certificate(ca_files.leaf_crt)
    with pytest.raises(CAError, match="certificate is not a CA"):
        pki.check_ca(leaf, None, "talos", NOW, "leaf.crt")
    with pytest.raises(CAError, match="certificate expired on 2036-11-24"):
        pki.check_ca(cert, key, "talos", NOW + dt.timedelta(days=3651), "ca.crt")
    with pytest.raises(CAError, match="certificate is not valid before 2026-11-27"):
        pki.check_ca(cert, key, "talos", NOW - dt.timedelta(days=1), "ca.crt")
    with pytest.raises(CAError, match="the private key does not match"):
        pki.check_ca(cert, kube_ca[1], "talos", NOW, "ca.crt")
    p256_cert, _ = certgen.generate_ca("talos", NOW, "ecdsa-p256")
    assert pki.check_ca(p256_cert, None, "talos", NOW, "x") == []


def test_algorithm_not_allowed_for_the_pki_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(certgen._key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA384())
    )
    with pytest.raises(CAError, match=r"a talos CA cannot use ecdsa-p384 \(allowed: ed25519, ecdsa-p256, rsa\)"):
        pki.check_ca(cert, key, "talos", NOW, "ca.crt")


def test_expiring_ca_gives_a_warning_not_an_error(talos_ca) -> None:  # noqa: ANN001
    cert, key = talos_ca
    late = cert.not_valid_after_utc - dt.timedelta(days=30)
    warnings = pki.check_ca(cert, key, "talos", late, "ca.crt")
    assert warnings == ["ca.crt: CA expires in 30 days (2036-11-24)"]


def test_admin_client_cert_is_ed25519_os_admin_client_auth_only_one_year(talos_ca) -> None:  # noqa: ANN001
    ca, ca_key = talos_ca
    cert, key = certgen.issue_client_cert(ca, ca_key, "os:admin", NOW)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "os:admin"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=365)
    assert pki.verify_issued_by(cert, ca)
    assert not pki.verify_issued_by(cert, certgen.generate_ca("talos", NOW)[0])


def test_split_pem_bundle(ca_files: CAFiles) -> None:
    bundle = ca_files.talos_crt + b"junk between\n" + ca_files.kube_crt
    assert pki.split_pem_bundle(bundle) == [ca_files.talos_crt, ca_files.kube_crt]

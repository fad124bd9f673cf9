"""TLS contexts for the Talos API: stdlib `ssl` (OpenSSL), which handles Ed25519 certs both ways.

grpcio's BoringSSL cannot verify Ed25519 handshake signatures (DESIGN.md), so trustplan speaks gRPC
through grpclib over these contexts. Verification is always on: the server cert must chain to the
given CA bundle and carry the address we dialled (Talos nodes are reached by IP, and their apid certs
have IP SANs), and the server side always demands a client cert.
"""

from __future__ import annotations

import logging
import ssl

from trustplan.system.secretfiles import SecretFile
from trustplan.talos import pki

_ED25519_HEADER = b"-----BEGIN ED25519 PRIVATE KEY-----"


class _DeadConnectionWrites(logging.Filter):
    """Drop asyncio's warnings about writes to a connection the server already dropped.

    When a node refuses our client cert it closes the connection right after the TLS handshake;
    grpclib's other streams on that connection still reset themselves, and asyncio logs each write
    after the fifth ("socket.send() raised exception.", "SSL connection is closed"). The refusal
    itself is reported as an error; these lines only add noise to the CLI's output.
    """

    NOISE = ("socket.send() raised exception.", "SSL connection is closed")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.NOISE


logging.getLogger("asyncio").addFilter(_DeadConnectionWrites())


def pkcs8_key_pem(key_pem: bytes, source: str = "<key>") -> bytes:
    """`key_pem` as standard PEM OpenSSL can load (Talos's `ED25519 PRIVATE KEY` -> `PRIVATE KEY`)."""
    if _ED25519_HEADER in key_pem:
        return pki.key_to_pkcs8_pem(pki.load_key_pem(key_pem, source))
    return key_pem


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a cert and key from memory (ssl only reads files: an in-memory file, secretfiles)."""
    with SecretFile(cert_pem.rstrip(b"\n") + b"\n" + pkcs8_key_pem(key_pem), "tls-credential") as file:
        ctx.load_cert_chain(file.path)


def client_context(cert_pem: bytes, key_pem: bytes, ca_bundle_pem: bytes) -> ssl.SSLContext:
    """A verifying mTLS client context: trust `ca_bundle_pem`, present `cert_pem`/`key_pem`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True  # an IP server_hostname is matched against the cert's IP SANs
    ctx.load_verify_locations(cadata=ca_bundle_pem.decode("ascii"))
    _load_chain(ctx, cert_pem, key_pem)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def server_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes) -> ssl.SSLContext:
    """A server context that requires a client cert chaining to `client_ca_pem`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    _load_chain(ctx, cert_pem, key_pem)
    ctx.set_alpn_protocols(["h2"])
    return ctx

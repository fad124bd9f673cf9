"""classify() decides which failures of a Talos API call are retried and how they are named: a trust
failure must never read as "unreachable", an answer like PERMISSION_DENIED must never be retried."""

from __future__ import annotations

import ssl

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from trustplan.providers.talos.client import classify


def _unknown_authority() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.verify_code = 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    exc.verify_message = "unable to get local issuer certificate"
    return exc


@pytest.mark.parametrize(
    ("exc", "kind", "detail"),
    [
        (GRPCError(Status.UNAVAILABLE, "connection lost"), "unavailable", "connection lost"),
        (GRPCError(Status.UNAVAILABLE), "unavailable", "unavailable"),
        (GRPCError(Status.DEADLINE_EXCEEDED), "timeout", "deadline of one call"),
        (_unknown_authority(), "tls", "TLS trust failure: unknown authority"),
        (TimeoutError(), "timeout", "deadline of one call"),
        (TimeoutError(), "timeout", "deadline of one call"),
        (ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"), "tls", "TLS handshake refused ("),
        (StreamTerminatedError("Connection was closed"), "tls", "client certificate not accepted: StreamTerminated"),
        (ProtocolError("bad frame"), "tls", "client certificate not accepted: ProtocolError"),
        (ConnectionRefusedError(111, "Connection refused"), "connect", "connection refused"),
        (ConnectionResetError(104, "reset"), "tls", "connection reset (client certificate not accepted?)"),
        (BrokenPipeError(32, "pipe"), "tls", "connection reset"),
        (OSError(113, "No route to host"), "connect", "No route to host"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_transport_failures_are_retried_and_named(exc: BaseException, kind: str, detail: str) -> None:
    transient = classify(exc)
    assert transient is not None
    assert (transient.kind, detail in transient.detail) == (kind, True), transient.detail


@pytest.mark.parametrize(
    "exc",
    [
        GRPCError(Status.PERMISSION_DENIED, "not authorized"),
        GRPCError(Status.INVALID_ARGUMENT, "bad config"),
        GRPCError(Status.UNIMPLEMENTED),
        ValueError("a bug, not the network"),
    ],
)
def test_answers_and_bugs_are_not_retried(exc: BaseException) -> None:
    assert classify(exc) is None

"""TLS verification failures named as the trust failures they are, for every client trustplan uses
(the Talos API over grpclib, the Kubernetes API over urllib3): which check failed, not "unreachable".

    trust_failure(exc)      "TLS trust failure: unknown authority: ..." / "hostname mismatch: ..." / ...
"""

from __future__ import annotations

import ssl

#: OpenSSL verification codes (X509_V_ERR_*) and what they mean for the operator.
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}  # unable to get issuer / self-signed / local issuer / leaf
_NAME_MISMATCH = {62, 63, 64}  # hostname, e-mail, IP address mismatch


def trust_failure(exc: ssl.SSLCertVerificationError) -> str:
    """A TLS verification failure named as the trust failure it is (not as "unreachable")."""
    code, detail = exc.verify_code, exc.verify_message or str(exc)
    if code in _NAME_MISMATCH:
        return (
            "TLS trust failure: hostname mismatch: the server's certificate is not valid for the address "
            f"dialled ({detail})"
        )
    if code in _UNKNOWN_AUTHORITY:
        return (
            "TLS trust failure: unknown authority: the server's certificate was not issued by any CA this "
            f"client trusts ({detail})"
        )
    if code == 10:
        return f"TLS trust failure: the server's certificate has expired ({detail})"
    return f"TLS trust failure: the server's certificate is not trusted ({detail})"


def trust_failure_text(text: str) -> str | None:
    """The same naming for libraries that only keep the message (urllib3's SSLError)."""
    if "CERTIFICATE_VERIFY_FAILED" not in text and "certificate verify failed" not in text:
        return None
    if "mismatch" in text:
        return "TLS trust failure: hostname mismatch: the server's certificate is not valid for the address dialled"
    if "expired" in text:
        return "TLS trust failure: the server's certificate has expired"
    return "TLS trust failure: unknown authority: the server's certificate was not issued by any CA this client trusts"

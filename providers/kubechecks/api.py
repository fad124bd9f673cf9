"""The plain HTTPS calls the issue 22 checks make to an API server or to etcd's JSON gateway.

Blocking calls over TLS that is always verified (a CA bundle is always given, the host name is
always checked); the engine runs them in a worker thread and retries them with `until` until its
deadline. Keys and certs stay in memory (trustplan.system.secretfiles); no token or key is ever
part of a message.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from trustplan.errors import GateFailedError
from trustplan.system.secretfiles import SecretFile

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
CALL_TIMEOUT = 5.0


class CheckFailed(Exception):
    """What a server answered that the gate does not accept (retried until the deadline)."""


def context(ca_bundle: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    """A verifying client context trusting `ca_bundle`, with a client cert when one is given."""
    ctx = ssl.create_default_context(cadata=ca_bundle.decode())
    ctx.check_hostname = True
    if cert_pem is not None and key_pem is not None:
        with SecretFile(cert_pem, "gate-crt") as crt, SecretFile(key_pem, "gate-key") as key:
            ctx.load_cert_chain(crt.path, key.path)
    return ctx


def call(
    server: str, ctx: ssl.SSLContext, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One JSON request: (HTTP status, decoded body or {}). Connection failures raise CheckFailed."""
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


def review(server: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, str]:
    """A SelfSubjectReview: (HTTP status, the user name the server authenticated, or "")."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    status, doc = call(server, ctx, "POST", REVIEW, body, headers)
    return status, str(doc.get("status", {}).get("userInfo", {}).get("username", "")) if status == 201 else ""


def host(server: str) -> str:
    return urlsplit(server).netloc or server


async def until(check: Callable[[], None], timeout: float, what: str) -> None:
    """Run the blocking `check` in a thread until it stops raising CheckFailed, with backoff; after
    `timeout` seconds a GateFailedError names `what` and the last answer."""
    deadline, delay = time.monotonic() + timeout, 0.1
    while True:
        try:
            await asyncio.to_thread(check)
            return
        except CheckFailed as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GateFailedError(
                    f"{what} did not pass within {timeout:g} s: {exc}",
                    hint="rollout.verify.timeout sets how long to wait",
                ) from None
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

"""The API server the kubernetes state backend talks to: the connection it is handed (KubeAPI),
and one call with the retries a restarting server needs. Shared by the Secret store
(trustplan.state.kubernetes) and the Lease lock (trustplan.state.lease)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from trustplan.state.backend import KubernetesStateSpec
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

from trustplan.errors import StateError

MANAGED_BY = {"app.kubernetes.io/managed-by": "trustplan"}
CALL_TIMEOUT = 10.0

T = TypeVar("T")


class KubeAPI(Protocol):
    """The connection to the API server the state lives on. The shell builds it from the spec's
    kubeconfig and context (trustplan.providers.kubechecks.nodes.KubeconfigAPI) and hands it in: the
    backend stores and locks; how to reach the server, and to say why it could not, is the provider's."""

    def core(self) -> Any:
        """A kubernetes.client.CoreV1Api (Secrets)."""
        ...

    def coordination(self) -> Any:
        """A kubernetes.client.CoordinationV1Api (Leases)."""
        ...

    def describe_error(self, exc: BaseException) -> str:
        """A short, key-free description of why a call did not reach the API server."""
        ...


def call(
    api: KubeAPI, spec: KubernetesStateSpec, what: str, fn: Callable[[], T], retry_seconds: float | None = None
) -> T:
    """Call the API, retrying what a restarting server answers for `retry_seconds` (default the
    spec's); API errors (4xx) are raised as is."""
    from kubernetes.client.exceptions import ApiException

    retry = spec.retry_seconds if retry_seconds is None else retry_seconds
    deadline = time.monotonic() + retry
    delay = 0.2
    while True:
        try:
            return fn()
        except ApiException as exc:
            if exc.status not in (0, None, 429, 500, 502, 503, 504) or time.monotonic() >= deadline:
                if exc.status in (401, 403):
                    raise StateError(f"{spec.where}: {what}: {api_message(exc)}") from None
                raise
        except (HTTPError, OSError) as exc:  # connection errors: the server may be restarting
            describe_error = api.describe_error
            reason = exc.reason if isinstance(exc, MaxRetryError) else exc
            if isinstance(reason, SSLError | ssl.SSLError):  # a wrong CA or certificate: retrying won't help
                raise StateError(f"{spec.where}: {what}: {describe_error(exc)}") from None
            if time.monotonic() >= deadline:
                raise StateError(
                    f"{spec.where}: {what}: {describe_error(exc)} (retried for {retry:g}s)"
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def api_message(exc: Any) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")

"""Kubernetes API checks for the gates of a Kubernetes CA rotation, through the `kubernetes` client.

A gate passes when every control plane's API server answers `/version` and lists every expected
node Ready (`/api/v1/nodes`), using an admin client cert (O=system:masters) from the CA of that
phase and trusting exactly the phase's CAs (old and new during the swap): what a user's own tooling
would see with the kubeconfig trustplan writes. It is retried with backoff until a timeout, because
a control plane restarts its API server and every kubelet re-joins after its Kubernetes CA changed.

The client is blocking; every call runs in a worker thread (asyncio.to_thread). The credential
lives in memory: the client library needs the cert, key and CA as files, which are in-memory files
(trustplan.system.secretfiles) that never reach the disk and vanish with the process.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from trustplan.providers.base import TLSIdentity

from trustplan.errors import GateFailedError, StateError
from trustplan.system.secretfiles import SecretFile
from trustplan.system.tlserrors import trust_failure, trust_failure_text

log = logging.getLogger("trustplan.kubernetes")

DEFAULT_PORT = 6443
CALL_TIMEOUT = 5.0
BACKOFF_START = 0.1
BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class ExpectedNode:
    """A node the gate expects Ready: matched by hostname (node name) or by its InternalIP."""

    address: str
    hostname: str | None = None

    def label(self) -> str:
        return f"{self.hostname} ({self.address})" if self.hostname else self.address


@dataclass(frozen=True)
class Probe:
    """One attempt against one API server: ok, or what was wrong (no key material in it)."""

    ok: bool
    detail: str
    version: str = ""


def server_for(address: str, port: int = DEFAULT_PORT) -> str:
    """A control plane's Kubernetes API endpoint: https://<address>:<port> (IPv6 bracketed)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"https://{host}:{port}"


class _Client:
    """A `kubernetes` ApiClient for one server and credential (no kubeconfig: a Configuration).

    The client library loads the CA bundle, cert and key from paths: they are in-memory files
    (trustplan.system.secretfiles), never on disk, closed by close() and gone with the process."""

    def __init__(self, server: str, credential: TLSIdentity, call_timeout: float) -> None:
        from kubernetes import client

        self.server = server
        self.call_timeout = call_timeout
        self._files = [
            SecretFile(credential.ca_bundle_pem, "kube-ca"),
            SecretFile(credential.cert_pem, "kube-crt"),
            SecretFile(credential.key_pem, "kube-key"),
        ]
        configuration = client.Configuration()
        configuration.host = server
        configuration.verify_ssl = True  # always: the server must chain to the phase's CAs
        configuration.ssl_ca_cert, configuration.cert_file, configuration.key_file = (f.path for f in self._files)
        configuration.retries = 0  # our loop retries, with backoff and a deadline
        self.api = client.ApiClient(configuration)
        self.version_api = client.VersionApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def probe(self, expected: Sequence[ExpectedNode]) -> Probe:
        """/version, then every expected node Ready in /api/v1/nodes. Never raises for API errors."""
        try:
            version = self.version_api.get_code(_request_timeout=self.call_timeout)
            nodes = self.core.list_node(_request_timeout=self.call_timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is described and retried
            return Probe(False, describe_error(exc))
        ready: dict[str, bool] = {}
        for item in nodes.items or []:
            conditions = (item.status.conditions if item.status else None) or []
            is_ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            names = [item.metadata.name] if item.metadata and item.metadata.name else []
            names += [a.address for a in (item.status.addresses if item.status else None) or [] if a.address]
            for name in names:
                ready[name] = ready.get(name, False) or is_ready
        keys = [(n, [k for k in (n.hostname, n.address) if k]) for n in expected]
        missing = [n for n, ks in keys if not any(k in ready for k in ks)]
        not_ready = [n for n, ks in keys if n not in missing and not any(ready.get(k, False) for k in ks)]
        problems = []
        if not_ready:
            problems.append("not Ready: " + ", ".join(n.label() for n in not_ready))
        if missing:
            problems.append("not in the node list: " + ", ".join(n.label() for n in missing))
        git = getattr(version, "git_version", "") or ""
        if problems:
            return Probe(False, "; ".join(problems), git)
        return Probe(True, f"{len(expected)} nodes Ready", git)

    def readyz(self) -> Probe:
        """GET /readyz with the credential: ok when it answers 200 (a stopping server answers 500)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.call_api("GET", f"{self.server}/readyz", _request_timeout=self.call_timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is described and retried
            return Probe(False, describe_error(exc))
        if response.status != 200:
            return Probe(False, describe_error(ApiException(status=response.status, reason=response.reason)))
        return Probe(True, "ready")

    def close(self) -> None:
        try:
            self.api.close()  # type: ignore[no-untyped-call]
        finally:
            for f in self._files:
                f.close()


class KubeconfigAPI:
    """The API server a kubeconfig (and context) names, for the kubernetes state backend
    (trustplan.state.kubeapi.KubeAPI). The client is made on first use: loading the kubernetes
    library costs ~0.3 s. Calls are not retried by the client: the backend retries with a deadline."""

    def __init__(self, kubeconfig: Path | None, context: str | None, where: str) -> None:
        self.kubeconfig = kubeconfig  # None: $KUBECONFIG, then ~/.kube/config
        self.context = context
        self.where = where  # how errors name what was being reached
        self._api_client: Any = None

    @classmethod
    def for_state(cls, spec: StateSpec) -> KubeconfigAPI:
        return cls(spec.kubeconfig, spec.context, spec.where)

    def client(self) -> Any:
        if self._api_client is None:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException

            configuration = client.Configuration()
            configuration.retries = 0  # the caller retries, with a deadline
            try:
                self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(self.kubeconfig) if self.kubeconfig else None,
                    context=self.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except (ConfigException, OSError, ValueError) as exc:
                source = self.kubeconfig or "$KUBECONFIG or ~/.kube/config"
                raise StateError(f"{self.where}: cannot load the kubeconfig {source}: {exc}") from None
            if not self._api_client.configuration.verify_ssl:
                raise StateError(
                    f"{self.where}: the kubeconfig turns TLS verification off (insecure-skip-tls-verify)",
                    hint="give the cluster's certificate-authority(-data) instead; trustplan always verifies TLS",
                )
        return self._api_client

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client())

    def coordination(self) -> Any:
        from kubernetes import client

        return client.CoordinationV1Api(self.client())

    def describe_error(self, exc: BaseException) -> str:
        return describe_error(exc)


class StateSpec(Protocol):
    """What KubeconfigAPI reads of trustplan.state.KubernetesStateSpec."""

    @property
    def kubeconfig(self) -> Path | None: ...
    @property
    def context(self) -> str | None: ...
    @property
    def where(self) -> str: ...


def failure_kind(detail: str) -> str:
    """What kind of failure a probe's detail describes: `refused trust` (TLS, 401, 403), `unhealthy`
    (the API answered, but nodes are not Ready), or `timeout` (no answer: down, restarting, slow)."""
    if detail.startswith(("TLS", "the API refused", "the client certificate is not allowed")):
        return "refused trust"
    if detail.startswith(("not Ready", "not in the node list", "API error")):
        return "unhealthy"
    return "timeout"


def describe_error(exc: BaseException) -> str:
    """A short, key-free description of why a Kubernetes API call failed."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError
    from urllib3.exceptions import SSLError as Urllib3SSLError

    if isinstance(exc, ApiException):
        if exc.status == 401:
            return "the API refused the client certificate (401 Unauthorized)"
        if exc.status == 403:
            return "the client certificate is not allowed to list nodes (403 Forbidden)"
        return f"API error {exc.status} {exc.reason}"
    reason: BaseException | None = exc
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
    seen = 0
    while reason is not None and seen < 5:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return trust_failure(reason)
        if isinstance(reason, ssl.SSLError | Urllib3SSLError):
            text = str(reason)
            named = trust_failure_text(text)
            if named is not None:
                return named
            return "TLS handshake refused (the API server does not accept the client certificate?)"
        if isinstance(reason, NewConnectionError | ConnectionRefusedError):
            return "connection refused (API server not listening: restarting?)"
        if isinstance(reason, ReadTimeoutError | TimeoutError):
            return f"timed out: no answer within the {CALL_TIMEOUT:g} s deadline of one call"
        if isinstance(reason, ProtocolError | ConnectionError | http.client.HTTPException):
            inner = [a for a in reason.args if isinstance(a, ssl.SSLError)]
            if inner:
                reason = inner[0]
                continue
            return (
                "the API server closed the connection without answering "
                "(it does not accept the client certificate, or it is restarting)"
            )
        nested = next((a for a in reason.args if isinstance(a, BaseException)), None)
        reason = reason.__cause__ or reason.__context__ or nested
        seen += 1
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


Progress = Callable[[str], None]


class KubernetesChecker:
    """Kubernetes gates against a fixed list of API servers (one per control plane)."""

    def __init__(
        self,
        servers: Sequence[str],
        timeout: float,
        *,
        call_timeout: float = CALL_TIMEOUT,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        if not servers:
            raise ValueError("a Kubernetes check needs at least one API server")
        self.servers = tuple(servers)
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.backoff_max = backoff_max

    async def check(
        self,
        credential: TLSIdentity,
        expected: Sequence[ExpectedNode],
        *,
        on_wait: Progress | None = None,
        on_pass: Progress | None = None,
    ) -> dict[str, str]:
        """Wait until every server answers and lists every expected node Ready.

        `on_wait(message)` is called when a server's reason for waiting changes; `on_pass(server)`
        when a server passes. Returns server -> short description. Raises GateFailedError naming
        each server that did not pass within the timeout and why.
        """
        results = await asyncio.gather(
            *(self._one(s, credential, expected, on_wait, on_pass) for s in self.servers), return_exceptions=True
        )
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, _ServerFailed):
                raise r
        if failures:
            raise GateFailedError(
                f"Kubernetes API with the client cert issued by {_short(credential.issuer)} did not pass within "
                f"{self.timeout:g} s: " + "; ".join(failures),
                hint="look at the nodes' kubelet and kube-apiserver (talosctl -n NODE service kubelet; "
                "talosctl -n NODE logs kube-apiserver); rollout.verify.timeout sets how long to wait",
            )
        return {s: r for s, r in zip(self.servers, results, strict=True) if isinstance(r, str)}

    async def wait_ready(self, server: str, credential: TLSIdentity, *, on_wait: Progress | None = None) -> None:
        """Wait until `server`'s /readyz answers 200 with `credential` (its CA bundle verifying the
        server's certificate). Raises GateFailedError naming the server and why after the timeout."""
        client = await asyncio.to_thread(_Client, server, credential, self.call_timeout)
        try:
            deadline = time.monotonic() + self.timeout
            delay, last = BACKOFF_START, ""
            while True:
                probe = await asyncio.to_thread(client.readyz)
                if probe.ok:
                    return
                if probe.detail != last and on_wait is not None:
                    on_wait(f"{_host(server)}: /readyz: {probe.detail}; waiting")
                last = probe.detail
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GateFailedError(
                        f"{_host(server)}: kube-apiserver not ready (/readyz) with the client cert issued by "
                        f"{_short(credential.issuer)} within {self.timeout:g} s: {failure_kind(last)}: {last}",
                        hint="the next control plane was not changed; look at this node's kube-apiserver "
                        "(talosctl -n NODE logs kube-apiserver); rollout.verify.timeout sets how long to wait",
                    )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.backoff_max)
        finally:
            await asyncio.to_thread(client.close)

    async def _one(
        self,
        server: str,
        credential: TLSIdentity,
        expected: Sequence[ExpectedNode],
        on_wait: Progress | None,
        on_pass: Progress | None,
    ) -> str:
        client = await asyncio.to_thread(_Client, server, credential, self.call_timeout)
        try:
            deadline = time.monotonic() + self.timeout
            delay = BACKOFF_START
            last = ""
            while True:
                probe = await asyncio.to_thread(client.probe, expected)
                if probe.ok:
                    if on_pass is not None:
                        on_pass(server)
                    return f"{probe.detail} ({probe.version})" if probe.version else probe.detail
                if probe.detail != last and on_wait is not None:
                    on_wait(f"{_host(server)}: {probe.detail}; waiting")
                last = probe.detail
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _ServerFailed(f"{_host(server)}: {failure_kind(probe.detail)}: {probe.detail}")
                wait = min(delay, left)
                log.info("%s: %s; trying again in %.1fs, %.0fs left", _host(server), probe.detail, wait, left)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.backoff_max)
        finally:
            await asyncio.to_thread(client.close)


class _ServerFailed(Exception):
    """One API server did not pass in time (collected into one GateFailedError)."""


def _host(server: str) -> str:
    parts = urlsplit(server)
    return parts.netloc or server


def _short(fp: str) -> str:
    return fp[: len("sha256:") + 12] if fp else "an unknown CA"


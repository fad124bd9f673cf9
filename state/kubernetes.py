"""The kubernetes state backend: the state in a Secret, the lock a coordination.k8s.io/v1 Lease.

    Secret <namespace>/<name>   data["state.json.gz"]: the state document, gzip (the Secret limit
                                is 1 MiB: the oldest history entries are compacted to stay under
                                `max_bytes`, never the newest); annotations name the last writer
    Lease  <namespace>/<name>   holderIdentity "user@host (pid, operation, plan)", the holder's
                                details (with its lock ID) in an annotation; renewed every third of
                                its duration while held; another process takes it only once it has
                                not been renewed for `lease_seconds` (or after `force-unlock LOCK_ID`)

Every update is a compare-and-swap on the resourceVersion that was read: an update based on an
older version is refused by the API server (409), and trustplan names the last writer instead of
overwriting. An update that cannot be stored is saved to a local rescue file (public data only),
so it is never lost. A restarting API server (connection refused, 5xx) is retried for `retry_seconds`.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from trustplan.state.backend import Holder, KubernetesStateSpec
from trustplan.state.document import StateDocument, dump, empty_state, parse
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

from trustplan.errors import StateError
from trustplan.system.atomic import write_atomic

KEY = "state.json.gz"
ANNOTATION_WRITER = "trustplan.dev/written-by"
ANNOTATION_WRITE_ID = "trustplan.dev/write-id"
ANNOTATION_HOLDER = "trustplan.dev/holder"
MANAGED_BY = {"app.kubernetes.io/managed-by": "trustplan"}
CALL_TIMEOUT = 10.0

T = TypeVar("T")
_UNREAD = "<unread>"


class KubeAPI(Protocol):
    """The connection to the API server the state lives on. The shell builds it from the spec's
    kubeconfig and context (trustplan.providers.kubernetes.KubeconfigAPI) and hands it in: this module
    stores and locks; how to reach the server, and to say why it could not, is the provider's."""

    def core(self) -> Any:
        """A kubernetes.client.CoreV1Api (Secrets)."""
        ...

    def coordination(self) -> Any:
        """A kubernetes.client.CoordinationV1Api (Leases)."""
        ...

    def describe_error(self, exc: BaseException) -> str:
        """A short, key-free description of why a call did not reach the API server."""
        ...


class KubernetesState:
    """State in a Secret and a Lease lock, in a namespace the team's kubeconfig can reach."""

    def __init__(self, spec: KubernetesStateSpec, rescue_dir: Path, api: KubeAPI) -> None:
        self.spec = spec
        self.rescue_dir = rescue_dir
        self.api = api
        self._rv: str | None = _UNREAD  # resourceVersion of the Secret read last (None: there was none)
        self._holder: Holder | None = None  # while this process holds the lock
        self._lost: str | None = None  # why the held lock was lost, if it was
        self._stop = threading.Event()

    @property
    def where(self) -> str:
        return self.spec.where

    # --- the API --------------------------------------------------------------------------------

    def _core(self) -> Any:
        return self.api.core()

    def _coordination(self) -> Any:
        return self.api.coordination()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Call the API, retrying what a restarting server answers; API errors (4xx) are raised as is."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + self.spec.retry_seconds
        delay = 0.2
        while True:
            try:
                return fn()
            except ApiException as exc:
                if exc.status not in (0, None, 429, 500, 502, 503, 504) or time.monotonic() >= deadline:
                    if exc.status in (401, 403):
                        raise StateError(f"{self.where}: {what}: {_api_message(exc)}") from None
                    raise
            except (HTTPError, OSError) as exc:  # connection errors: the server may be restarting
                describe_error = self.api.describe_error
                reason = exc.reason if isinstance(exc, MaxRetryError) else exc
                if isinstance(reason, SSLError | ssl.SSLError):  # a wrong CA or certificate: retrying won't help
                    raise StateError(f"{self.where}: {what}: {describe_error(exc)}") from None
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"{self.where}: {what}: {describe_error(exc)} (retried for {self.spec.retry_seconds:g}s)"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- the state document ------------------------------------------------------------------------

    def read(self, cluster: str) -> StateDocument:
        """The state in the Secret, or an empty one if there is no Secret yet."""
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self._call("read the state", lambda: self._core().read_namespaced_secret(
                self.spec.name, self.spec.namespace, _request_timeout=CALL_TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                self._rv = None
                return empty_state(cluster)
            raise StateError(f"{self.where}: cannot read the state: {_api_message(exc)}") from None
        doc = self._decode(secret)
        if doc["cluster"] != cluster:
            raise StateError(f"{self.where}: this state belongs to cluster {doc['cluster']!r}, not {cluster!r}")
        self._rv = secret.metadata.resource_version
        return doc

    def write(self, doc: StateDocument) -> None:
        """Compare-and-swap on the version read last; a refused update is kept in a rescue file."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._rv == _UNREAD:
            raise StateError(f"{self.where}: the state must be read before it is written")
        if self._lost is not None:
            self._refuse(doc, f"the state lock was lost while this process held it: {self._lost}")
        write_id = str(uuid.uuid4())
        writer = self._holder or Holder.me("write")
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.spec.name,
                namespace=self.spec.namespace,
                labels=MANAGED_BY,
                annotations={
                    ANNOTATION_WRITER: json.dumps({**writer.to_dict(), "serial": doc["serial"]}, sort_keys=True),
                    ANNOTATION_WRITE_ID: write_id,
                },
                resource_version=self._rv,
            ),
            type="Opaque",
            data={KEY: base64.b64encode(self._encode(doc)).decode()},
        )
        core = self._core()
        try:
            if self._rv is None:
                stored = self._call("create the state Secret", lambda: core.create_namespaced_secret(
                    self.spec.namespace, body, _request_timeout=CALL_TIMEOUT))
            else:
                stored = self._call("write the state", lambda: core.replace_namespaced_secret(
                    self.spec.name, self.spec.namespace, body, _request_timeout=CALL_TIMEOUT))
        except ApiException as exc:
            if exc.status == 409:
                current = self._current_secret()
                if current is not None and (current.metadata.annotations or {}).get(ANNOTATION_WRITE_ID) == write_id:
                    self._rv = current.metadata.resource_version  # our own write, whose answer was lost
                    return
                self._refuse(doc, f"another writer changed it since it was read: last written by {_writer(current)}")
            if exc.status == 404:
                self._refuse(doc, "the Secret was deleted since the state was read")
            self._refuse(doc, f"the API server refused the update: {_api_message(exc)}")
        except StateError as exc:
            self._refuse(doc, str(exc).removeprefix(f"{self.where}: "))
        self._rv = stored.metadata.resource_version

    def _current_secret(self) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call("read the state", lambda: self._core().read_namespaced_secret(
                self.spec.name, self.spec.namespace, _request_timeout=CALL_TIMEOUT))
        except (ApiException, StateError):
            return None

    def _refuse(self, doc: StateDocument, reason: str) -> None:
        rescue = self.rescue_dir / f"trustplan.state.rescue.{doc['serial']}.json"
        try:
            write_atomic(rescue, dump(doc), mode=0o644)
            kept = f"; this update (serial {doc['serial']}) was saved to {rescue}"
        except OSError as exc:
            kept = f"; saving this update to {rescue} failed too ({exc.strerror})"
        raise StateError(
            f"{self.where}: the state was not written: {reason}{kept}",
            hint="nothing was overwritten; compare the two, then `trustplan state migrate --from FILE` "
            "pushes a state file into the backend",
        )

    def _encode(self, doc: StateDocument) -> bytes:
        """gzip of the canonical JSON, the oldest history entries dropped until it fits `max_bytes`
        (their number is added to `history_compacted`); the newest entry always stays."""
        history = list(doc["history"])
        compacted = doc.get("history_compacted", 0)
        while True:
            candidate = {**doc, "history": history}
            if compacted:
                candidate["history_compacted"] = compacted
            data = gzip.compress(dump(candidate), mtime=0)
            if len(data) <= self.spec.max_bytes:
                return data
            if len(history) <= 1:
                raise StateError(
                    f"{self.where}: the state is {len(data)} bytes compressed even with one history entry, "
                    f"over the limit of {self.spec.max_bytes}"
                )
            # Half of what is over the limit, at least one entry: few passes even for a long history.
            over = (len(data) - self.spec.max_bytes) / len(data)
            cut = min(len(history) - 1, max(1, int(len(history) * over / 2)))
            history = history[cut:]
            compacted += cut

    def _decode(self, secret: Any) -> StateDocument:
        raw = (secret.data or {}).get(KEY)
        if raw is None:
            raise StateError(f"{self.where}: the Secret has no {KEY!r} key: it was not written by trustplan")
        try:
            data = gzip.decompress(base64.b64decode(raw))
        except (ValueError, OSError, EOFError) as exc:
            raise StateError(f"{self.where}: {KEY} is not gzip-compressed base64 ({exc})") from None
        return parse(data, self.where)

    # --- the lock --------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float, operation: str, plan_digest: str | None = None) -> Iterator[Holder]:
        """Hold the Lease; wait up to `timeout` seconds for its holder, then fail naming it."""
        holder = self._acquire(Holder.me(operation, plan_digest), timeout)
        self._holder, self._lost = holder, None
        self._stop.clear()
        renewer = threading.Thread(target=self._renew_loop, args=(holder,), name="trustplan-lease", daemon=True)
        renewer.start()
        try:
            yield holder
        finally:
            self._stop.set()
            renewer.join()
            self._holder = None
            if self._lost is None:
                self._release(holder)

    def _lease_body(self, holder: Holder, now: dt.datetime, old: Any) -> Any:
        from kubernetes import client

        transitions = (old.spec.lease_transitions or 0) + 1 if old is not None and old.spec else 0
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.spec.name,
                namespace=self.spec.namespace,
                labels=MANAGED_BY,
                annotations={ANNOTATION_HOLDER: json.dumps(holder.to_dict(), sort_keys=True)},
                resource_version=old.metadata.resource_version if old is not None else None,
            ),
            spec=client.V1LeaseSpec(
                holder_identity=holder.describe(),
                lease_duration_seconds=self.spec.lease_seconds,
                acquire_time=_micro(now),  # type: ignore[arg-type]  # see _micro
                renew_time=_micro(now),  # type: ignore[arg-type]
                lease_transitions=transitions,
            ),
        )

    def _get_lease(self) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call("read the lock", lambda: self._coordination().read_namespaced_lease(
                self.spec.name, self.spec.namespace, _request_timeout=CALL_TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StateError(f"{self.where}: cannot read the lock: {_api_message(exc)}") from None

    def _acquire(self, me: Holder, timeout: float) -> Holder:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        api = self._coordination()
        while True:
            lease = self._get_lease()
            now = dt.datetime.now(dt.UTC)
            try:
                if lease is None:
                    self._take(api.create_namespaced_lease, self.spec.namespace, self._lease_body(me, now, None))
                    return me
                if _lease_free(lease, now):
                    body = self._lease_body(me, now, lease)
                    self._take(api.replace_namespaced_lease, self.spec.name, self.spec.namespace, body)
                    return me
            except ApiException as exc:
                if exc.status != 409:  # 409: another process was faster; look again
                    raise StateError(f"{self.where}: cannot take the lock: {_api_message(exc)}") from None
                continue
            if time.monotonic() >= deadline:
                other = _lease_holder(lease)
                raise StateError(
                    f"{self.where}: state is locked by {other.describe()}, lock ID {other.lock_id}",
                    hint=f"wait for it, or pass --lock-timeout 5m to wait; if that process is gone, its lock "
                    f"expires {lease.spec.lease_duration_seconds}s after its last renewal, or run "
                    f"`trustplan force-unlock {other.lock_id}`",
                )
            time.sleep(max(0.05, min(1.0, deadline - time.monotonic())))

    def _take(self, method: Callable[..., Any], *args: Any) -> None:
        self._call("take the lock", lambda: method(*args, _request_timeout=CALL_TIMEOUT))

    def _renew_loop(self, holder: Holder) -> None:
        from kubernetes.client.exceptions import ApiException

        interval = self.spec.lease_seconds / 3
        last_renewed = time.monotonic()
        while not self._stop.wait(interval if time.monotonic() - last_renewed < interval else 0.5):
            try:
                lease = self._get_lease()
                if lease is None or _lease_holder(lease).lock_id != holder.lock_id:
                    taker = "nobody (the Lease was deleted)" if lease is None else _lease_holder(lease).describe()
                    self._lost = f"it is now held by {taker}"
                    return
                lease.spec.renew_time = _micro(dt.datetime.now(dt.UTC))
                lease.spec.acquire_time = _micro(lease.spec.acquire_time) if lease.spec.acquire_time else None
                self._coordination().replace_namespaced_lease(
                    self.spec.name, self.spec.namespace, lease, _request_timeout=CALL_TIMEOUT
                )
                last_renewed = time.monotonic()
            except (ApiException, StateError, Exception):  # noqa: BLE001 - retried until the lease runs out
                if time.monotonic() - last_renewed > self.spec.lease_seconds:
                    self._lost = f"it could not be renewed for {self.spec.lease_seconds}s and expired"
                    return

    def _release(self, holder: Holder) -> None:
        """Delete our Lease (only if it is still ours); if that fails, it expires on its own."""
        from kubernetes import client

        try:
            lease = self._get_lease()
            if lease is not None and _lease_holder(lease).lock_id == holder.lock_id:
                self._delete_lease(lease)
        except Exception:  # noqa: BLE001 - the lease expires after lease_seconds anyway
            _ = client
            return

    def _delete_lease(self, lease: Any) -> None:
        from kubernetes import client

        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=lease.metadata.resource_version)
        )
        self._call("release the lock", lambda: self._coordination().delete_namespaced_lease(
            self.spec.name, self.spec.namespace, body=options, _request_timeout=CALL_TIMEOUT))

    def force_unlock(self, lock_id: str) -> Holder:
        """Delete the Lease if LOCK_ID is the current lock; return who held it."""
        from kubernetes.client.exceptions import ApiException

        lease = self._get_lease()
        if lease is None or not (lease.spec and lease.spec.holder_identity):
            raise StateError(f"{self.where}: the state is not locked; there is no lock {lock_id} to force")
        current = _lease_holder(lease)
        if current.lock_id != lock_id:
            raise StateError(
                f"{self.where}: {lock_id} is not the current lock: the state is locked by {current.describe()}, "
                f"lock ID {current.lock_id}",
                hint="force-unlock only the lock ID an error message gave you, and only if its holder is gone",
            )
        try:
            self._delete_lease(lease)
        except ApiException as exc:
            raise StateError(f"{self.where}: the lock changed while unlocking ({_api_message(exc)})") from None
        return current


def _micro(t: dt.datetime) -> str:
    """A MicroTime as the API server parses it (RFC 3339 with exactly six fraction digits; the client's
    isoformat() drops them when they are zero, which the server refuses)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease_free(lease: Any, now: dt.datetime) -> bool:
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return True
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None:
        return True
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=dt.UTC)
    return bool(renewed + dt.timedelta(seconds=spec.lease_duration_seconds or 0) < now)


def _lease_holder(lease: Any) -> Holder:
    raw = (lease.metadata.annotations or {}).get(ANNOTATION_HOLDER)
    try:
        return Holder.from_dict(json.loads(raw)) if raw else _foreign(lease)
    except (ValueError, TypeError):
        return _foreign(lease)


def _foreign(lease: Any) -> Holder:
    identity = (lease.spec.holder_identity if lease.spec else None) or "?"
    return Holder(user=identity, host="?", pid=0, operation="?", lock_id="")


def _writer(secret: Any) -> str:
    if secret is None:
        return "someone (the Secret is gone now)"
    raw = (secret.metadata.annotations or {}).get(ANNOTATION_WRITER)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        info = {}
    if not info:
        return "someone outside trustplan (kubectl?)"
    return f"{Holder.from_dict(info).describe()}, serial {info.get('serial', '?')}"


def _api_message(exc: Any) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")

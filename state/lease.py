"""The lock of the kubernetes state backend: a coordination.k8s.io/v1 Lease.

    holderIdentity "user@host (pid, operation, plan)", the holder's details (with its lock ID) in an
    annotation; renewed every third of its duration while held; another process takes it only once
    it has not been renewed for `lease_seconds` (or after `force-unlock LOCK_ID`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from trustplan.state.backend import Holder, KubernetesStateSpec
from trustplan.state.kubeapi import CALL_TIMEOUT, MANAGED_BY, KubeAPI, api_message, call

from trustplan.errors import StateError

ANNOTATION_HOLDER = "trustplan.dev/holder"

T = TypeVar("T")


class LeaseLock:
    """The Lease `<namespace>/<name>` as a lock. While held, `holder` is this process's; `lost`
    says why a held lock was lost (the renewals failed, or someone forced it)."""

    def __init__(self, spec: KubernetesStateSpec, api: KubeAPI) -> None:
        self.spec = spec
        self.api = api
        self.holder: Holder | None = None
        self.lost: str | None = None
        self._stop = threading.Event()

    @property
    def where(self) -> str:
        return self.spec.where

    def _coordination(self) -> Any:
        return self.api.coordination()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call(self.api, self.spec, what, fn)

    @contextmanager
    def hold(self, timeout: float, operation: str, plan_digest: str | None = None) -> Iterator[Holder]:
        """Hold the Lease; wait up to `timeout` seconds for its holder, then fail naming it."""
        holder = self._acquire(Holder.me(operation, plan_digest), timeout)
        self.holder, self.lost = holder, None
        self._stop.clear()
        renewer = threading.Thread(target=self._renew_loop, args=(holder,), name="trustplan-lease", daemon=True)
        renewer.start()
        try:
            yield holder
        finally:
            self._stop.set()
            renewer.join()
            self.holder = None
            if self.lost is None:
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
            raise StateError(f"{self.where}: cannot read the lock: {api_message(exc)}") from None

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
                    raise StateError(f"{self.where}: cannot take the lock: {api_message(exc)}") from None
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
                    self.lost = f"it is now held by {taker}"
                    return
                lease.spec.renew_time = _micro(dt.datetime.now(dt.UTC))
                lease.spec.acquire_time = _micro(lease.spec.acquire_time) if lease.spec.acquire_time else None
                self._coordination().replace_namespaced_lease(
                    self.spec.name, self.spec.namespace, lease, _request_timeout=CALL_TIMEOUT
                )
                last_renewed = time.monotonic()
            except (ApiException, StateError, Exception):  # noqa: BLE001 - retried until the lease runs out
                if time.monotonic() - last_renewed > self.spec.lease_seconds:
                    self.lost = f"it could not be renewed for {self.spec.lease_seconds}s and expired"
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
            raise StateError(f"{self.where}: the lock changed while unlocking ({api_message(exc)})") from None
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

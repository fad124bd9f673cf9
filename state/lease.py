"""The lock of the kubernetes state backend: a coordination.k8s.io/v1 Lease, used the way client-go's
leader election (k8s.io/client-go/tools/leaderelection) uses one.

    holderIdentity "user@host (pid, operation, plan)", the holder's details (with its lock ID) in an
    annotation, renewTime written by the holder at each renewal.

    Taking it:   a Lease with a holder is taken only once the taker has seen the same record (its
                 resourceVersion, holder and renewTime) unchanged for leaseDurationSeconds, timed
                 on the taker's own monotonic clock from when it first saw that record. renewTime is
                 never compared with the taker's wall clock: a skewed clock, either way, cannot
                 make a held lease look expired. The replace carries the resourceVersion that was
                 observed (another taker that was faster gets 409).
    Holding it:  renewed every third of its duration; each renewal attempt has its own short
                 request timeout, and the renewals have a deadline of two thirds of the duration
                 from the start of the last renewal that succeeded (no long retry loop in between).
                 Past that deadline the lock is lost: the holder stops considering itself the
                 holder before any taker can have seen the record unchanged for a whole duration.
    Lost:        a holder that lost the lease (the deadline passed, the Lease is gone or someone
                 else's) never writes the state (trustplan.state.kubernetes checks `check_held()`).
    Releasing:   deletes the Lease only if it is still ours, with the resourceVersion as a
                 precondition (never someone else's newer lease).

`clock` (monotonic seconds), `wall` (the time written into renewTime) and `sleep` are injectable:
tests run a holder with a clock hours ahead or behind, and wait without waiting.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from trustplan.state.backend import Holder, KubernetesStateSpec, holder_text
from trustplan.state.kubeapi import CALL_TIMEOUT, MANAGED_BY, KubeAPI, api_message, call

from trustplan.errors import StateError

ANNOTATION_HOLDER = "trustplan.dev/holder"
#: a renewal that has not succeeded for this fraction of the lease loses the lock (client-go's RenewDeadline)
RENEW_DEADLINE = 2 / 3
#: renewals start this often (a fraction of the lease)
RENEW_EVERY = 1 / 3

T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseLock:
    """The Lease `<namespace>/<name>` as a lock. While held, `holder` is this process's; `lost`
    says why a held lock was lost (the renewals failed, or someone took or deleted it)."""

    def __init__(
        self,
        spec: KubernetesStateSpec,
        api: KubeAPI,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = _now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.api = api
        self.holder: Holder | None = None
        self.lost: str | None = None
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._stop = threading.Event()
        self._renewed_at = 0.0  # monotonic time a renewal that succeeded was started
        self._observed: tuple[Any, ...] | None = None  # the record a taker watches, and since when
        self._observed_at = 0.0

    @property
    def where(self) -> str:
        return self.spec.where

    @property
    def renew_deadline(self) -> float:
        return self.spec.lease_seconds * RENEW_DEADLINE

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

    def check_held(self) -> None:
        """Raise StateError unless this process still holds the lease: it was not lost, and the last
        renewal that succeeded started less than the renewal deadline ago."""
        if self.lost is None and self.holder is not None and self._clock() - self._renewed_at > self.renew_deadline:
            self.lost = f"it could not be renewed within {self.renew_deadline:g}s and may be taken by another process"
        if self.lost is not None:
            raise StateError(f"{self.where}: the state lock was lost while this process held it: {self.lost}")

    def remaining(self) -> float:
        """Seconds until the renewal deadline of the lease held (0 when it passed)."""
        return max(0.0, self._renewed_at + self.renew_deadline - self._clock())

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

    def _free(self, lease: Any) -> bool:
        """Whether a taker may take `lease`: no holder, or the same record seen unchanged for the
        lease's duration on this process's own clock (client-go's observedTime)."""
        spec = lease.spec
        if spec is None or not spec.holder_identity:
            return True
        record = _record(lease)
        now = self._clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.lease_duration_seconds or self.spec.lease_seconds
        return now - self._observed_at >= duration

    def _acquire(self, me: Holder, timeout: float) -> Holder:
        from kubernetes.client.exceptions import ApiException

        deadline = self._clock() + timeout
        api = self._coordination()
        self._observed = None
        while True:
            lease = self._get_lease()
            started = self._clock()
            try:
                if lease is None:
                    body = self._lease_body(me, self._wall(), None)
                    self._take(api.create_namespaced_lease, self.spec.namespace, body)
                    self._renewed_at = started
                    return me
                if self._free(lease):
                    body = self._lease_body(me, self._wall(), lease)  # with the observed resourceVersion
                    self._take(api.replace_namespaced_lease, self.spec.name, self.spec.namespace, body)
                    self._renewed_at = started
                    return me
            except ApiException as exc:
                if exc.status != 409:  # 409: another process was faster; look again
                    raise StateError(f"{self.where}: cannot take the lock: {api_message(exc)}") from None
                continue
            if self._clock() >= deadline:
                other = _lease_holder(lease)
                seconds = lease.spec.lease_duration_seconds or self.spec.lease_seconds
                raise StateError(
                    f"{self.where}: state is locked by {holder_text(other)}, lock ID {other.lock_id}",
                    hint=f"wait for it, or pass --lock-timeout 5m to wait; if that process is gone, its lock "
                    f"is taken once it has gone unrenewed for {seconds}s as seen by the next trustplan "
                    f"(--lock-timeout {2 * seconds}s waits for that), or run `trustplan force-unlock {other.lock_id}`",
                )
            self._sleep(max(0.05, min(1.0, deadline - self._clock())))

    def _take(self, method: Callable[..., Any], *args: Any) -> None:
        self._call("take the lock", lambda: method(*args, _request_timeout=CALL_TIMEOUT))

    def _renew_loop(self, holder: Holder) -> None:
        interval = self.spec.lease_seconds * RENEW_EVERY
        while not self._stop.wait(interval if self._clock() - self._renewed_at < interval else 0.5):
            if not self.renew(holder):
                return

    def renew(self, holder: Holder) -> bool:
        """One renewal attempt, its request bounded by the time left before the renewal deadline (no
        retry loop: the next attempt is the loop's). False once the lock is lost."""
        from kubernetes.client.exceptions import ApiException

        started = self._clock()
        left = self._renewed_at + self.renew_deadline - started
        if left <= 0:
            self.lost = f"it could not be renewed within {self.renew_deadline:g}s and may be taken by another process"
            return False
        request_timeout = max(0.1, min(CALL_TIMEOUT, left, self.spec.lease_seconds * RENEW_EVERY))
        coordination = self._coordination()
        try:
            try:
                lease = coordination.read_namespaced_lease(
                    self.spec.name, self.spec.namespace, _request_timeout=request_timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                lease = None
            if lease is None or _lease_holder(lease).lock_id != holder.lock_id:
                taker = "nobody (the Lease was deleted)" if lease is None else _lease_holder(lease).describe()
                self.lost = f"it is now held by {taker}"
                return False
            lease.spec.renew_time = _micro(self._wall())
            lease.spec.acquire_time = _micro(lease.spec.acquire_time) if lease.spec.acquire_time else None
            left = self._renewed_at + self.renew_deadline - self._clock()
            if left <= 0:
                return self.renew(holder)  # the deadline passed while reading: lost
            coordination.replace_namespaced_lease(
                self.spec.name, self.spec.namespace, lease,
                _request_timeout=max(0.1, min(request_timeout, left)),
            )
        except Exception:  # noqa: BLE001 - any failure is retried by the next attempt, until the deadline
            return True
        self._renewed_at = started
        return True

    def _release(self, holder: Holder) -> None:
        """Delete our Lease (only if it is still ours); if that fails, it expires on its own."""
        try:
            lease = self._get_lease()
            if lease is not None and _lease_holder(lease).lock_id == holder.lock_id:
                self._delete_lease(lease)
        except Exception:  # noqa: BLE001 - the lease expires after lease_seconds anyway
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
                f"{self.where}: {lock_id} is not the current lock: the state is locked by {holder_text(current)}, "
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


def _record(lease: Any) -> tuple[Any, ...]:
    """What changes when the holder renews or another takes over: a taker watches it."""
    spec = lease.spec
    return (
        lease.metadata.resource_version,
        spec.holder_identity,
        str(spec.renew_time),
        str(spec.acquire_time),
        spec.lease_transitions,
    )


def _lease_holder(lease: Any) -> Holder:
    raw = (lease.metadata.annotations or {}).get(ANNOTATION_HOLDER)
    try:
        return Holder.from_dict(json.loads(raw)) if raw else _foreign(lease)
    except (ValueError, TypeError):
        return _foreign(lease)


def _foreign(lease: Any) -> Holder:
    identity = (lease.spec.holder_identity if lease.spec else None) or "?"
    return Holder(user=identity, host="?", pid=0, operation="?", lock_id="")

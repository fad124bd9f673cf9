"""The kubernetes state backend: the state in a Secret, the lock a coordination.k8s.io/v1 Lease.

    Secret <namespace>/<name>   data["state.json.gz"]: the state document, gzip (the Secret limit
                                is 1 MiB: the oldest history entries are compacted to stay under
                                `max_bytes`, never the newest); annotations name the last writer
    Lease  <namespace>/<name>   the lock (trustplan.state.lease): renewed while held, taken by
                                another process only once it expired or was forced

Every update is a compare-and-swap on the resourceVersion that was read: an update based on an
older version is refused by the API server (409), and trustplan names the last writer instead of
overwriting. An update that cannot be stored is saved to a local rescue file (public data only),
so it is never lost. A restarting API server (connection refused, 5xx) is retried for `retry_seconds`.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from trustplan.state.backend import Holder, KubernetesStateSpec
from trustplan.state.document import StateDocument, empty_state, encode, load
from trustplan.state.kubeapi import CALL_TIMEOUT, MANAGED_BY, KubeAPI, api_message, call
from trustplan.state.lease import LeaseLock

from trustplan.errors import StateError
from trustplan.system.atomic import write_atomic

KEY = "state.json.gz"
ANNOTATION_WRITER = "trustplan.dev/written-by"
ANNOTATION_WRITE_ID = "trustplan.dev/write-id"

T = TypeVar("T")
_UNREAD = "<unread>"


class KubernetesState:
    """State in a Secret and a Lease lock (trustplan.state.lease), in a namespace the team's
    kubeconfig can reach, through the API connection it is handed (trustplan.state.kubeapi.KubeAPI)."""

    def __init__(self, spec: KubernetesStateSpec, rescue_dir: Path, api: KubeAPI) -> None:
        self.spec = spec
        self.rescue_dir = rescue_dir
        self.api = api
        self._rv: str | None = _UNREAD  # resourceVersion of the Secret read last (None: there was none)
        self._lease = LeaseLock(spec, api)

    @property
    def where(self) -> str:
        return self.spec.where

    def _core(self) -> Any:
        return self.api.core()

    def _call(self, what: str, fn: Callable[[], T], retry_seconds: float | None = None) -> T:
        return call(self.api, self.spec, what, fn, retry_seconds)

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
            raise StateError(f"{self.where}: cannot read the state: {api_message(exc)}") from None
        doc = self._decode(secret)
        if doc.cluster != cluster:
            raise StateError(f"{self.where}: this state belongs to cluster {doc.cluster!r}, not {cluster!r}")
        self._rv = secret.metadata.resource_version
        return doc

    def write(self, doc: StateDocument) -> None:
        """Compare-and-swap on the version read last; a refused update is kept in a rescue file."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._rv == _UNREAD:
            raise StateError(f"{self.where}: the state must be read before it is written")
        retry = self.spec.retry_seconds
        if self._lease.holder is not None or self._lease.lost is not None:  # written under our lock
            try:
                self._lease.check_held()
            except StateError as exc:
                self._refuse(doc, str(exc).removeprefix(f"{self.where}: "))
            retry = min(retry, self._lease.remaining())  # never retried past the lease's renewal deadline
        write_id = str(uuid.uuid4())
        writer = self._lease.holder or Holder.me("write")
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.spec.name,
                namespace=self.spec.namespace,
                labels=MANAGED_BY,
                annotations={
                    ANNOTATION_WRITER: json.dumps({**writer.to_dict(), "serial": doc.serial}, sort_keys=True),
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
                    self.spec.namespace, body, _request_timeout=CALL_TIMEOUT), retry)
            else:
                stored = self._call("write the state", lambda: core.replace_namespaced_secret(
                    self.spec.name, self.spec.namespace, body, _request_timeout=CALL_TIMEOUT), retry)
        except ApiException as exc:
            if exc.status == 409:
                current = self._current_secret()
                if current is not None and (current.metadata.annotations or {}).get(ANNOTATION_WRITE_ID) == write_id:
                    self._rv = current.metadata.resource_version  # our own write, whose answer was lost
                    return
                self._refuse(doc, f"another writer changed it since it was read: last written by {_writer(current)}")
            if exc.status == 404:
                self._refuse(doc, "the Secret was deleted since the state was read")
            self._refuse(doc, f"the API server refused the update: {api_message(exc)}")
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
        rescue = self.rescue_dir / f"trustplan.state.rescue.{doc.serial}.json"
        try:
            write_atomic(rescue, encode(doc), mode=0o644)
            kept = f"; this update (serial {doc.serial}) was saved to {rescue}"
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
        history = doc.history
        compacted = doc.history_compacted
        while True:
            candidate = dataclasses.replace(doc, history=history, history_compacted=compacted)
            data = gzip.compress(encode(candidate), mtime=0)
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
            compacted = (compacted or 0) + cut

    def _decode(self, secret: Any) -> StateDocument:
        raw = (secret.data or {}).get(KEY)
        if raw is None:
            raise StateError(f"{self.where}: the Secret has no {KEY!r} key: it was not written by trustplan")
        try:
            data = gzip.decompress(base64.b64decode(raw))
        except (ValueError, OSError, EOFError) as exc:
            raise StateError(f"{self.where}: {KEY} is not gzip-compressed base64 ({exc})") from None
        return load(data, self.where)

    # --- the lock (trustplan.state.lease) ------------------------------------------------------------

    def lock(self, timeout: float, operation: str, plan_digest: str | None = None) -> AbstractContextManager[Holder]:
        """Hold the Lease; wait up to `timeout` seconds for its holder, then fail naming it."""
        return self._lease.hold(timeout, operation, plan_digest)

    def force_unlock(self, lock_id: str) -> Holder:
        """Delete the Lease if LOCK_ID is the current lock; return who held it."""
        return self._lease.force_unlock(lock_id)


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

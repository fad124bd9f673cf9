"""What every state backend offers, and who holds a lock.

    StateBackend (Protocol)
      read(cluster) -> StateDocument      the current state, or an empty one
      write(doc)                          replace it; never loses another writer's update
      lock(timeout, operation, digest)    hold the state lock for one plan/apply/migrate
      force_unlock(lock_id)               release a lock whose holder is gone

Backends: `LocalState` (a file beside trustplan.yaml, flock) and `KubernetesState` (a Secret with
compare-and-swap on its resourceVersion, a coordination.k8s.io Lease as the lock).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trustplan.state.document import StateDocument

from trustplan.talos import pki


class StateBackend(Protocol):
    """A place for the state document and its lock."""

    @property
    def where(self) -> str:
        """How messages name this backend (a path, or `kubernetes secret ns/name`)."""
        ...

    def read(self, cluster: str) -> StateDocument: ...

    def write(self, doc: StateDocument) -> None: ...

    def lock(
        self, timeout: float, operation: str, plan_digest: str | None = None
    ) -> AbstractContextManager[Holder]: ...

    def force_unlock(self, lock_id: str) -> Holder: ...


@dataclass(frozen=True)
class Holder:
    """Who holds (or last wrote) the state: enough for a colleague to find them."""

    user: str
    host: str
    pid: int
    operation: str
    plan_digest: str | None = None
    since: str = ""
    lock_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def me(cls, operation: str, plan_digest: str | None = None) -> Holder:
        return cls(
            user=_user(),
            host=socket.gethostname(),
            pid=os.getpid(),
            operation=operation,
            plan_digest=plan_digest,
            since=pki.iso_time(dt.datetime.now(dt.UTC)),
        )

    def describe(self) -> str:
        plan = f" of plan {self.plan_digest[:19]}" if self.plan_digest else ""
        return f"{self.user}@{self.host} (pid {self.pid}, {self.operation}{plan} since {self.since or '?'})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "host": self.host,
            "pid": self.pid,
            "operation": self.operation,
            "plan_digest": self.plan_digest,
            "since": self.since,
            "lock_id": self.lock_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holder:
        return cls(
            user=str(data.get("user", "?")),
            host=str(data.get("host", "?")),
            pid=int(data.get("pid", 0) or 0),
            operation=str(data.get("operation", "?")),
            plan_digest=data.get("plan_digest") or None,
            since=str(data.get("since", "")),
            lock_id=str(data.get("lock_id", "")),
        )


@dataclass(frozen=True)
class KubernetesStateSpec:
    """`state: {backend: kubernetes, ...}` in trustplan.yaml."""

    namespace: str
    name: str
    kubeconfig: Path | None = None  # None: $KUBECONFIG, then ~/.kube/config
    context: str | None = None
    lease_seconds: int = 30  # a holder that stops renewing loses the lock this long after its last renewal
    max_bytes: int = 512 * 1024  # the compressed state; Secrets hold at most 1 MiB
    retry_seconds: float = 60.0  # how long an unreachable API server (restarting) is retried

    @property
    def where(self) -> str:
        """How messages name the state: `kubernetes secret <namespace>/<name> (context <context>)`."""
        context = f" (context {self.context})" if self.context else ""
        return f"kubernetes secret {self.namespace}/{self.name}{context}"


def holder_text(holder: Holder) -> str:
    """`holder.describe()` for a message, saying when its process is gone (same host, no such pid):
    then its lock is stale, not busy."""
    if holder.pid > 0 and holder.host == socket.gethostname() and not _alive(holder.pid):
        return f"{holder.describe()}, a process that is no longer running"
    return holder.describe()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

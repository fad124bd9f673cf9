"""The graceful etcd CA rotation, run against real etcd members (trustplan_sim.etcd_members), with the
gates a plan puts between its steps and a writer that proves nothing acknowledged is lost.

    accept   every member: cluster.etcd.ca = old + new (old first: still issues from old), restart;
    swap     every member: cluster.etcd.ca = new + old (new first, new key): its leaves now come from
             the new CA; no restart (etcd reads its leaf files at every handshake, its CA file only at
             start, and every member already trusts both CAs);
    remove   every member: cluster.etcd.ca = new alone, restart: the old CA is trusted nowhere.

A restart takes one member down; the gate after it waits until that member is healthy over TLS with a
client certificate from a CA the caller holds, every member sees the same leader, and every member's
revision has reached the leader's (writes run concurrently, so "caught up" is the test, not equality).
A member that does not come back raises GateFailed before any other member is touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trustplan_sim.etcd_members import EtcdClient, EtcdCluster, Member, issue_leaf

from trustplan.talos import pki


class GateFailed(RuntimeError):
    """A member did not come back (or the cluster lost its leader): the rotation stopped here."""


def quorum(n: int) -> int:
    """Votes a cluster of n members needs: a majority."""
    return n // 2 + 1


@dataclass(frozen=True)
class Step:
    """One step of the rolling rotation, as a plan lists it."""

    phase: str
    member: str
    ca_order: tuple[str, ...]   # the certificates in cluster.etcd.ca.crt, issuing first ("old", "new")
    issuer: str                 # whose key goes with it
    restart: bool
    up_during: int              # members running while this step runs
    quorum: int                 # members a majority needs

    def describe(self) -> str:
        action = "write config, restart etcd" if self.restart else "write config (leaves reload, no restart)"
        return (f"{self.phase:6} {self.member}: ca.crt = {'+'.join(self.ca_order)} (issues from {self.issuer}); "
                f"{action}; {self.up_during}/{self.up_during + self.restart} up, quorum {self.quorum}")


def rolling_steps(members: list[str]) -> list[Step]:
    """The whole graceful rotation, one member at a time, phase by phase (barriers)."""
    n, q = len(members), quorum(len(members))
    phases = (("accept", ("old", "new"), "old", True), ("swap", ("new", "old"), "new", False),
              ("remove", ("new",), "new", True))
    return [Step(phase, name, order, issuer, restart, n - restart, q)
            for phase, order, issuer, restart in phases for name in members]


@dataclass
class Writer:
    """Writes w/<n> keys as fast as the cluster acknowledges them, to any member that answers (a client
    with every endpoint, as kube-apiserver is configured); records each acknowledgement and every
    interval in which no write succeeded."""

    client: EtcdClient
    members: list[Member]
    acked: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    longest_failed_window_s: float = 0.0
    longest_ack_gap_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        n, first_failure, last_ack = 0, None, time.monotonic()
        while not self._stop.is_set():
            key, value = f"w/{n:08d}", f"v{n}"
            self.attempts += 1
            ok = False
            for k in range(len(self.members)):
                try:
                    self.client.put(self.members[(n + k) % len(self.members)], key, value)
                    ok = True
                    break
                except (OSError, ValueError) as e:
                    reason = str(getattr(e, "reason", e))[:80]
                    self.errors[reason] = self.errors.get(reason, 0) + 1
                    continue
            now = time.monotonic()
            if ok:
                self.acked[key] = value
                self.longest_ack_gap_s = max(self.longest_ack_gap_s, now - last_ack)
                last_ack = now
                if first_failure is not None:
                    self.longest_failed_window_s = max(self.longest_failed_window_s, now - first_failure)
                    first_failure = None
                n += 1
            else:
                self.failures += 1
                first_failure = first_failure if first_failure is not None else now
                time.sleep(0.05)
        if first_failure is not None:
            self.longest_failed_window_s = max(self.longest_failed_window_s, time.monotonic() - first_failure)

    def lost(self, reader: EtcdClient, m: Member) -> list[str]:
        """Acknowledged keys that member m does not return (a linearizable read), or whose value differs."""
        stored = reader.get_prefix(m, "w/")
        return sorted(k for k, v in self.acked.items() if stored.get(k) != v)


def gate(cluster: EtcdCluster, client: EtcdClient, timeout: float = 30) -> dict[str, dict[str, int]]:
    """Wait until every member is healthy over TLS, all see one leader, and every revision has reached
    the leader's as read at the start; returns each member's status. GateFailed after timeout."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            sick = [m.name for m in cluster.members if not client.health(m)]
            if sick:
                problem = f"not healthy: {', '.join(sick)}"
                raise OSError(problem)
            statuses = {m.name: client.status(m) for m in cluster.members}
            leaders = {s["leader"] for s in statuses.values()}
            if len(leaders) != 1 or 0 in leaders:
                problem = f"leaders seen: {sorted(leaders)}"
                raise OSError(problem)
            leader_rev = next(s["revision"] for s in statuses.values() if s["member"] in leaders)
            while time.monotonic() < deadline:
                behind = [m.name for m in cluster.members if client.status(m)["revision"] < leader_rev]
                if not behind:
                    return statuses
                problem = f"behind the leader's revision {leader_rev}: {', '.join(behind)}"
                time.sleep(0.05)
        except (OSError, ValueError):
            time.sleep(0.1)
    raise GateFailed(f"etcd gate failed after {timeout:.0f}s: {problem}")


@dataclass
class RotationResult:
    steps: list[Step]
    gate_seconds: list[float]


def rotate(cluster: EtcdCluster, old: tuple[bytes, bytes], new: tuple[bytes, bytes], workdir: Path,
           on_step: Callable[[Step], None] | None = None, gate_timeout: float = 30,
           steps: list[Step] | None = None, after_step: Callable[[Step], None] | None = None) -> RotationResult:
    """Run `steps` (default: every step of rolling_steps()) on the cluster. The gates' client
    certificate comes from a CA every member trusts at that point, both held by trustplan during the
    rotation: the old CA through accept (a member not yet restarted trusts nothing else), the new one
    from swap on; the client trusts both CAs' server certificates until remove, then the new one
    alone. `after_step(step)` runs once the step's gate passed, before the next step: a gate of its
    own may raise GateFailed."""
    cas = {"old": old, "new": new}
    now = pki.utcnow()
    clients = {}
    for phase, (issuer, trust) in {"accept": (old, old[0] + new[0]), "swap": (new, old[0] + new[0]),
                                   "remove": (new, new[0])}.items():
        crt, key = issue_leaf(issuer[0], issuer[1], "client:trustplan", "trustplan", (), now)
        clients[phase] = EtcdClient.from_pem(trust, crt, key, workdir)
    result = RotationResult(steps if steps is not None else rolling_steps([m.name for m in cluster.members]), [])
    for step in result.steps:
        if on_step is not None:
            on_step(step)
        m = cluster.member(step.member)
        bundle = b"".join(cas[name][0] for name in step.ca_order)
        cluster.write_pki(m, bundle, cas[step.issuer][1], now)
        if step.restart:
            cluster.restart(m)
        started = time.monotonic()
        gate(cluster, clients[step.phase], gate_timeout)
        if after_step is not None:  # more of the gate: e.g. that node's kube-apiserver, restarted, healthy
            after_step(step)
        result.gate_seconds.append(time.monotonic() - started)
    return result

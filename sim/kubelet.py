"""The simulated kubelet of a node, as Talos's service controller publishes it (the COSI resource
`runtime/Services.v1alpha1.talos.dev/kubelet`), reference/talos.md §3.1.

When a node's Kubernetes CA fields change, its kubelet restarts: the resource is destroyed, and
after `kubelet_rejoin_ms` created again (running, healthy) once the kubelet can verify some control
plane's API server (that server's issuing CA is in the node's Kubernetes trust). Meanwhile the node
is NotReady (trustplan_sim.kube serves the Node objects).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trustplan.errors import TrustplanError
from trustplan.talos import machineconfig, pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

log = logging.getLogger("trustplan.sim")

#: CREATED / UPDATED / DESTROYED, as cosi.resource.EventType numbers
CREATED, UPDATED, DESTROYED = 0, 1, 2

KubeCAState = tuple[bytes | None, bytes | None, tuple[bytes, ...]] | str


def kube_ca_state(cfg: machineconfig.MachineConfig) -> KubeCAState:
    """What a restart depends on: issuing CA, its key and accepted CAs (or why they cannot be read)."""
    try:
        fields = cfg.ca_fields("kubernetes")
    except TrustplanError as exc:
        return str(exc)
    return fields.issuer, fields.issuer_key, fields.accepted


def kube_trust(cfg: machineconfig.MachineConfig) -> list[bytes]:
    """The Kubernetes CAs a node trusts: accepted CAs plus the issuing CA (empty if unreadable)."""
    try:
        fields = cfg.ca_fields("kubernetes")
    except TrustplanError:
        return []
    return list(fields.accepted) + ([fields.issuer] if fields.issuer else [])


def _fingerprints(pems: list[bytes], source: str) -> set[str]:
    return {pki.fingerprint(pki.load_cert_pem(p, source)) for p in pems}


@dataclass(frozen=True)
class ServiceState:
    """One state of the kubelet Service resource (what COSI Get/Watch return)."""

    running: bool
    healthy: bool
    unknown: bool
    version: int
    created: dt.datetime
    updated: dt.datetime


#: an event for Watch subscribers: (cosi EventType number, state; the last state for DESTROYED)
ServiceEvent = tuple[int, ServiceState]


class Kubelet:
    """The kubelet service of one node, as Talos's service controller publishes it.

    `state` is None while the resource does not exist (kubelet stopped). Watchers subscribe to a
    queue that receives every transition in order; none is coalesced."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        now = dt.datetime.now(dt.UTC)
        self.state: ServiceState | None = ServiceState(True, True, False, 1, now, now)
        self.last: ServiceState = self.state
        #: when Ready last changed (the Node's Ready condition lastTransitionTime)
        self.transition = now
        self.restarts = 0
        #: why the kubelet cannot rejoin right now (None: it can, or it is running)
        self.waiting: str | None = None
        self._subscribers: set[asyncio.Queue[ServiceEvent]] = set()
        self._task: asyncio.Task[None] | None = None
        self._report: asyncio.Task[None] | None = None  # --k8s real: NotReady of a stopped node

    @property
    def ready(self) -> bool:
        """The node's Ready condition: the kubelet runs and is healthy."""
        return self.state is not None and self.state.running and self.state.healthy

    def subscribe(self) -> asyncio.Queue[ServiceEvent]:
        queue: asyncio.Queue[ServiceEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ServiceEvent]) -> None:
        self._subscribers.discard(queue)

    def _emit(self, event_type: int, state: ServiceState) -> None:
        for queue in self._subscribers:
            queue.put_nowait((event_type, state))

    def _set(self, running: bool, healthy: bool, unknown: bool = False) -> None:
        was_ready = self.ready
        now = dt.datetime.now(dt.UTC)
        if self.state is None:
            self.state = ServiceState(running, healthy, unknown, 1, now, now)
            event = CREATED
        else:
            s = self.state
            self.state = ServiceState(running, healthy, unknown, s.version + 1, s.created, now)
            event = UPDATED
        self.last = self.state
        if self.ready != was_ready:
            self.transition = now
        self._emit(event, self.state)

    def _destroy(self) -> None:
        if self.state is None:
            return
        last, self.state = self.state, None
        self.transition = dt.datetime.now(dt.UTC)
        self._emit(DESTROYED, last)

    def restart(self) -> None:
        """Stop the kubelet now (the resource is destroyed) and start it again after the rejoin time."""
        self.restarts += 1
        self._destroy()
        self._cancel()
        self._task = asyncio.get_running_loop().create_task(self._rejoin())

    def halt(self) -> None:
        """Stop the kubelet and keep it stopped (the node went away). With --k8s real its Node is
        marked NotReady, standing in for the node lifecycle controller that this simulator lacks."""
        self._cancel()
        self._destroy()
        real = self.node.cluster.real
        if real is not None and self.node.cluster.started and not self.node.cluster.stopping:
            self._report = asyncio.get_running_loop().create_task(
                real.kubelet_not_ready(self.node, "node stopped (the simulator stands in for the node controller)"))

    def resume(self) -> None:
        """Start a halted kubelet again (after the rejoin time)."""
        if self.state is None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._rejoin())

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def _rejoin(self) -> None:
        cluster = self.node.cluster
        delay = cluster.kubelet_rejoin_ms / 1000.0
        try:
            if cluster.real is not None:
                await cluster.real.kubelet_not_ready(self.node, "kubelet is restarting")
            await asyncio.sleep(delay)
            if self.node.faults.kubelet_stuck:
                self.waiting = f"{self.node.name}: kubelet is stuck (fault injected); it will not come back"
                log.warning("%s", self.waiting)
                return
            while (reason := await self._join()) is not None:
                if reason != self.waiting:
                    # normal while every trusted API server is restarting; the Ready message shows it
                    log.info("%s", reason)
                self.waiting = reason
                await asyncio.sleep(max(delay, 0.05))
            self.waiting = None
            if self.node.faults.kubelet_unhealthy_first:
                self._set(running=True, healthy=False, unknown=True)
                await asyncio.sleep(max(delay, 0.05))
                self._set(running=True, healthy=True)
            else:
                self._set(running=True, healthy=True)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _join(self) -> str | None:
        """Register with an API server: the model's check, then with --k8s real the real calls."""
        reason = self.join_refusal()
        real = self.node.cluster.real
        if reason is None and real is not None:
            reason = await real.kubelet_join(self.node)
        return reason

    def join_refusal(self) -> str | None:
        """Why the kubelet cannot register with any API server now (None: it can).

        It must verify some running control plane's API server: that server's issuing CA must be in
        this node's Kubernetes trust. Without `--k8s` there are no API servers, and nothing to check."""
        cluster = self.node.cluster
        if not cluster.k8s:
            return None
        own = _fingerprints(kube_trust(self.node.parsed), self.node.name)
        for cp in cluster.controlplanes:
            api = cp.apiserver
            if api is not None and api.serving and api.issuer_fingerprint in own:
                return None
        return (
            f"{self.node.name}: kubelet cannot register: no running API server's certificate is issued by a "
            "Kubernetes CA this node trusts; retrying"
        )

    def close(self) -> None:
        self._cancel()
        if self._report is not None and not self._report.done():
            self._report.cancel()

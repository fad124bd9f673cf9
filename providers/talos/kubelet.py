"""Watching a node's kubelet restart through the Talos API: the events of a COSI `State/Watch` of
`runtime/Services.v1alpha1.talos.dev/kubelet`, read one at a time, and the wait for the kubelet to go
down and come back running and healthy (talosctl's PatchNodeConfigWithKubeletRestart, reference/talos.md
§1.2) with a timeout, where talosctl can wait forever (talos#10357). TalosProvider.kubelet_restart
opens the watch; this module reads it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from trustplan.providers.talos.proto import cosi_state_pb2, resource_v1alpha1_pb2

from trustplan.errors import ProviderError

KUBELET = "kubelet"


async def cancel_stream(stream: Any) -> None:
    """Reset a client stream (RST_STREAM) so that leaving it does not wait for the server's end."""
    with contextlib.suppress(Exception):  # already ended, never sent, or the connection is gone
        await stream.cancel()


class WatchEvents:
    """The events of a COSI Watch stream, one at a time (a WatchResponse may carry several)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer: collections.deque[Any] = collections.deque()

    def push_front(self, event: Any) -> None:
        if event is not None:
            self._buffer.appendleft(event)

    async def next(self) -> Any:
        """The next CREATED/UPDATED/DESTROYED event, or None when the stream ended."""
        while True:
            while self._buffer:
                event = self._buffer.popleft()
                if event.event_type == cosi_state_pb2.ERRORED:
                    raise ProviderError(f"the kubelet watch failed: {event.error or 'errored event'}")
                if event.event_type in (cosi_state_pb2.CREATED, cosi_state_pb2.UPDATED, cosi_state_pb2.DESTROYED):
                    return event
            response = await self._stream.recv_message()
            if response is None:
                return None
            self._buffer.extend(response.event)


def service_state(event: Any) -> tuple[bool, bool]:
    """(running, healthy) of a Service resource event (proto_spec, else yaml_spec)."""
    if event is None or event.event_type == cosi_state_pb2.DESTROYED:
        return (False, False)
    spec = event.resource.spec
    if spec.proto_spec:
        parsed = resource_v1alpha1_pb2.ServiceSpec.FromString(spec.proto_spec)
        return (parsed.running, parsed.healthy)
    if spec.yaml_spec:
        from trustplan.system import safeyaml

        doc = safeyaml.load(spec.yaml_spec) or {}
        return (bool(doc.get("running")), bool(doc.get("healthy")))
    return (False, False)


class KubeletWatch:
    """An open Watch of one node's kubelet (from TalosProvider.kubelet_restart)."""

    async def _open_again(self) -> WatchEvents:
        """Open the watch again, retrying (the node may be restarting) until the outer timeout."""
        assert self._reopen is not None
        while True:
            await asyncio.sleep(0.2)
            try:
                return await self._reopen()
            except ProviderError:
                continue

    def __init__(
        self,
        address: str,
        events: WatchEvents,
        timeout: float,
        reopen: Callable[[], Awaitable[WatchEvents]] | None = None,
    ) -> None:
        self.address = address
        self._events = events
        self.timeout = timeout
        self._reopen = reopen

    async def wait(self) -> None:
        """Until the kubelet went down (DESTROYED, or not running) and came back running and
        healthy; ProviderError after `timeout` seconds. A watch that ends early is opened again
        (after that, a running and healthy kubelet counts as back: the restart may have happened
        while no watch was open)."""
        try:
            async with asyncio.timeout(self.timeout):
                went_down = False
                while True:
                    event = await self._events.next()
                    if event is None:
                        if self._reopen is None:
                            raise ProviderError(
                                f"the kubelet watch on {self.address} ended before the kubelet came back",
                                hint="check it with `talosctl -n NODE service kubelet`",
                            )
                        self._events = await self._open_again()
                        went_down = True
                        continue
                    running, healthy = service_state(event)
                    if event.event_type == cosi_state_pb2.DESTROYED or not running:
                        went_down = True
                    elif went_down and running and healthy:
                        return
        except TimeoutError:
            raise ProviderError(
                f"kubelet on {self.address} did not come back within {self.timeout:g} s after its "
                "Kubernetes CA changed (the new config is applied): timeout",
                hint="check `talosctl -n NODE service kubelet` and its logs; rollout.verify.timeout sets the wait",
            ) from None

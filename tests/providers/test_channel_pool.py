"""ChannelPool.unary: at most `streams` unary calls in flight per connection, the rest queued in
order; one stub per (channel, service). No network: the pool's channel factory is replaced."""

from __future__ import annotations

import asyncio

from trustplan.providers.base import TLSIdentity
from trustplan.providers.talos.client import ChannelPool
from trustplan.providers.talos.talosconfig import Endpoint

A, B = Endpoint("10.5.0.2", 50000), Endpoint("10.5.0.3", 50000)
CRED = TLSIdentity("talos", "sha256:aa", ("sha256:aa",), b"cert", b"key", b"bundle")


class Stub:
    made: list[object] = []

    def __init__(self, channel: object) -> None:
        self.channel = channel
        Stub.made.append(channel)


def _pool(streams: int) -> ChannelPool:
    pool = ChannelPool(streams=streams)
    pool.get = lambda endpoint, credential: f"channel to {endpoint.host}"  # type: ignore[method-assign,assignment]
    return pool


def test_calls_beyond_the_cap_wait_their_turn_in_order() -> None:
    Stub.made = []
    pool = _pool(3)
    in_flight, peak, started = 0, 0, []

    async def call(i: int, endpoint: Endpoint) -> str:
        nonlocal in_flight, peak
        async with pool.unary(endpoint, CRED, Stub) as stub:
            started.append(i)
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            return str(stub.channel)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(call(i, A) for i in range(10))))

    assert asyncio.run(main()) == ["channel to 10.5.0.2"] * 10
    assert peak == 3
    assert started == list(range(10))  # first come, first served
    assert Stub.made == ["channel to 10.5.0.2"]  # one stub for the channel, reused by every call


def test_each_connection_has_its_own_cap_and_a_dropped_one_starts_afresh() -> None:
    Stub.made = []
    pool = _pool(1)
    order: list[str] = []

    async def call(endpoint: Endpoint, hold: asyncio.Event | None) -> None:
        async with pool.unary(endpoint, CRED, Stub):
            order.append(endpoint.host)
            if hold is not None:
                await hold.wait()

    async def main() -> None:
        hold = asyncio.Event()
        first = asyncio.ensure_future(call(A, hold))
        await asyncio.sleep(0)
        await call(B, None)  # A's only slot is taken: B's connection does not wait for it
        assert order == ["10.5.0.2", "10.5.0.3"]
        hold.set()
        await first
        pool.drop(A, CRED)
        await call(A, None)

    asyncio.run(main())
    assert Stub.made == ["channel to 10.5.0.2", "channel to 10.5.0.3", "channel to 10.5.0.2"]

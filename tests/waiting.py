"""Waiting for something to happen, the one way tests do it: poll the condition (a short sleep
between looks) and give up after a generous bound. The bound only keeps a broken run from hanging;
no test asserts how long anything took (tests/test_clock_free.py checks that).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL = 0.02  # seconds between looks


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Return once `condition()` is true; AssertionError naming `what` if it is not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after waiting {timeout:g}s")
        time.sleep(POLL)


async def until(condition: Callable[[], Awaitable[object] | object], what: str, timeout: float = 30.0) -> None:
    """The same on an event loop; `condition` may be a coroutine function."""
    bound = asyncio.timeout(timeout)
    try:
        async with bound:
            while True:
                value = condition()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(POLL)
    except TimeoutError:
        if not bound.expired():
            raise  # the condition's own timeout, not ours
        raise AssertionError(f"{what}: not so after waiting {timeout:g}s") from None


class FakeClock:
    """Virtual seconds for code that takes its clock and sleep: `sleep` (or `async_sleep` on an event
    loop) records the wait and moves the clock on instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

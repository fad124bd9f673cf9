"""with_retry on a fake clock: which failures are retried, for how long, on which endpoint.

The clock is injected (`clock=`, `sleep=`), so these tests wait for nothing and assert the retry
schedule itself: the virtual time at which the call gave up, and the endpoints tried in turn."""

from __future__ import annotations

import asyncio

import pytest
from trustplan.providers.talos.client import BACKOFF_MAX, BACKOFF_START, Transient, with_retry
from trustplan.providers.talos.talosconfig import Endpoint
from waiting import FakeClock

A, B = Endpoint("10.5.0.2", 50000), Endpoint("10.5.0.3", 50000)


def failing(*kinds: str, then: str | None = None):  # noqa: ANN201 - an attempt function
    """An attempt that fails with Transient(kind) for each of `kinds` (the last one for ever), then
    returns `then` if given; it records the endpoints it was called with."""
    tried: list[Endpoint] = []

    async def attempt(endpoint: Endpoint) -> str:
        tried.append(endpoint)
        if then is not None and len(tried) > len(kinds):
            return then
        raise Transient(kinds[min(len(tried), len(kinds)) - 1], f"{kinds[-1]} failure")

    attempt.tried = tried  # type: ignore[attr-defined]
    return attempt


def run(attempt, endpoints: tuple[Endpoint, ...], timeout: float, clock: FakeClock, **kw: float) -> str:  # noqa: ANN001
    return asyncio.run(with_retry(attempt, endpoints, timeout, clock=clock, sleep=clock.async_sleep, **kw))


def test_refused_tls_is_given_up_after_the_tls_window_not_the_whole_timeout() -> None:
    clock = FakeClock()
    with pytest.raises(Transient) as info:
        run(failing("tls"), (A,), 600, clock, tls_timeout=2.0)
    assert info.value.kind == "tls"
    assert clock.now == pytest.approx(2.0)  # virtual seconds: the window, then one last attempt


def test_unavailable_is_retried_until_the_timeout_with_backoff() -> None:
    clock = FakeClock()
    with pytest.raises(Transient, match="unavailable failure"):
        run(failing("unavailable"), (A,), 10, clock, tls_timeout=2.0)
    assert clock.now == pytest.approx(10.0)  # the TLS window does not apply to other failures
    assert clock.sleeps[:3] == [BACKOFF_START, BACKOFF_START * 2, BACKOFF_START * 4]
    assert max(clock.sleeps) == BACKOFF_MAX


def test_success_after_failures_returns_the_result_and_moves_to_the_next_endpoint() -> None:
    clock = FakeClock()
    attempt = failing("connect", "unavailable", then="ok")
    assert run(attempt, (A, B), 10, clock) == "ok"
    # a failed endpoint hands over to the next; UNAVAILABLE (the node, not the endpoint) stays put
    assert attempt.tried == [A, B, B]
    assert clock.sleeps == [BACKOFF_START, BACKOFF_START * 2]


def test_a_non_transient_error_is_not_retried() -> None:
    clock = FakeClock()
    calls = 0

    async def attempt(endpoint: Endpoint) -> str:
        nonlocal calls
        calls += 1
        raise ValueError("not a transport failure")

    with pytest.raises(ValueError, match="not a transport failure"):
        run(attempt, (A,), 10, clock)
    assert calls == 1 and clock.sleeps == []

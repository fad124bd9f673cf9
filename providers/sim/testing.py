"""Helpers for tests that run a simulated cluster in-process.

    def test_something(tmp_path):
        async def scenario(cluster: SimCluster) -> None:
            ...
        run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)

Each cluster gets its own loopback /24 (see unique_subnet), so tests never
collide on addresses or with a `trustplan sim up` running on the default 127.20.0.0/24.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from trustplan.providers.sim.cluster import SimCluster, run_cluster

T = TypeVar("T")

_subnets = itertools.count()


def unique_subnet() -> str:
    """A loopback /24 not handed out before in this process: 127.<21 + pid % 200>.<n>.0/24.

    The second octet comes from the process id, so concurrent test processes rarely meet.
    """
    n = next(_subnets)
    return f"127.{21 + (os.getpid() + n // 256) % 200}.{n % 256}.0/24"


def run_with_cluster(
    scenario: Callable[[SimCluster], Awaitable[T]],
    dir: Path,
    controlplanes: int = 1,
    workers: int = 1,
    latency_ms: float = 0,
    **options: Any,
) -> T:
    """Start a cluster in `dir` on a fresh subnet, run `scenario(cluster)` on it, stop it.

    `options` go to run_cluster: k8s, k8s_port, apiserver_restart_ms, kubelet_rejoin_ms, config_layout."""

    async def main() -> T:
        subnet = unique_subnet()
        async with run_cluster(controlplanes, workers, dir, subnet=subnet, latency_ms=latency_ms, **options) as c:
            return await scenario(c)

    return asyncio.run(main())

"""Running talosctl and trustplan as a user would, from a test that hosts the simulator in-process.

Every test module here is marked `interop` (deselected from the default run); `make interop`
builds talosctl v1.12.1 and v1.14.1 if they are missing and runs every case against each (the
`talosctl_version` parametrization and the `talosctl_path` fixture, tests/conftest.py). With
TALOSCTL=/path/to/talosctl set, the cases run against that one binary only. A missing binary fails
the tests: it never skips them.

The simulator runs on the test's event loop, so every external command runs as an asyncio
subprocess: the loop keeps serving the Talos API while talosctl talks to it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from trustplan_sim.cluster import SimCluster

CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
#: every interop case runs against each of these talosctl releases (scripts/peers/talosctl.sh builds them)
VERSIONS = ("v1.12.1", "v1.14.1")


@functools.cache
def reported_version(binary: Path) -> str:
    """The release a talosctl binary says it is (`talosctl version --client --short`), e.g. v1.14.1."""
    try:
        out = subprocess.run(
            [str(binary), "version", "--client", "--short"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"talosctl at {binary} does not run: {exc}")
    found = re.search(r"Talos (v\S+)", out)
    if not found:
        pytest.fail(f"talosctl at {binary} printed no version: {out!r}")
    return found.group(1)


def talosctl_versions() -> list[str]:
    """The releases to run against: both VERSIONS, or with $TALOSCTL set only the one that binary is."""
    explicit = os.environ.get("TALOSCTL")
    return [reported_version(Path(explicit))] if explicit else list(VERSIONS)


def talosctl_binary(version: str = VERSIONS[0]) -> Path:
    """The talosctl binary of `version`: $TALOSCTL when it is that version, else the cached build of
    scripts/peers/talosctl.sh. A missing binary fails the test; it never skips it."""
    explicit = os.environ.get("TALOSCTL")
    path = Path(explicit) if explicit and reported_version(Path(explicit)) == version else CACHE / f"talosctl-{version}"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"talosctl {version} not found at {path}: run `make interop` "
            "(it builds both releases with scripts/peers/talosctl.sh)"
        )
    return path


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def ok(self) -> Result:
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self


async def run(
    *argv: str | Path, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> Result:
    """Run a command to its end; its output decoded."""
    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in argv),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{argv} did not finish in {timeout} s\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def talosctl(
    binary: Path, cluster: SimCluster, *args: str, talosconfig: Path | None = None, timeout: float = 120
) -> Result:
    """talosctl with the cluster's talosconfig (or another one)."""
    return await run(binary, "--talosconfig", talosconfig or cluster.talosconfig, *args, timeout=timeout)


async def trustplan(*args: str, cwd: Path, timeout: float = 300) -> Result:
    """The trustplan CLI of this checkout, in `cwd`."""
    return await run(sys.executable, "-m", "trustplan", *args, cwd=cwd, timeout=timeout)


def applies(cluster: SimCluster) -> int:
    """How many configs have been applied to the cluster since it started (every node's count)."""
    return sum(n.version - 1 for n in cluster.nodes)


async def run_killed_after_applies(argv: list[str | Path], cluster: SimCluster, n: int, timeout: float = 300) -> Result:
    """Run a command and SIGKILL it the moment the cluster has taken its n-th ApplyConfiguration
    (applied on the node, before the answer leaves it). Fails if the command ends before that."""
    import signal

    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    count = [0]
    originals = {}
    for node in cluster.nodes:
        original = originals[node.name] = node.set_config

        def counted(data: bytes, parsed: object = None, _original: Callable[..., None] = original) -> None:
            _original(data, parsed)
            count[0] += 1
            if count[0] == n and proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)

        node.set_config = counted  # type: ignore[method-assign]
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        for node in cluster.nodes:
            node.set_config = originals[node.name]  # type: ignore[method-assign]
    result = Result(proc.returncode if proc.returncode is not None else 0, out.decode(), err.decode())
    assert count[0] >= n and proc.returncode == -9, (
        f"not killed after apply {n} (saw {count[0]}):\n{result.out}\n{result.err}"
    )
    return result


def printed_ca(stdout: str, title: str) -> tuple[bytes, bytes]:
    """The CA talosctl rotate-ca prints under `> New Talos CA:` / `> New Kubernetes CA:` (crt, key PEM)."""
    import base64

    block = stdout.split(f"> {title}:\n", 1)[1]
    crt = re.search(r"^\s+crt: (\S+)$", block, re.M)
    key = re.search(r"^\s+key: (\S+)$", block, re.M)
    assert crt and key, f"no CA under {title!r} in:\n{stdout}"
    return base64.b64decode(crt.group(1)), base64.b64decode(key.group(1))

"""Starting a simulated cluster for tests and benchmarks: the one place that starts one and waits for it.

In-process (the cluster runs on the caller's event loop):

    def test_something(tmp_path):
        async def scenario(cluster: SimCluster) -> None:
            ...
        run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)

In its own process (`trustplan sim up`, as a user runs it; the CLI under test can then be a
process too, and be killed):

    with SimProcess(tmp_path / "sim", controlplanes=3, workers=2, k8s=True) as sim:
        subprocess.run([... "plan"], cwd=sim.dir)

Both flavours get their own loopback /24 (see unique_subnet), so tests never collide on addresses
or with a `trustplan sim up` running on the default 127.20.0.0/24. SimProcess waits for the
simulator to say it is ready (no polling, no sleeping): `sim up` writes DIR/sim.json and then prints
its banner, whose last line is READY_LINE.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from trustplan.providers.base import NodeRef
from trustplan_sim.cluster import SimCluster, run_cluster
from trustplan_sim.options import SimOptions

T = TypeVar("T")

#: the last line of `trustplan sim up`'s banner, printed once every node listens and sim.json is written
READY_LINE = "Press Ctrl-C (or run `trustplan sim down --dir ...`) to stop."
#: `python -m trustplan`, run from outside the source tree (from there `-m` would import the sources)
TRUSTPLAN = (sys.executable, "-m", "trustplan")

_subnets = itertools.count()


def unique_subnet(nodes: int = 1) -> str:
    """A loopback subnet not handed out before in this process for `nodes` nodes: a /24,
    127.<21 + pid % 200>.<n>.0/24, or for 250 nodes and more a /16, 127.<221..250>.0.0/16.

    The second octet comes from the process id, so concurrent test processes rarely meet.
    """
    n = next(_subnets)
    if nodes >= 250:
        return f"127.{221 + (os.getpid() + n) % 30}.0.0/16"
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

    `options` are the other fields of SimOptions (trustplan_sim.options): k8s, config_layout, ..."""
    settings = SimOptions(controlplanes, workers, unique_subnet(), latency_ms, **options)

    async def main() -> T:
        async with run_cluster(dir, settings) as c:
            return await scenario(c)

    return asyncio.run(main())


class SimNotStarted(RuntimeError):
    """`trustplan sim up` exited, or did not say it was ready in time; the message holds its stderr."""


class SimProcess:
    """`trustplan sim up` in a child process: `start()` returns once the simulator is ready,
    `stop()` (or leaving the `with` block) sends SIGTERM and waits for it to exit.

    Its stderr is collected line by line (`lines`, `stderr`) and, with `log`, copied to that file.
    The child gets SIGTERM when the thread that started it ends (Linux PR_SET_PDEATHSIG), so a killed
    test run leaves no simulator behind."""

    def __init__(
        self,
        dir: Path,
        controlplanes: int = 1,
        workers: int = 1,
        *,
        latency_ms: float = 0,
        k8s: bool = False,
        k8s_mode: str | None = None,
        k8s_port: int | None = None,
        apiserver_restart_ms: float | None = None,
        kubelet_rejoin_ms: float | None = None,
        config_layout: str | None = None,
        subnet: str | None = None,
        from_dir: Path | None = None,
        log: Path | None = None,
        start_timeout: float = 120,
        command: Sequence[str] = TRUSTPLAN,
    ) -> None:
        self.dir = dir
        self.k8s = k8s
        self.log = log
        self.start_timeout = start_timeout
        args = [
            "sim", "up", "--dir", str(dir), "--subnet", subnet or unique_subnet(),
            "--controlplanes", str(controlplanes), "--workers", str(workers), "--latency-ms", str(latency_ms),
        ]
        if k8s:
            args += ["--k8s", *([k8s_mode] if k8s_mode else [])]
        for flag, value in (("--k8s-port", k8s_port), ("--apiserver-restart-ms", apiserver_restart_ms),
                            ("--kubelet-rejoin-ms", kubelet_rejoin_ms), ("--config-layout", config_layout),
                            ("--from", from_dir)):
            if value is not None:
                args += [flag, str(value)]
        self.argv = [*command, *args]
        self.lines: list[str] = []
        self.popen: subprocess.Popen[str] | None = None
        self._ready = threading.Event()  # set on READY_LINE or when stderr ends (the process exited)
        self._reader: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SimProcess:
        """Start `trustplan sim up` and return once it printed READY_LINE; raise SimNotStarted if it
        exits first or stays silent for `start_timeout` seconds (then it is stopped)."""
        if self.popen is not None:
            return self
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            self.argv, cwd=self.dir.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
        )
        log: IO[str] | None = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            log = self.log.open("w")
        self._reader = threading.Thread(target=self._read_stderr, args=(log,), daemon=True)
        self._reader.start()
        ready = self._ready.wait(self.start_timeout) and any(READY_LINE in line for line in self.lines)
        if not ready:
            self.stop()
            raise SimNotStarted(f"the simulator did not start ({' '.join(self.argv)}):\n{self.stderr}")
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait for the exit (SIGKILL after `timeout` seconds); its exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._reader is not None:
            self._reader.join(10)  # stderr reaches its end once the process is gone
        return self.popen.returncode

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_stderr(self, log: IO[str] | None) -> None:
        assert self.popen is not None and self.popen.stderr is not None
        try:
            for raw in self.popen.stderr:
                line = raw.rstrip("\n")
                self.lines.append(line)
                if log is not None:
                    log.write(raw)
                    log.flush()
                if READY_LINE in line:
                    self._ready.set()
        finally:
            self._ready.set()
            if log is not None:
                log.close()

    # --- what it wrote -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    @property
    def doc(self) -> dict[str, Any]:
        """DIR/sim.json: pid, nodes (name, role, address, port, k8s), config_layout, files."""
        result: dict[str, Any] = json.loads((self.dir / "sim.json").read_text())
        return result

    def nodes(self) -> list[NodeRef]:
        return [NodeRef(n["address"], n["role"]) for n in self.doc["nodes"]]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent thread ends (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def benchmark_cluster(
    dir: Path, controlplanes: int, workers: int, latency_ms: float, k8s: bool, start_timeout: float = 300
) -> Iterator[SimProcess]:
    """The benchmarks' cluster: `trustplan sim up` in its own process, its stderr in
    DIR/../<DIR name>-sim.log, until the block ends. Raises SimNotStarted if it does not start."""
    with SimProcess(dir, controlplanes, workers, latency_ms=latency_ms, k8s=k8s,
                    subnet=unique_subnet(controlplanes + workers), log=dir.parent / f"{dir.name}-sim.log",
                    start_timeout=start_timeout) as sim:
        yield sim


def narrow_to(desired: Path, pki: str) -> None:
    """Keep only `pki` ("talos", "kubernetes"; "both" keeps both) in a simulator's trustplan.yaml:
    its trust entry and its generated authority."""
    if pki == "both":
        return
    drop = "kubernetes" if pki == "talos" else "talos"
    authority = "k8s-new" if drop == "kubernetes" else "talos-new"
    lines = [
        line
        for line in desired.read_text().splitlines(keepends=True)
        if not line.startswith(f"  {drop}: {{issuer") and not line.startswith(f"  {authority}: ")
    ]
    desired.write_text("".join(lines))

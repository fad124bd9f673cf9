"""Benchmark: a full Talos API CA rotation on a simulated cluster with injected RPC latency.

    .venv/bin/python benchmarks/rotation.py [--controlplanes 3] [--workers 100] [--latency-ms 20]

Runs plan + apply twice on fresh simulated clusters: once with trustplan's rollout defaults
(control planes one at a time, workers 10 at a time), once one node at a time (what
`talosctl rotate-ca` does). Reports wall time against the lower bound: the number of RPC rounds
that must happen one after another, times the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from trustplan.providers.sim.testing import unique_subnet

from trustplan import applier, engine, pki
from trustplan import desired as desired_mod


async def rotate(controlplanes: int, workers: int, latency_ms: float, worker_parallelism: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, simulator(controlplanes, workers, Path(tmp), latency_ms) as sim_dir:
        path = sim_dir / "trustplan.yaml"
        path.write_text(
            path.read_text().replace("worker: {parallelism: 10}", f"worker: {{parallelism: {worker_parallelism}}}")
        )
        desired = desired_mod.load(path)
        t0 = time.perf_counter()
        planned = await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        planned.save_new_keys()
        t1 = time.perf_counter()
        await applier.apply_desired(desired, planned.document, "sha256:" + "0" * 64, "bench", pki.utcnow())
        t2 = time.perf_counter()
        phases = sum(1 for p in planned.plan.phases if p.edits)
        gates = len(planned.plan.gates)
    # RPC rounds that must follow each other: plan reads + dry runs (1 + 1), apply reads (1), then per
    # phase every control plane in turn plus the worker waves, and one round per gate.
    waves = math.ceil(workers / worker_parallelism) if workers else 0
    rounds = 3 + phases * (controlplanes + waves) + gates
    return {"plan": t1 - t0, "apply": t2 - t1, "total": t2 - t0, "rounds": rounds, "bound": rounds * latency_ms / 1000}


@contextlib.contextmanager
def simulator(controlplanes: int, workers: int, dir: Path, latency_ms: float) -> Iterator[Path]:
    """`trustplan sim up` in its own process (so the cluster's CPU is not counted as trustplan's)."""
    exe = Path(sys.executable).with_name("trustplan")
    proc = subprocess.Popen(
        [
            str(exe),
            "sim",
            "up",
            "--controlplanes",
            str(controlplanes),
            "--workers",
            str(workers),
            "--dir",
            str(dir),
            "--subnet",
            unique_subnet() if controlplanes + workers < 250 else "127.40.0.0/16",
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (dir / "sim.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the simulator did not start")
            time.sleep(0.05)
        yield dir
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    n = args.controlplanes + args.workers
    print(
        f"Talos API CA rotation, {args.controlplanes} control planes + {args.workers} workers, "
        f"{args.latency_ms:g} ms per RPC\n"
    )
    print("| rollout | plan (s) | apply (s) | total (s) | sequential RPC rounds | lower bound (s) | total / bound |")
    print("|---|---|---|---|---|---|---|")
    for label, par in (("trustplan defaults (CP 1, workers 10)", 10), ("one node at a time (talosctl)", 1)):
        r = asyncio.run(rotate(args.controlplanes, args.workers, args.latency_ms, par))
        print(
            f"| {label} | {r['plan']:.2f} | {r['apply']:.2f} | {r['total']:.2f} | {r['rounds']:.0f} | "
            f"{r['bound']:.2f} | {r['total'] / r['bound']:.2f} |"
        )
    print(
        f"\n{n} nodes; command: .venv/bin/python benchmarks/rotation.py --controlplanes {args.controlplanes} "
        f"--workers {args.workers} --latency-ms {args.latency_ms:g}"
    )


if __name__ == "__main__":
    main()

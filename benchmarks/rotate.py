"""Benchmark: one CA rotation on a simulated cluster, as a user runs it, against its round-trip bound,
against one node at a time, and against `talosctl rotate-ca`. Prints one JSON line.

    .venv/bin/python benchmarks/rotate.py --controlplanes 3 --workers 50 --latency-ms 20 \
        [--pki talos|kubernetes|both] [--parallelism N] [--skip-sequential] [--skip-talosctl]

Every run gets a fresh `trustplan sim up` cluster in its own process (its own loopback subnet), and
rotates the PKI(s) through the CLI: `trustplan plan --parallelism N -o plan.bin`, then
`trustplan apply plan.bin`, each its own process, timed from start to exit (start-up included; the
package is byte-compiled first, as pip does for a wheel).

- rpc_rounds: RPCs that must follow one another in that apply under the plan's rollout: the read of
  every node (READ_CONCURRENCY at a time), then per phase the control-plane waves, the canary and
  worker waves (two rounds each where the phase changes a node's Kubernetes CA: the kubelet watch is
  opened before the write), and one round per group of a gate (rollout.verify.parallelism nodes per
  fanned-out call); bound_s = rpc_rounds x latency; ratio_to_bound = apply_s / bound_s.
- sequential_apply_s: the same rotation on a fresh cluster with `--parallelism 1` (every role and
  every gate one node at a time, as talosctl does); speedup_vs_sequential = sequential / apply_s.
- talosctl_s: `talosctl rotate-ca` on a fresh identical cluster, when the interop build of talosctl
  (scripts/peers/talosctl.sh, or $TALOSCTL) is present; else null. speedup_vs_talosctl compares it
  with plan_s + apply_s (talosctl plans and applies in one command).
- tool_cpu_s, peak_rss_mb: user+system seconds and the largest resident set of the two trustplan
  processes (the operating system's accounting of each finished child; the simulator is not in it);
  sim_cpu_s: what the simulator's process burned during plan + apply.
- load_avg: the machine's 1-minute load average when the run ended (other work on the same 2 cores
  stretches every wall time; the CPU figures are steadier).
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the simulator harness
from simharness import TRUSTPLAN, SimNotStarted, benchmark_cluster, narrow_to  # noqa: E402

import trustplan

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One finished process: wall seconds, user+system seconds, peak resident set (MB)."""

    wall: float
    cpu: float
    rss_mb: float


def run(argv: list[str], cwd: Path, log: Path) -> Run:
    """Run a command to its end and take the kernel's accounting of it (wait4); exit 0 or stop."""
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def cpu_of(pid: int) -> float:
    """User+system seconds a live process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rpc_rounds(plan: dict, cps: int, workers: int) -> int:
    """RPC rounds on apply's critical path under the plan's rollout (see the module docstring)."""
    from trustplan.engine.live import READ_CONCURRENCY

    rollout = plan["rollout"]
    rounds = math.ceil(len(plan["nodes"]) / READ_CONCURRENCY)  # apply reads every node first
    for phase in plan["phases"]:
        edited = {e["node"] for e in phase.get("edits", [])}
        if edited:
            cp = sum(1 for n in plan["nodes"] if n["address"] in edited and n["role"] == "controlplane")
            wk = len(edited) - cp
            canary = min(rollout["canary"], wk)
            per_wave = 2 if any(e["pki"] == "kubernetes" for e in phase["edits"]) else 1  # watch, then write
            rounds += per_wave * math.ceil(cp / rollout["controlplane"])
            rounds += per_wave * (math.ceil(canary / rollout["worker"]) + math.ceil((wk - canary) / rollout["worker"]))
            if canary and wk > canary:
                rounds += len(phase.get("gates", []))  # each gate once on the canaries
        for gate in phase.get("gates", []):
            rounds += 1 if gate["pki"] == "kubernetes" else math.ceil(len(gate["nodes"]) / rollout["gates"])
    return rounds


def rotate(tmp: Path, name: str, args: argparse.Namespace, parallelism: int) -> dict:
    """plan + apply through the CLI on a fresh cluster; figures of both processes."""
    dir = tmp / name
    dir.mkdir()
    log = tmp / f"{name}.log"
    with benchmark_cluster(dir, args.controlplanes, args.workers, args.latency_ms, args.pki != "talos") as sim:
        narrow_to(dir / "trustplan.yaml", args.pki)
        sim0 = cpu_of(sim.pid)
        plan = run([*TRUSTPLAN, "plan", "--parallelism", str(parallelism), "-o", "plan.bin"], dir, log)
        apply = run([*TRUSTPLAN, "apply", "plan.bin"], dir, log)
        sim_cpu = cpu_of(sim.pid) - sim0
        doc = json.loads(subprocess.run([*TRUSTPLAN, "show", "-f", "json", "plan.bin"], cwd=dir, check=True,
                                        capture_output=True, text=True).stdout)
    return {
        "plan": plan,
        "apply": apply,
        "sim_cpu": sim_cpu,
        "rounds": rpc_rounds(doc, args.controlplanes, args.workers),
    }


def talosctl_rotate(tmp: Path, talosctl: Path, args: argparse.Namespace) -> float:
    dir = tmp / "talosctl"
    dir.mkdir()
    with benchmark_cluster(dir, args.controlplanes, args.workers, args.latency_ms, args.pki != "talos"):
        cp = json.loads((dir / "sim.json").read_text())["nodes"][0]["address"]
        argv = [str(talosctl), "--talosconfig", str(dir / "talosconfig"), "-n", cp, "rotate-ca", "--dry-run=false",
                f"--talos={str(args.pki != 'kubernetes').lower()}", f"--kubernetes={str(args.pki != 'talos').lower()}",
                "-o", str(dir / "talosconfig.new")]
        return run(argv, dir, tmp / "talosctl.log").wall


def find_talosctl() -> Path | None:
    path = Path(os.environ.get("TALOSCTL") or CACHE / "talosctl-v1.12.1")
    return path if os.access(path, os.X_OK) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--pki", choices=["talos", "kubernetes", "both"], default="talos")
    parser.add_argument("--parallelism", type=int, help="trustplan plan --parallelism (default: every node at once)")
    parser.add_argument("--skip-sequential", action="store_true", help="no run with --parallelism 1")
    parser.add_argument("--skip-talosctl", action="store_true", help="no talosctl rotate-ca run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, plans)")
    args = parser.parse_args()
    # Time trustplan as installed from a wheel (pip byte-compiles it), also where PYTHONDONTWRITEBYTECODE
    # keeps an editable install from ever caching its bytecode (`make bytecode` does the same).
    compileall.compile_dir(Path(trustplan.__file__).parent, quiet=1, workers=0)
    parallelism = args.parallelism or args.controlplanes + args.workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the simulator listens once per node
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    tmp = Path(tempfile.mkdtemp(prefix="rotate-"))
    try:
        main_run = rotate(tmp, "trustplan", args, parallelism)
        sequential = None if args.skip_sequential else rotate(tmp, "sequential", args, 1)
        talosctl = None if args.skip_talosctl else find_talosctl()
        talosctl_s = talosctl_rotate(tmp, talosctl, args) if talosctl is not None else None
    except (SystemExit, SimNotStarted) as exc:
        print(f"kept {tmp} (logs)", file=sys.stderr)
        raise SystemExit(str(exc)) from None
    if not args.keep:
        shutil.rmtree(tmp)
    plan_s, apply_s = main_run["plan"].wall, main_run["apply"].wall
    bound_s = main_run["rounds"] * args.latency_ms / 1000
    seq_s = sequential["apply"].wall if sequential else None
    result = {
        "nodes": args.controlplanes + args.workers,
        "controlplanes": args.controlplanes,
        "workers": args.workers,
        "latency_ms": args.latency_ms,
        "pki": args.pki,
        "parallelism": parallelism,
        "plan_s": round(plan_s, 3),
        "apply_s": round(apply_s, 3),
        "rpc_rounds": main_run["rounds"],
        "bound_s": round(bound_s, 3),
        "ratio_to_bound": round(apply_s / bound_s, 2) if bound_s else None,
        "sequential_apply_s": round(seq_s, 3) if seq_s is not None else None,
        "speedup_vs_sequential": round(seq_s / apply_s, 2) if seq_s is not None else None,
        "talosctl_s": round(talosctl_s, 3) if talosctl_s is not None else None,
        "speedup_vs_talosctl": round(talosctl_s / (plan_s + apply_s), 2) if talosctl_s is not None else None,
        "tool_cpu_s": round(main_run["plan"].cpu + main_run["apply"].cpu, 3),
        "peak_rss_mb": round(max(main_run["plan"].rss_mb, main_run["apply"].rss_mb), 1),
        "sim_cpu_s": round(main_run["sim_cpu"], 3),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

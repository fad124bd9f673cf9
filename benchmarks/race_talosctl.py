"""The race: `talosctl rotate-ca` against `trustplan plan` + `trustplan apply` on the same clusters.

    make race            # builds talosctl if needed (scripts/peers/talosctl.sh), then runs this
    TALOSCTL=/path/to/talosctl .venv/bin/python benchmarks/race_talosctl.py \
        [--controlplanes 3] [--workers 20] [--latency-ms 0 20] [--pki talos kubernetes]

For every PKI and latency, each tool gets a fresh `trustplan sim up` cluster (its own process, its
own loopback subnet) and rotates that one CA, as a user would run it:

- talosctl: `talosctl -n <cp-1> rotate-ca --dry-run=false --talos=<t> --kubernetes=<k> -o <file>`
  (one node at a time, topology from the cluster's Members);
- trustplan: `trustplan plan -o plan.bin` then `trustplan apply plan.bin`, with the simulator's
  `trustplan.yaml` narrowed to that PKI (control planes one at a time, workers 10 at a time).

Wall time of the commands (process start to exit) is measured; each must exit 0 (both verify the
cluster after every phase themselves). Prints a Markdown table; `--json FILE` also writes the
figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the simulator harness
from simharness import TRUSTPLAN, SimNotStarted, benchmark_cluster, narrow_to  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
def timed(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def race_one(talosctl: Path, tmp: Path, pki: str, latency_ms: float, cps: int, workers: int) -> dict:
    k8s = pki == "kubernetes"
    result: dict = {"pki": pki, "latency_ms": latency_ms, "nodes": f"{cps}+{workers}"}
    # talosctl rotate-ca
    dir = tmp / f"talosctl-{pki}-{latency_ms:g}"
    dir.mkdir()
    with benchmark_cluster(dir, cps, workers, latency_ms, k8s, start_timeout=60) as sim:
        cp = sim.doc["nodes"][0]["address"]
        argv = [
            str(talosctl),
            "--talosconfig",
            str(dir / "talosconfig"),
            "-n",
            cp,
            "rotate-ca",
            "--dry-run=false",
            f"--talos={'true' if pki == 'talos' else 'false'}",
            f"--kubernetes={'true' if k8s else 'false'}",
            "-o",
            str(dir / "talosconfig.new"),
        ]
        result["talosctl_s"] = round(timed(argv, dir), 2)
    # trustplan plan + apply
    dir = tmp / f"trustplan-{pki}-{latency_ms:g}"
    dir.mkdir()
    with benchmark_cluster(dir, cps, workers, latency_ms, k8s, start_timeout=60):
        narrow_to(dir / "trustplan.yaml", pki)
        t_plan = timed([*TRUSTPLAN, "plan", "-o", "plan.bin"], dir)
        t_apply = timed([*TRUSTPLAN, "apply", "plan.bin"], dir)
        result["trustplan_plan_s"] = round(t_plan, 2)
        result["trustplan_apply_s"] = round(t_apply, 2)
        result["trustplan_s"] = round(t_plan + t_apply, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--pki", nargs="+", choices=["talos", "kubernetes"], default=["talos", "kubernetes"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    talosctl = Path(os.environ.get("TALOSCTL") or CACHE / "talosctl-v1.12.1")
    if not os.access(talosctl, os.X_OK):
        raise SystemExit(f"talosctl not found at {talosctl}: run `make race` or scripts/peers/talosctl.sh")
    version = subprocess.run([str(talosctl), "version", "--client", "--short"], capture_output=True, text=True).stdout
    print(f"talosctl: {' '.join(version.split()) or talosctl}; {os.cpu_count()} CPUs", file=sys.stderr)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="race-"))
    for pki in args.pki:
        for latency in args.latency_ms:
            try:
                r = race_one(talosctl, tmp, pki, latency, args.controlplanes, args.workers)
            except (SystemExit, SimNotStarted) as exc:
                print(f"kept {tmp} (simulator logs: *.log)", file=sys.stderr)
                raise SystemExit(str(exc)) from None
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
    shutil.rmtree(tmp)
    print("| CA | nodes | latency | talosctl rotate-ca | trustplan plan + apply | ratio |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = r["talosctl_s"] / r["trustplan_s"]
        name = "Talos API" if r["pki"] == "talos" else "Kubernetes API"
        print(
            f"| {name} | {r['nodes']} | {r['latency_ms']:g} ms | {r['talosctl_s']:.1f} s | "
            f"{r['trustplan_s']:.1f} s ({r['trustplan_plan_s']:.1f} + {r['trustplan_apply_s']:.1f}) | {ratio:.1f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

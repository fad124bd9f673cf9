"""The performance runs of docs/performance.md: benchmarks/rotate.py over the sizes, latencies and PKIs it reports,
one JSON line per run (with the exact command) appended to docs/perf/results.jsonl.

    .venv/bin/python benchmarks/sweep.py [--only NAME ...] [--out docs/perf/results.jsonl]
    .venv/bin/python benchmarks/sweep.py --table  # docs/performance.md's table: the last line of each run
    .venv/bin/python benchmarks/plot.py          # docs/apply-time.png from those lines
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name -> rotate.py arguments
RUNS: dict[str, list[str]] = {
    "3+2-talos-20ms": ["--controlplanes", "3", "--workers", "2", "--latency-ms", "20"],
    "3+20-talos-20ms": ["--controlplanes", "3", "--workers", "20", "--latency-ms", "20"],
    "3+20-talos-0ms": ["--controlplanes", "3", "--workers", "20", "--latency-ms", "0", "--skip-sequential"],
    "3+20-kubernetes-0ms": ["--controlplanes", "3", "--workers", "20", "--latency-ms", "0", "--pki", "kubernetes",
                            "--skip-sequential"],
    "3+20-kubernetes-20ms": ["--controlplanes", "3", "--workers", "20", "--latency-ms", "20", "--pki", "kubernetes",
                             "--skip-sequential"],
    "3+50-talos-20ms": ["--controlplanes", "3", "--workers", "50", "--latency-ms", "20"],
    "3+200-talos-20ms": ["--controlplanes", "3", "--workers", "200", "--latency-ms", "20", "--skip-talosctl"],
    "3+500-talos-20ms": ["--controlplanes", "3", "--workers", "500", "--latency-ms", "20", "--parallelism", "500",
                         "--skip-talosctl"],
}


def _s(value: float | None, unit: str = " s") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def table(path: Path) -> str:
    """A Markdown table of the last result of each run, in RUNS order."""
    last = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        last[row["run"]] = row
    lines = [
        "| run | plan | apply | RPC rounds | bound | apply / bound | one at a time | speedup | talosctl | "
        "talosctl / (plan + apply) | trustplan CPU | peak RSS | simulator CPU | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        if name not in last:
            continue
        r = last[name]
        args = r["command"].removeprefix("python benchmarks/rotate.py ")
        lines.append(
            f"| `{args}` | {_s(r['plan_s'])} | {_s(r['apply_s'])} | "
            f"{r['rpc_rounds']} | {_s(r['bound_s'])} | {_s(r['ratio_to_bound'], 'x')} | "
            f"{_s(r['sequential_apply_s'])} | {_s(r['speedup_vs_sequential'], 'x')} | {_s(r['talosctl_s'])} | "
            f"{_s(r['speedup_vs_talosctl'], 'x')} | {_s(r['tool_cpu_s'])} | {_s(r['peak_rss_mb'], ' MB')} | "
            f"{_s(r['sim_cpu_s'])} | {_s(r.get('load_avg'), '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="these runs only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "perf" / "results.jsonl")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or RUNS:
        argv = [sys.executable, str(HERE / "rotate.py"), *RUNS[name]]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(run=name, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      command="python benchmarks/rotate.py " + " ".join(RUNS[name]))
        with args.out.open("a") as out:
            out.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Draw docs/apply-time.png: Talos API CA rotation time against node count at 20 ms per RPC, for
trustplan (apply, and plan + apply), the same plan one node at a time, and `talosctl rotate-ca`.

    .venv/bin/python benchmarks/plot.py [--results docs/perf/results.jsonl] [--out docs/apply-time.png]

Reads the JSON lines benchmarks/sweep.py wrote (the last run of each size counts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = sorted((r["nodes"], r[key]) for r in rows if r.get(key) is not None)
    return [n for n, _ in points], [v for _, v in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "perf" / "results.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "apply-time.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest: dict[int, dict] = {}
    for line in args.results.read_text().splitlines():
        row = json.loads(line)
        if row["pki"] == "talos" and row["latency_ms"] == 20:
            latest[row["nodes"]] = row  # later lines replace earlier runs of the same size
    rows = list(latest.values())
    for row in rows:
        row["total_s"] = row["plan_s"] + row["apply_s"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = [
        ("apply_s", "trustplan apply (phases in parallel)", "o-"),
        ("total_s", "trustplan plan + apply", "o--"),
        ("sequential_apply_s", "trustplan apply, one node at a time (--parallelism 1)", "s-"),
        ("talosctl_s", "talosctl rotate-ca v1.12.1", "^-"),
        ("bound_s", "round-trip bound (RPC rounds x 20 ms)", ":"),
    ]
    for key, label, style in styles:
        xs, ys = series(rows, key)
        if xs:
            ax.plot(xs, ys, style, label=label)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(latest))  # the measured sizes, labelled as plain numbers
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("nodes (3 control planes + workers)")
    ax.set_ylabel("seconds (wall, process start to exit)")
    ax.set_title("Talos API CA rotation, simulated cluster, 20 ms per RPC, 2 cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

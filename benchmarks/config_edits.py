"""Benchmark: trustplan's own CPU to read a machine config and to edit its Talos CA three times in a
row (accept, swap, remove: what apply does to every node), per config shape. Prints one JSON line per
config: bytes, read_ms, edit_ms (one in-place edit, checked by parsing its result back).

    .venv/bin/python benchmarks/config_edits.py [--rounds 9] [--repeat 200]

Configs: a simulator control plane and worker (the benchmark clusters'), and the test fixtures shaped
as `talosctl gen config` writes them (doc comments, examples; one with a KubeAPIServerCAConfig).
CPU time (time.process_time), best of --rounds rounds of --repeat cycles: the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from trustplan_sim.configgen import ClusterSecrets, generate_config

from trustplan.talos import certgen, pki
from trustplan.talos.machineconfig import CAFields, MachineConfig

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "configs" / "nodes"


def configs() -> dict[str, bytes]:
    secrets = ClusterSecrets.generate(dt.datetime.now(dt.UTC))
    out = {
        f"sim-{role}": generate_config(
            secrets, cluster_name="bench", endpoint="https://10.5.0.2:6443", role=role, hostname="n", address="10.5.0.9"
        )
        for role in ("controlplane", "worker")
    }
    out.update({path.stem: path.read_bytes() for path in sorted(FIXTURES.glob("*.yaml"))})
    return out


def cycle(data: bytes, new: bytes, new_key: bytes) -> tuple[float, float]:
    """CPU seconds to read `data`, and to make the three edits."""
    start = time.process_time()
    cfg = MachineConfig(data, "bench")
    read = time.process_time()
    old = cfg.ca_fields("talos")
    key = new_key if cfg.role == "controlplane" else None
    for fields in (
        CAFields(old.issuer, old.issuer_key, (*old.accepted, new)),
        CAFields(new, key, (old.issuer,) if old.issuer else ()),
        CAFields(new, key, ()),
    ):
        cfg = cfg.edited({"talos": fields})
    return read - start, time.process_time() - read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    crt, key = certgen.generate_ca("talos", pki.utcnow())
    new, new_key = pki.cert_to_pem(crt), pki.key_to_pem(key)
    for name, data in configs().items():
        best: tuple[float, float] | None = None
        for _ in range(args.rounds):
            runs = [cycle(data, new, new_key) for _ in range(args.repeat)]
            total = (sum(r[0] for r in runs), sum(r[1] for r in runs))
            best = total if best is None or sum(total) < sum(best) else best
        assert best is not None
        read_ms, edits_ms = (1000 * t / args.repeat for t in best)
        print(json.dumps({"config": name, "bytes": len(data), "read_ms": round(read_ms, 3),
                          "edit_ms": round(edits_ms / 3, 3)}))


if __name__ == "__main__":
    main()

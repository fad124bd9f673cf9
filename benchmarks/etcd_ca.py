"""Benchmark: the graceful etcd CA rotation on real etcd members (v3.7.1, scripts/peers/etcd.sh) while a
writer runs against them. Prints one JSON line per cluster size.

    .venv/bin/python benchmarks/etcd_ca.py [--members 3 5] [--workdir DIR]

Each run bootstraps a fresh cluster on loopback (Talos's flags and Talos-made certificates, old CA),
starts the writer (every acknowledged put recorded), rolls accept / swap / remove one member at a time
behind the quorum gate (trustplan_sim.etcd_rotation), stops the writer and reads everything back from
every member.

- steps, restarts: rolling steps run, and how many of them restarted a member (accept + remove).
- min_up_during_restart, quorum: members running while one is restarting, and the majority needed.
- acked_writes, lost_writes: puts etcd acknowledged; of those, how many some member does not return.
- failed_attempts: puts no member acknowledged (each tries every member before counting as failed).
- longest_failed_window_s: the longest interval from a failed put to the next acknowledged one (0 when
  no put failed); longest_ack_gap_s: the longest time between two acknowledgements, failures or not.
- rotation_s, slowest_gate_s: wall time of the whole rotation, and of the slowest gate.
- old_ca_client_refused: members refusing a client certificate from the old CA at the end (all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from trustplan_sim import etcd_members as em
from trustplan_sim.etcd_rotation import Step, Writer, quorum, rotate

from trustplan.talos import pki


def run(members: int, workdir: Path) -> dict[str, object]:
    now = pki.utcnow()
    old, new = em.generate_etcd_ca(now), em.generate_etcd_ca(now)
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    cluster = em.EtcdCluster.start(workdir / "etcd", [f"{block}.{k}" for k in range(2, 2 + members)], *old)

    def client(ca: tuple[bytes, bytes], trust: bytes, cn: str) -> em.EtcdClient:
        crt, key = em.issue_leaf(ca[0], ca[1], f"client:{cn}", cn, (), now)
        return em.EtcdClient.from_pem(trust, crt, key, workdir / "clients")

    try:
        writer = Writer(client(old, old[0] + new[0], "writer"), cluster.members)
        after_swap = client(new, old[0] + new[0], "writer")

        def follow(step: Step) -> None:  # the writer's certificate is issued again at the swap
            if step.phase == "remove":
                writer.client = after_swap

        writer.start()
        time.sleep(1)
        started = time.monotonic()
        try:
            result = rotate(cluster, old, new, workdir, on_step=follow)
            rotation_s = time.monotonic() - started
            time.sleep(1)
        finally:
            writer.stop()
        reader = client(new, new[0], "reader")
        lost = {k for m in cluster.members for k in writer.lost(reader, m)}
        old_client = client(old, old[0] + new[0], "old-admin")
        restarts = [s for s in result.steps if s.restart]
        return {
            "members": members, "etcd": em.VERSION, "steps": len(result.steps), "restarts": len(restarts),
            "min_up_during_restart": min(s.up_during for s in restarts), "quorum": quorum(members),
            "acked_writes": len(writer.acked), "lost_writes": len(lost), "failed_attempts": writer.failures,
            "longest_failed_window_s": round(writer.longest_failed_window_s, 3),
            "longest_ack_gap_s": round(writer.longest_ack_gap_s, 3),
            "rotation_s": round(rotation_s, 2), "slowest_gate_s": round(max(result.gate_seconds), 2),
            "old_ca_client_refused": sum(old_client.refused(m) for m in cluster.members),
            "load_avg": round(os.getloadavg()[0], 2),
        }
    finally:
        cluster.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    why = em.missing()
    if why:
        print(f"etcd_ca.py: {why}", file=sys.stderr)
        return 1
    for n in args.members:
        with tempfile.TemporaryDirectory(prefix="etcd-ca-", dir=args.workdir) as tmp:
            print(json.dumps(run(n, Path(tmp)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

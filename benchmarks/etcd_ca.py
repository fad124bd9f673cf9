"""Benchmark: trustplan rotates the etcd CA together with the Talos API and Kubernetes API CAs, through
`plan` and `apply`, on the simulator with a real etcd member (v3.7.1) and kube-apiserver (v1.34.4) per
control plane (`--k8s real`), while a writer runs against the members. One JSON line per cluster size.

    .venv/bin/python benchmarks/etcd_ca.py [--members 3 5] [--workdir DIR]

Each run starts a fresh simulated cluster (no workers), adds `trust.etcd` with a generated CA to the
simulator's desired state, makes the plan, starts the writer (trustplan_sim.etcdwriter: to each member
with that node's own kube-apiserver client certificate, the next member when one fails), applies, stops
the writer and reads every acknowledged key back from every member. With talosctl v1.14.1 in the peers
cache the simulator also runs `talosctl validate --mode metal --strict` on every config apply writes.

- steps, restarts: the plan's etcd steps, and how many reboot a control plane (accept + remove).
- min_up_during_restart, quorum: members up while one reboots, and the majority they need.
- acked_writes, lost_writes: puts etcd acknowledged; of those, how many some member does not return.
- failed_attempts: puts no member acknowledged (each tries every member before counting as failed).
- longest_failed_window_s: the longest interval from a failed put to the next acknowledged one (0 when
  no put failed); longest_ack_gap_s: the longest time between two acknowledgements, failures or not.
- apply_s: wall time of the apply; reboots: the control planes rebooted, in order.
- old_ca_client_refused / new_ca_client_served: members refusing a client certificate from the old etcd
  CA / serving one from the new, at the end.
- configs_validated_by_talosctl: configs the real talosctl judged (0 without it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trustplan.planner.etcd import quorum, rolling_steps
from trustplan.providers.etcd import EtcdClient
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster, run_cluster
from trustplan_sim.etcdwriter import Writer
from trustplan_sim.options import SimOptions

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import certgen, machineconfig, pki

TALOSCTL = etcd.peers_cache() / "talosctl-v1.14.1"


def _client(ca_pem: bytes, key_pem: bytes, trusted: bytes) -> EtcdClient:
    crt, key = certgen.issue_client_cert(pki.load_cert_pem(ca_pem, "ca"), pki.load_key_pem(key_pem, "k"), "probe",
                                         pki.utcnow())
    return EtcdClient(pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key), trusted)


async def rotate(cluster: SimCluster) -> dict[str, Any]:
    """Plan and apply the rotation of the simulator's desired state plus `trust.etcd`, with the writer."""
    cps = cluster.controlplanes
    old = machineconfig.kind_fields(machineconfig.parse(cps[0].config, "cp-1"), "etcd").issuer
    assert old is not None and old.secret is not None
    path = cluster.dir / "trustplan.yaml"
    text = path.read_text().replace("authorities:\n", "authorities:\n  etcd-new: {generate: {}}\n", 1)
    path.write_text(text.replace("trust:\n", "trust:\n  etcd: {issuer: etcd-new}\n", 1))
    desired = desired_mod.load(path)
    planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    steps = rolling_steps(planned.plan)
    restarts = [s for s in steps if s.restart]
    writer = Writer(lambda: [cp.etcd for cp in cps if cp.etcd is not None])
    writer.start()
    await asyncio.sleep(1)
    started = time.monotonic()
    try:
        applied = await applier.apply_desired(
            applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow()))
        apply_s = time.monotonic() - started
        await asyncio.sleep(1)
    finally:
        writer.stop()
    lost = sorted({k for cp in cps if cp.etcd is not None for k in await asyncio.to_thread(writer.lost, cp.etcd)})
    new = machineconfig.kind_fields(machineconfig.parse(cps[0].config, "cp-1"), "etcd").issuer
    assert new is not None and new.secret is not None
    trusted = new.public + old.public
    refused = _client(old.public, old.secret, trusted)
    served = _client(new.public, new.secret, trusted)
    writes = [s for s in applied.steps if s.kind == "write"]
    validator = cluster.talosctl_validator
    return {
        "members": len(cps), "etcd": Path(cps[0].etcd.binary).name if cps[0].etcd else None,
        "steps": len(steps), "restarts": len(restarts),
        "min_up_during_restart": min(s.up_during for s in restarts), "quorum": quorum(len(cps)),
        "acked_writes": len(writer.acked), "lost_writes": len(lost), "failed_attempts": writer.failures,
        "longest_failed_window_s": round(writer.longest_failed_window_s, 3),
        "longest_ack_gap_s": round(writer.longest_ack_gap_s, 3), "apply_s": round(apply_s, 1),
        "reboots": [s.node for s in applied.steps if s.kind == "reboot" and s.outcome == "ok"],
        "writes_per_node_per_phase": max(sum(1 for w in writes if (w.node, w.phase) == k)
                                         for k in {(w.node, w.phase) for w in writes}),
        "etcd_gates_passed": sum(1 for s in applied.steps if s.kind == "etcd" and s.outcome == "ok"),
        "old_ca_client_refused": sum(refused.accepts(cp.address) is False for cp in cps),
        "new_ca_client_served": sum(served.accepts(cp.address) is True for cp in cps),
        "configs_validated_by_talosctl": validator.runs if validator is not None else 0,
        "load_avg": round(os.getloadavg()[0], 2),
    }


def run(members: int, workdir: Path) -> dict[str, Any]:
    """One cluster of `members` control planes in `workdir`, rotated once."""
    talosctl = TALOSCTL if TALOSCTL.is_file() else None
    subnet = f"127.{random.randint(100, 220)}.{random.randint(0, 255)}.0/24"

    async def main() -> dict[str, Any]:
        options = SimOptions(members, 0, subnet, k8s=True, k8s_mode="real", kubelet_rejoin_ms=100, talosctl=talosctl)
        async with run_cluster(workdir / "sim", options) as cluster:
            return await rotate(cluster)

    return asyncio.run(main())


def missing() -> str | None:
    if realk8s.find_apiserver() is None or etcd.find_etcd() is None:
        return "kube-apiserver or etcd is not built here (scripts/peers/kube-apiserver.sh, scripts/peers/etcd.sh)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(f"etcd_ca.py: {why}", file=sys.stderr)
        return 1
    for n in args.members:
        with tempfile.TemporaryDirectory(prefix="etcd-ca-", dir=args.workdir) as tmp:
            print(json.dumps(run(n, Path(tmp)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

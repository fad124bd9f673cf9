"""Issue 23's "Done when" on the simulator with real etcd v3.7.1 members and kube-apiservers v1.34.4
(`--k8s real`): one plan rotates the Talos API, Kubernetes API and etcd CAs; apply writes each node
once per phase, reboots each control plane after its accept and remove writes, one at a time, and
gates every member (health, status, one leader, revisions caught up) and every kube-apiserver before
the next. A writer puts keys during the whole apply the way the kube-apiservers reach etcd; every
acknowledged write is read back from every member, no write failed anywhere, and at the end a client
certificate from the old etcd CA is refused by every member. One cluster per size (3 and 5 members)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from etcdwriter import Writer
from simharness import run_with_cluster
from trustplan.providers.etcd import EtcdClient
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.render.text import text as render_text
from trustplan.talos import certgen, machineconfig, pki

pytestmark = pytest.mark.realk8s


#: the judge of every config apply writes: the simulator runs `talosctl validate --mode metal --strict` on
#: each ApplyConfiguration and refuses what it refuses (trustplan_sim.talosctl_check)
TALOSCTL = etcd.peers_cache() / "talosctl-v1.14.1"


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if realk8s.find_apiserver() is None or etcd.find_etcd() is None or not TALOSCTL.is_file():
        why = ("kube-apiserver v1.34.4, etcd or talosctl v1.14.1 not built here (scripts/peers/kube-apiserver.sh, "
               "scripts/peers/etcd.sh, TALOSCTL_VERSION=v1.14.1 scripts/peers/talosctl.sh)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _client(ca_pem: bytes, ca_key_pem: bytes, trusted: bytes) -> EtcdClient:
    ca = pki.load_cert_pem(ca_pem, "etcd CA")
    crt, key = certgen.issue_client_cert(ca, pki.load_key_pem(ca_key_pem, "key"), "probe", pki.utcnow())
    return EtcdClient(pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key), trusted)


def rotate(tmp_path: Path, members: int, writer_on: bool = True) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cps = cluster.controlplanes
        old = machineconfig.kind_fields(machineconfig.parse(cps[0].config, "cp-1"), "etcd").issuer
        assert old is not None and old.secret is not None
        path = cluster.dir / "trustplan.yaml"
        text = path.read_text().replace("authorities:\n", "authorities:\n  etcd-new: {generate: {}}\n", 1)
        path.write_text(text.replace("trust:\n", "trust:\n  etcd: {issuer: etcd-new}\n", 1))
        desired = desired_mod.load(path)
        import datetime as dt

        planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        planned.save_new_keys()
        shown = render_text(planned.saved)
        q = members // 2 + 1
        for phase in ("accept", "remove"):
            for cp in cps:
                assert f"{phase} {cp.address}: reboot, {members - 1} of {members} members up, quorum {q}" in shown
        writer = Writer(lambda: [cp.etcd for cp in cps if cp.etcd is not None])
        if writer_on:
            writer.start()
            await asyncio.sleep(0.5)
        started = time.monotonic()
        try:
            applied = await applier.apply_desired(
                applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())
            )
        finally:
            writer.stop()
        took = time.monotonic() - started
        reboots = [s for s in applied.steps if s.kind == "reboot"]
        assert [s.outcome for s in reboots] == ["ok"] * (2 * members)
        assert [s.node for s in reboots] == [cp.address for cp in cps] * 2
        etcd_gates = [s for s in applied.steps if s.kind == "etcd"]
        assert etcd_gates and all(s.outcome == "ok" for s in etcd_gates), etcd_gates
        writes = [s for s in applied.steps if s.kind == "write" and s.node == cps[0].address]
        assert [s.phase for s in writes] == ["accept", "swap", "remove"]  # one write per node per phase
        new = machineconfig.kind_fields(machineconfig.parse(cps[0].config, "cp-1"), "etcd")
        assert new.issuer is not None and new.accepted == () and new.issuer.public != old.public
        assert new.issuer.secret is not None
        validator = cluster.talosctl_validator
        assert validator is not None and validator.runs >= 3 * members  # every config written was judged valid
        if writer_on:
            assert writer.acked, "the writer acknowledged nothing"
            for cp in cps:
                assert cp.etcd is not None and writer.lost(cp.etcd) == [], cp.name
            assert writer.failures == 0 and writer.longest_failed_window_s == 0.0
            print(f"\n{members} members: {len(writer.acked)} writes acknowledged, 0 lost, longest failed-write "
                  f"window {writer.longest_failed_window_s:.2f} s, longest gap between acks "
                  f"{writer.longest_ack_gap_s:.2f} s, apply {took:.1f} s")
        trusted = new.issuer.public + old.public
        refused = _client(old.public, old.secret, trusted)
        accepted = _client(new.issuer.public, new.issuer.secret, trusted)
        assert [refused.accepts(cp.address) for cp in cps] == [False] * members
        assert [accepted.accepts(cp.address) for cp in cps] == [True] * members

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=members, workers=0, k8s=True, k8s_mode="real",
                     kubelet_rejoin_ms=100, talosctl=TALOSCTL)


def test_three_members_rotate_the_etcd_ca_with_the_others(tmp_path: Path) -> None:
    rotate(tmp_path, 3)


def test_five_members_rotate_the_etcd_ca_with_the_others(tmp_path: Path) -> None:
    rotate(tmp_path, 5)

"""The etcd CA bundle, judged by real etcd members (v3.7.1, the version Talos 1.14 ships, built by
scripts/peers/etcd.sh) run with Talos's flags and Talos-made certificates: a PEM bundle in
cluster.etcd.ca.crt makes every member trust both CAs while issuing from the first, so the CA turns
over one member at a time with quorum kept and no acknowledged write lost."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kubeapi
import pytest
from node_apiserver import NodeAPIServer
from trustplan.planner.etcd import EtcdMember, plan_etcd
from trustplan_sim import etcd_members as em
from trustplan_sim.etcd_rotation import GateFailed, Step, Writer, gate, quorum, rolling_steps, rotate

from trustplan.talos import pki

pytestmark = pytest.mark.timeout(300)


def _need_etcd(apiserver: bool = False) -> None:
    why = em.missing() or (kubeapi.missing() if apiserver else None)
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def _addresses(n: int) -> list[str]:
    """n loopback addresses in a /24 of its own, so parallel runs never share Talos's fixed ports."""
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    return [f"{block}.{k}" for k in range(2, 2 + n)]


@pytest.fixture
def cas() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    now = pki.utcnow()
    return em.generate_etcd_ca(now), em.generate_etcd_ca(now)


@contextmanager
def _cluster(tmp_path: Path, n: int, ca: tuple[bytes, bytes]) -> Iterator[em.EtcdCluster]:
    _need_etcd()
    cluster = em.EtcdCluster.start(tmp_path / "etcd", _addresses(n), *ca)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def _client(ca: tuple[bytes, bytes], trust: bytes, tmp_path: Path, cn: str = "probe") -> em.EtcdClient:
    crt, key = em.issue_leaf(ca[0], ca[1], f"client:{cn}", cn, (), pki.utcnow())
    return em.EtcdClient.from_pem(trust, crt, key, tmp_path / "clients")


def test_leaves_come_from_the_first_block_only(cas) -> None:  # noqa: ANN001
    old, new = cas
    crt, _ = em.issue_leaf(new[0] + old[0], new[1], "server", "cp-1", ("127.0.0.1",), pki.utcnow())
    leaf = pki.load_cert_pem(crt, "leaf")
    assert pki.verify_issued_by(leaf, pki.load_cert_pem(new[0], "new"))
    assert not pki.verify_issued_by(leaf, pki.load_cert_pem(old[0], "old"))


def test_plan_steps_keep_quorum_and_restart_one_member_at_a_time() -> None:
    for n in (3, 5):
        steps = rolling_steps([f"cp-{k}" for k in range(1, n + 1)])
        assert [s.phase for s in steps] == ["accept"] * n + ["swap"] * n + ["remove"] * n
        assert all(s.up_during >= quorum(n) for s in steps)
        assert {s.up_during for s in steps if s.restart} == {n - 1}


@pytest.mark.parametrize("members", [3])
def test_graceful_rotation_on_real_etcd(tmp_path: Path, cas, members: int) -> None:  # noqa: ANN001
    old, new = cas
    _need_etcd(apiserver=True)
    with _cluster(tmp_path, members, old) as cluster:
        old_client = _client(old, old[0], tmp_path, "old-admin")
        writer = Writer(_client(old, old[0] + new[0], tmp_path, "writer"), cluster.members)
        after_swap = _client(new, old[0] + new[0], tmp_path, "writer")

        def follow(step: Step) -> None:
            # Like kube-apiserver, whose etcd client certificate Talos issues again at the swap: the
            # writer presents a new-CA certificate before any member stops trusting the old CA.
            if step.phase == "remove":
                writer.client = after_swap

        # cp-1's kube-apiserver, wired as Talos wires it; restarted when its node's etcd secrets change.
        api = NodeAPIServer.start(tmp_path / "kube-apiserver", cluster.members[0])

        def apiserver_gate(step: Step) -> None:
            if step.member == api.member.name:
                api.sync()
            if not api.healthy():
                raise GateFailed(f"kube-apiserver on cp-1 is not ready after {step.describe()}")

        writer.start()
        try:
            result = rotate(cluster, old, new, tmp_path, on_step=follow, after_step=apiserver_gate)
        finally:
            writer.stop()
            api.stop()
        assert api.restarts == 4  # started, then once per phase on its own node
        assert len(result.steps) == 3 * members
        new_client = _client(new, new[0], tmp_path, "reader")
        gate(cluster, new_client)
        # Nothing acknowledged is lost, on any member; the writer never went without a member to write to.
        assert len(writer.acked) > 50
        for m in cluster.members:
            assert writer.lost(new_client, m) == []
        assert writer.longest_failed_window_s == 0.0, (writer.failures, writer.errors)
        # Every member serves a leaf from the new CA, and refuses a client certificate from the old one.
        for m in cluster.members:
            served = em.served_certificate(m)
            assert pki.verify_issued_by(served, pki.load_cert_pem(new[0], "new"))
            assert old_client.refused(m)
            assert not new_client.refused(m)


def test_without_the_bundle_the_first_member_does_not_come_back(tmp_path: Path, cas) -> None:  # noqa: ANN001
    """The control: switching a member straight to the new CA cuts it off from its peers (they refuse
    its new peer certificate, it refuses theirs); the gate stops there and no other member is touched."""
    old, new = cas
    with _cluster(tmp_path, 3, old) as cluster:
        first, others = cluster.members[0], cluster.members[1:]
        cluster.write_pki(first, new[0], new[1])
        cluster.restart(first)
        both = _client(new, old[0] + new[0], tmp_path)
        with pytest.raises(GateFailed, match="cp-1"):
            gate(cluster, both, timeout=8)
        # The two untouched members still hold quorum and take writes.
        via_old = _client(old, old[0], tmp_path)
        assert via_old.put(others[0], "still", "up") > 0
        assert all(m.starts == 1 for m in others)


def test_benchmark_five_members_lose_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/etcd_ca.py as docs/etcd-ca.md runs it, on 5 members: no lost write, no failed one."""
    _need_etcd()
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "etcd_ca.py"
    spec = importlib.util.spec_from_file_location("etcd_ca_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--members", "5", "--workdir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["members"] == 5 and report["steps"] == 15 and report["restarts"] == 10
    assert report["min_up_during_restart"] == 4 and report["quorum"] == 3
    assert report["acked_writes"] > 50 and report["lost_writes"] == 0
    assert report["longest_failed_window_s"] == 0.0
    assert report["old_ca_client_refused"] == 5


def _observe(cluster: em.EtcdCluster, old: tuple[bytes, bytes], new: tuple[bytes, bytes],
             tmp_path: Path) -> list[EtcdMember]:
    """What a plan reads: each member's field (its CA file, as Talos writes it verbatim) and two probes of
    the running member, with client certificates from the new and the old CA."""
    fp = {pki.fingerprint(pki.load_cert_pem(c[0], "ca")): name for name, c in (("old", old), ("new", new))}
    probe_new, probe_old = _client(new, old[0] + new[0], tmp_path), _client(old, old[0] + new[0], tmp_path)
    members = []
    for m in cluster.members:
        fps = [fp[pki.fingerprint(pki.load_cert_pem(b, "ca"))] for b in pki.split_pem_bundle(
            (m.pki_dir / "ca.crt").read_bytes())]
        members.append(EtcdMember(m.name, fps[0], tuple(fps[1:]), not probe_new.refused(m), probe_old.refused(m)))
    return members


def test_a_plan_made_after_an_interrupted_rotation_finishes_it(tmp_path: Path, cas) -> None:  # noqa: ANN001
    """Stop after accept and the first swap; plan again from what the members show; the planner's steps
    (planner.etcd) are what the oracle's full sequence had left, and running them finishes the job."""
    old, new = cas
    with _cluster(tmp_path, 3, old) as cluster:
        full = rolling_steps([m.name for m in cluster.members])
        rotate(cluster, old, new, tmp_path, steps=full[:4])
        planned = plan_etcd(_observe(cluster, old, new, tmp_path), "old", "new")
        left = [Step(s.phase, s.member, (s.issuer, *s.accepted), s.issuer, s.restart, s.up_during, s.quorum)
                for s in planned]
        assert left == full[4:]
        rotate(cluster, old, new, tmp_path, steps=left)
        assert plan_etcd(_observe(cluster, old, new, tmp_path), "old", "new") == ()


def test_a_member_that_fails_to_start_stops_the_rotation(tmp_path: Path, cas) -> None:  # noqa: ANN001
    """The first accept step meets a member whose etcd exits at start (its CA file unreadable to etcd):
    the gate fails naming it, no other member was restarted, and the other two still take writes."""
    old, new = cas
    with _cluster(tmp_path, 3, old) as cluster:
        first = cluster.members[0]
        real_write = cluster.write_pki

        def broken_write(m: em.Member, crt: bytes, key: bytes, now=None) -> None:  # noqa: ANN001
            real_write(m, crt, key, now)
            if m is first:
                garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                (m.pki_dir / "ca.crt").write_bytes(crt + garbage)

        cluster.write_pki = broken_write  # type: ignore[method-assign]
        with pytest.raises(GateFailed, match="not healthy: cp-1"):
            rotate(cluster, old, new, tmp_path, gate_timeout=8)
        assert first.proc is not None and first.proc.poll() is not None  # etcd refused to start
        assert [m.starts for m in cluster.members] == [2, 1, 1]
        assert _client(old, old[0], tmp_path).put(cluster.members[1], "still", "up") > 0

"""The etcd CA's rolling restarts under faults, on real etcd v3.7.1 members and kube-apiservers v1.34.4
(`--k8s real`, 3 control planes), with a writer running throughout:

- a member that fails to start after its reboot (its etcd exits at once) stops the apply at its gate:
  no other control plane is written or rebooted, the state records the failed step, and the two other
  members keep quorum (no write fails);
- once the node is back, the next plan starts where the roll stopped (it asks each running member what
  it trusts) and finishes it; every acknowledged write is read back from every member;
- an apply stopped between a control plane's write and its reboot (the write landed, the member still
  runs its old field): the next plan writes that node again and reboots it (etcdprobe).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from peers import need_kubernetes
from simharness import run_with_cluster
from trustplan.providers.etcd import EtcdClient
from trustplan_sim import etcd
from trustplan_sim.cluster import SimCluster
from trustplan_sim.etcdwriter import Writer
from trustplan_sim.node import SimNode
from waiting import until

from trustplan.engine import applier, planning
from trustplan.errors import TrustplanError
from trustplan.formats import desired as desired_mod
from trustplan.talos import certgen, machineconfig, pki

pytestmark = pytest.mark.faults


@pytest.fixture(autouse=True)
def _binaries() -> None:
    need_kubernetes()


def _client(ca_pem: bytes, key_pem: bytes, trusted: bytes) -> EtcdClient:
    crt, key = certgen.issue_client_cert(pki.load_cert_pem(ca_pem, "ca"), pki.load_key_pem(key_pem, "k"), "probe",
                                         pki.utcnow())
    return EtcdClient(pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key), trusted)


def _etcd_only(cluster: SimCluster) -> desired_mod.DesiredState:
    """The simulator's desired state, rotating the etcd CA alone, gates waiting 20 s at most."""
    path = cluster.dir / "trustplan.yaml"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(("  talos:", "  kubernetes:"))]
    text = "\n".join(lines) + "\n"
    text = text.replace("authorities:\n", "authorities:\n  etcd-new: {generate: {}}\n", 1)
    text = text.replace("trust:\n", "trust:\n  etcd: {issuer: etcd-new}\n", 1).replace("timeout: 60", "timeout: 20")
    path.write_text(text)
    return desired_mod.load(path)


async def _plan_and_apply(
    desired: desired_mod.DesiredState, rollback: bool = True
) -> tuple[planning.Planned, applier.Applied]:
    planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    applied = await applier.apply_desired(applier.ApplyRequest(
        desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow(), rollback=rollback))
    return planned, applied


def _field(cluster: SimCluster, k: int) -> tuple[bytes, ...]:
    f = machineconfig.kind_fields(machineconfig.parse(cluster.controlplanes[k].config, "cp"), "etcd")
    assert f.issuer is not None
    return (f.issuer.public, *(m.public for m in f.accepted))


async def _restart_node(node: SimNode) -> None:
    """The node goes down and comes back (a kube-apiserver the failed boot left starting may hold its
    port for a moment: the simulator's node start is tried again then)."""

    async def started() -> bool:
        await node.stop()
        try:
            await node.start()
        except etcd.PeerError:
            return False
        return True

    await until(started, "the repaired node starts", timeout=120)


def test_a_member_that_fails_to_start_stops_the_roll_and_the_next_plan_finishes_it(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cps = cluster.controlplanes
        old = machineconfig.kind_fields(machineconfig.parse(cps[0].config, "cp-1"), "etcd").issuer
        assert old is not None and old.secret is not None
        desired = _etcd_only(cluster)
        writer = Writer(lambda: [cp.etcd for cp in cps if cp.etcd is not None])
        writer.start()
        try:
            broken = cps[1].etcd
            assert broken is not None and cps[2].etcd is not None and cps[2].etcd.proc is not None
            binary, broken.binary = broken.binary, "/bin/false"  # its etcd exits at once when it starts again
            untouched_pid, untouched_field = cps[2].etcd.proc.pid, _field(cluster, 2)
            with pytest.raises(TrustplanError) as stopped:
                await _plan_and_apply(desired)
            assert f"etcd member {cps[1].address} did not come back" in str(stopped.value)
            assert "no other control plane was touched: the other 2 members keep quorum (2 of 3)" in str(stopped.value)
            assert _field(cluster, 2) == untouched_field and cps[2].etcd.proc.pid == untouched_pid
            # apply rolled the accept back: the fields say the old CA alone again, written without a reboot
            assert _field(cluster, 0) == untouched_field == _field(cluster, 1)
            state = json.loads((cluster.dir / "trustplan.state.json").read_text())
            steps = state["history"][-1]["steps"]
            rolled = [(s["kind"], s.get("node"), s["outcome"]) for s in steps if s["kind"] in ("reboot", "etcd")]
            assert rolled[-2:] == [("reboot", cps[1].address, "ok"), ("etcd", cps[1].address, "failed")]
            assert writer.failures == 0  # cp-1 and cp-3 kept quorum and took every write

            broken.binary = binary  # the node is repaired and comes back
            await _restart_node(cps[1])
            await broken.wait_healthy()
            planned, applied = await _plan_and_apply(desired)
            assert all(s.outcome == "ok" for s in applied.steps)
            reboots = [s.node for s in applied.steps if s.kind == "reboot"]
            # cp-1's member still runs the bundle (rolled back without a reboot): the plan asks it and skips its
            # accept; cp-2 came back on the old field and cp-3 was never touched: they reboot in accept
            assert reboots == [cps[1].address, cps[2].address, *(cp.address for cp in cps)]
            assert any(f"etcd member {cps[0].address} runs another etcd CA field" in n for n in planned.notes)
        finally:
            writer.stop()
        for cp in cps:
            assert cp.etcd is not None and writer.lost(cp.etcd) == [], cp.name
        assert writer.acked and writer.failures == 0
        new = _field(cluster, 0)
        trusted = new[0] + old.public
        assert [_client(old.public, old.secret, trusted).accepts(cp.address) for cp in cps] == [False] * 3

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     kubelet_rejoin_ms=100)


def test_a_write_whose_reboot_never_came_is_written_again_and_rebooted(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        from trustplan.providers.talos.provider import TalosProvider

        cps = cluster.controlplanes
        desired = _etcd_only(cluster)
        real = TalosProvider.reboot
        calls: list[str] = []

        async def lost(self: TalosProvider, node: object, credential: object = None) -> None:
            calls.append(node.address)  # type: ignore[attr-defined]
            raise TrustplanError("the connection dropped before the reboot was asked")

        TalosProvider.reboot = lost  # type: ignore[method-assign]
        try:
            with pytest.raises(TrustplanError):
                await _plan_and_apply(desired, rollback=False)  # --no-rollback: the field stays as written
        finally:
            TalosProvider.reboot = real  # type: ignore[method-assign]
        assert calls == [cps[0].address]
        assert len(_field(cluster, 0)) == 2  # the accept field landed; its member still runs the old one
        planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        accept = next(p for p in planned.plan.phases if p.name == "accept")
        assert list(accept.nodes()) == [cp.address for cp in cps]  # cp-1 again: its member never restarted
        assert any("runs another etcd CA field than its config" in n for n in planned.notes)
        planned.save_new_keys()
        applied = await applier.apply_desired(
            applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow()))
        assert [s.node for s in applied.steps if s.kind == "reboot"][:1] == [cps[0].address]

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     kubelet_rejoin_ms=100)



def test_a_sigkill_mid_roll_leaves_a_rotation_the_next_apply_finishes(tmp_path: Path) -> None:
    """`trustplan apply --auto-approve` killed (SIGKILL) right after it asked the second control plane to
    reboot in the accept phase: the next `apply --auto-approve` plans from what each member runs and
    finishes; then every member refuses an old-CA client and serves a new-CA one, and a new plan has no
    changes."""
    import yaml
    from faults.simproc import Proc, kill_tree, run_cli, trustplan_cmd
    from simharness import SimProcess

    sim_dir = tmp_path / "sim"
    with SimProcess(sim_dir, 3, 0, k8s=True, k8s_mode="real", kubelet_rejoin_ms=100, start_timeout=180) as sim:
        old = yaml.safe_load((sim.dir / "secrets.yaml").read_text())["certs"]["etcd"]
        old_crt, old_key = (pki.b64decode_pem(old[k], "secrets.yaml", k) for k in ("crt", "key"))
        path = sim.dir / "trustplan.yaml"
        text = path.read_text().replace("authorities:\n", "authorities:\n  etcd-new: {generate: {}}\n", 1)
        path.write_text(text.replace("trust:\n", "trust:\n  etcd: {issuer: etcd-new}\n", 1))
        doc = json.loads((sim.dir / "sim.json").read_text())
        cps = [n["address"] for n in doc["nodes"] if n["role"] == "controlplane"]
        first = Proc.start(trustplan_cmd("apply", "--auto-approve"), sim.dir)
        try:
            assert first.wait_for(f"accept: {cps[1]}: rebooting it", 300), first.stderr
        finally:
            kill_tree(first.popen.pid)
        first.wait(30)
        again = run_cli(sim.dir, "apply", "--auto-approve", timeout=600)
        assert again.returncode == 0, again.stderr
        # the killed reboot landed (cp-2 runs the bundle: not rebooted again), or it did not (its member runs
        # the old field under a config with the bundle: the plan says so and apply reboots it)
        redone = f"accept: {cps[1]}: rebooting it" in again.stderr
        assert redone == (f"etcd member {cps[1]} runs another etcd CA field" in again.stderr), again.stderr
        keys = json.loads((sim.dir / ".trustplan" / "keys" / "index.json").read_text())
        new_fp = keys["etcd-new"]
        new_crt = next(p for p in (sim.dir / ".trustplan" / "keys").glob("*.crt")
                       if pki.fingerprint(pki.load_cert_pem(p.read_bytes(), "k")) == new_fp).read_bytes()
        trusted = old_crt + new_crt
        assert [_client(old_crt, old_key, trusted).accepts(a) for a in cps] == [False] * 3
        done = run_cli(sim.dir, "plan")
        assert done.returncode == 0 and "no changes" in (done.stdout + done.stderr).lower(), done.stdout

"""Plan and apply a Talos API CA rotation through the talos provider against the simulator."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan.providers.talos.provider import TalosProvider
from trustplan.state import LocalState
from trustplan_sim.cluster import SimCluster

from trustplan.engine import access, applier
from trustplan.engine import planning as engine
from trustplan.engine.applier import ApplyRequest
from trustplan.engine.keyring import KeyRing
from trustplan.engine.progress import QuietReporter
from trustplan.engine.runner import PhaseRunner
from trustplan.errors import NodeUnreachableError, TrustplanError, UnsafePlanError
from trustplan.formats import desired as desired_mod
from trustplan.formats.keystore import Keystore
from trustplan.talos import certgen, pki


async def plan(cluster: SimCluster) -> tuple[desired_mod.DesiredState, engine.Planned]:
    """`trustplan plan` in-process on the cluster's trustplan.yaml; new CA keys saved."""
    desired = desired_mod.load(cluster.dir / "trustplan.yaml")
    planned = await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    return desired, planned


async def plan_and_apply(cluster: SimCluster) -> applier.Applied:
    desired, planned = await plan(cluster)
    return await applier.apply_desired(ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow()))


async def version_with(cluster: SimCluster, talosconfig: Path) -> dict[str, str]:
    """Version on every node with a talosconfig; node -> tag or the error."""
    out = {}
    async with TalosProvider(talosconfig, None, cluster.node_refs(), verify_timeout=1.0) as p:
        for ref in cluster.node_refs():
            try:
                out[ref.address] = await p.verify(ref, None)
            except TrustplanError as exc:
                out[ref.address] = f"refused: {exc}"
    return out


def test_full_talos_rotation_locks_out_the_old_talosconfig(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        old = tmp_path / "old-talosconfig"
        old.write_bytes(cluster.talosconfig.read_bytes())
        applied = await plan_and_apply(cluster)
        assert applied.state.serial == 1
        new_results = await version_with(cluster, cluster.talosconfig)
        assert all(not v.startswith("refused") for v in new_results.values()), new_results
        old_results = await version_with(cluster, old)
        assert all(v.startswith("refused") for v in old_results.values()), old_results
        # state equals live
        desired, planned = await plan(cluster)
        assert not planned.plan.has_changes
        state = LocalState(desired.state).read("sim")
        assert {a: n.config_digest for a, n in state.nodes.items()} == planned.live.digests()

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)


def test_worker_listed_as_controlplane_is_refused_at_plan_time(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        path = cluster.dir / "trustplan.yaml"
        cps = ", ".join(n.address for n in cluster.controlplanes)
        w = [n.address for n in cluster.workers]
        text = path.read_text()
        text = text.replace(f"controlplane: [{cps}]", f"controlplane: [{cps}, {w[0]}]")
        text = text.replace(f"worker: [{', '.join(w)}]", f"worker: [{', '.join(w[1:])}]")
        path.write_text(text)
        with pytest.raises(TrustplanError, match=f"{w[0]} is listed under cluster.nodes.controlplane"):
            await plan_and_apply(cluster)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=2)


def test_node_down_at_plan_time_is_named(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        down = cluster.workers[0]
        await down.stop()
        with pytest.raises(NodeUnreachableError, match=down.address):
            await plan_and_apply(cluster)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)


def test_lockout_desired_state_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Issuing from a CA nobody holds a key for would strip every control plane's key."""

    async def scenario(cluster: SimCluster) -> None:
        foreign, _ = certgen.generate_ca("talos", pki.utcnow())
        (cluster.dir / "foreign.crt").write_bytes(pki.cert_to_pem(foreign))
        path = cluster.dir / "trustplan.yaml"
        before = {n.address: n.config for n in cluster.nodes}
        # a live CA (the current one) as issuer but with its key removed is impossible to express;
        # instead: revoke the current CA without ever swapping: a node would trust nothing.
        current = pki.fingerprint(cluster.secrets.os.cert)
        text = path.read_text().replace(
            "talos: {issuer: talos-new, accepted: []}", f"talos: {{issuer: {current}, accepted: []}}"
        )
        path.write_text(text)
        _, planned = await plan(cluster)
        assert not planned.plan.has_changes  # already there: nothing to do
        assert {n.address: n.config for n in cluster.nodes} == before
        _ = UnsafePlanError

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)


def _cut(plan, phase_index: int, nodes: int | None):  # noqa: ANN001, ANN202
    """The plan stopped inside phase `phase_index` after `nodes` nodes (None: the whole phase)."""
    from dataclasses import replace

    phases = list(plan.phases[:phase_index])
    phase = plan.phases[phase_index]
    keep = phase.nodes()[:nodes] if nodes is not None else phase.nodes()
    phases.append(replace(phase, edits=tuple(e for e in phase.edits if e.node in keep), gates=()))
    return replace(plan, phases=tuple(phases))


@pytest.mark.parametrize(
    ("phase_index", "nodes"),
    [(0, 2), (0, None), (1, 1), (1, 4), (2, 3)],
    ids=["accept-on-2-nodes", "accept-done", "swap-on-1-cp", "swap-on-4-nodes", "remove-on-3-nodes"],
)
def test_a_plan_from_a_half_done_rotation_finishes_it(tmp_path: Path, phase_index: int, nodes: int | None) -> None:
    async def scenario(cluster: SimCluster) -> None:
        old = tmp_path / "old-talosconfig"
        old.write_bytes(cluster.talosconfig.read_bytes())
        desired = desired_mod.load(cluster.dir / "trustplan.yaml")
        keystore = Keystore(desired.keystore)
        provider = access.make_provider(desired)
        try:
            planned = await engine.plan_live(
                desired, provider, keystore, LocalState(desired.state).read("sim"), pki.utcnow(), dt.timedelta(hours=1)
            )
            planned.resolved.save_new(keystore)
            partial = _cut(planned.plan, phase_index, nodes)
            runner = PhaseRunner(
                desired,
                provider,
                KeyRing(planned.resolved.material, keystore),
                planned.live,
                partial,
                pki.utcnow(),
                QuietReporter(),
                operator_identity=planned.operator,
            )
            await runner.run()  # an earlier run that died here
        finally:
            await provider.close()
        new_issuer = planned.resolved.refs["talos-new"]
        applied = await plan_and_apply(cluster)  # the same desired state: finish the job
        edits = [s for s in applied.steps if s.kind == "write"]
        assert len(edits) < 3 * len(cluster.nodes)  # what was done is skipped
        assert planned.resolved.refs["talos-new"] == new_issuer
        assert all(not v.startswith("refused") for v in (await version_with(cluster, cluster.talosconfig)).values())
        assert all(v.startswith("refused") for v in (await version_with(cluster, old)).values())

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)


def test_an_apply_that_fails_halfway_is_recorded_and_a_new_plan_finishes_it(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        desired, planned = await plan(cluster)
        broken = cluster.workers[1]
        broken.faults.apply_error = "disk full"
        broken.faults.apply_error_times = 1
        with pytest.raises(TrustplanError, match=f"apply stopped: .*{broken.address}.*disk full"):
            request = ApplyRequest(desired, planned.saved, "sha256:" + "1" * 64, "plan.bin", pki.utcnow())
            await applier.apply_desired(request)
        state = LocalState(desired.state).read("sim")
        last = state.history[-1]
        assert last.status == "failed" and "disk full" in last.error
        failed = [s for s in last.steps if s.outcome == "failed"]
        assert [s.node for s in failed] == [broken.address]
        assert sum(1 for s in last.steps if s.kind == "write" and s.outcome == "ok") >= 4
        applied = await plan_and_apply(cluster)  # the fault has passed: the same desired state finishes
        assert applied.state.history[-1].status == "applied"
        assert planned.resolved.refs["talos-new"] == applied.state.nodes[broken.address].talos.issuer
        assert all(not v.startswith("refused") for v in (await version_with(cluster, cluster.talosconfig)).values())

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)


def test_one_rotation_can_follow_another(tmp_path: Path) -> None:
    """The first apply writes the new talosconfig over the old one; a second rotation runs with it."""

    async def scenario(cluster: SimCluster) -> None:
        first = await plan_and_apply(cluster)
        path = cluster.dir / "trustplan.yaml"
        text = path.read_text().replace(
            "talos-new: {generate: {algorithm: ed25519}}",
            "talos-new: {generate: {algorithm: ed25519}}\n  talos-next: {generate: {}}",
        )
        path.write_text(text.replace("talos: {issuer: talos-new, accepted: []}", "talos: {issuer: talos-next}"))
        second = await plan_and_apply(cluster)
        assert second.state.serial == first.state.serial + 1
        issuers = {n.talos.issuer for n in second.state.nodes.values()}
        assert len(issuers) == 1 and issuers != {n.talos.issuer for n in first.state.nodes.values()}
        assert all(not v.startswith("refused") for v in (await version_with(cluster, cluster.talosconfig)).values())

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1)

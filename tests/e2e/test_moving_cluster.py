"""Issue 20: the cluster moves while apply runs. Another admin's config change during an apply is
kept (or stops the apply when it touches a CA field); a node that joins after the plan stops the
apply before its swap."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from e2e.test_kubernetes_rotation import Notes
from e2e.test_rollback import talos_trust
from e2e.test_talos_rotation import plan
from simharness import run_with_cluster
from trustplan.state import LocalState
from trustplan_sim.cluster import SimCluster
from trustplan_sim.node import SimNode

from trustplan.engine import applier
from trustplan.engine.applier import ApplyRequest
from trustplan.engine.planning import Planned
from trustplan.errors import TrustplanError
from trustplan.formats.desired import DesiredState
from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.machineconfig import CAFields


def _request(desired: DesiredState, planned: Planned, digit: str) -> ApplyRequest:
    return ApplyRequest(desired, planned.saved, "sha256:" + digit * 64, "plan", pki.utcnow())


def foreign_cert_san(node: SimNode) -> None:
    """Another admin's `talosctl apply-config` that adds a certSAN (a field trustplan never edits)."""
    data = node.config.replace(b"certSANs: []", b"certSANs:\n        - admin.example.org", 1)
    assert data != node.config
    node.set_config(data, machineconfig.parse(data, node.name))


def foreign_ca(node: SimNode) -> None:
    """Another admin's change to the node's accepted Talos CAs."""
    crt, _ = certgen.generate_ca("talos", pki.utcnow())
    cfg = machineconfig.parse(node.config, node.name)
    f = cfg.ca_fields("talos")
    data = cfg.with_ca_fields({"talos": CAFields(f.issuer, f.issuer_key, (*f.accepted, pki.cert_to_pem(crt)))})
    node.set_config(data, machineconfig.parse(data, node.name))


class EditAtSwap(Notes):
    """Runs `edit` on the worker the moment the swap phase starts patching (after the plan was read)."""

    def __init__(self, cluster: SimCluster, edit: object) -> None:
        super().__init__()
        self.cluster, self.edit, self.fired = cluster, edit, False

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if title.startswith("swap: patching") and not self.fired:
            self.fired = True
            self.edit(self.cluster.workers[0])  # type: ignore[operator]


def test_a_foreign_edit_outside_the_ca_fields_survives_the_apply_and_is_recorded(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        desired, planned = await plan(cluster)
        notes = EditAtSwap(cluster, foreign_cert_san)
        await applier.apply_desired(_request(desired, planned, "1"), reporter=notes)
        worker = cluster.workers[0]
        assert b"admin.example.org" in worker.config  # the other admin's change was not overwritten
        new = planned.saved.plan.desired_issuers()[0].issuer
        fields = machineconfig.parse(worker.config, worker.name).ca_fields("talos")
        assert fields.issuer is not None and pki.fingerprint(pki.load_cert_pem(fields.issuer, "ca")) == new
        assert any(f"{worker.address}: config changed by someone else" in n for n in notes.notes), notes.notes
        steps = LocalState(desired.state).read("sim").history[-1].steps
        assert [s.node for s in steps if s.kind == "foreign" and s.outcome == "kept"] == [worker.address]

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1)


def test_a_foreign_edit_of_a_ca_field_stops_the_apply_naming_the_node(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        desired, planned = await plan(cluster)
        worker = cluster.workers[0]
        with pytest.raises(TrustplanError) as stopped:
            await applier.apply_desired(_request(desired, planned, "2"),
                                        reporter=EditAtSwap(cluster, foreign_ca))
        message = str(stopped.value)
        assert f"node {worker.address} changed under this apply: its talos CA fields" in message, message
        assert "accepted CAs" in message
        # the foreign CA is still there: trustplan did not overwrite it
        assert len(machineconfig.parse(worker.config, worker.name).ca_fields("talos").accepted) >= 1
        steps = LocalState(desired.state).read("sim").history[-1].steps
        assert any(s.kind == "foreign" and s.outcome == "stopped" for s in steps)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1)


class JoinAtAccept(Notes):
    """Puts `node` back among the cluster's members the moment the accept phase starts patching."""

    def __init__(self, cluster: SimCluster, node: SimNode) -> None:
        super().__init__()
        self.cluster, self.node = cluster, node

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if title.startswith("accept: patching") and self.node not in self.cluster.nodes:
            self.cluster.nodes.append(self.node)


def test_a_node_that_joins_during_the_apply_is_refused_before_the_swap(tmp_path: Path) -> None:
    """A worker that becomes a member after the plan was read is not in the plan: it would keep only
    the old CA. Apply lists the members again before the swap, stops naming it, and rolls back."""

    async def scenario(cluster: SimCluster) -> None:
        late = cluster.workers[-1]
        path = cluster.dir / "trustplan.yaml"
        text = path.read_text()
        path.write_text(re.sub(r"(worker: \[[^\]]*?), ?" + re.escape(late.address) + r"\]", r"\1]", text))
        assert late.address not in path.read_text()
        cluster.nodes.remove(late)  # not a member yet
        before = talos_trust(cluster)
        desired, planned = await plan(cluster)
        with pytest.raises(TrustplanError) as stopped:
            await applier.apply_desired(_request(desired, planned, "4"),
                                        reporter=JoinAtAccept(cluster, late))
        message = str(stopped.value)
        assert f"before the swap phase: nodes joined the cluster after the plan was made: {late.address}" in message
        assert "rolled back: every node changed by this apply has its CAs of before" in message, message
        assert talos_trust(cluster) == before  # nobody issues from the new CA: the late node is not cut off
        steps = LocalState(desired.state).read("sim").history[-1].steps
        assert any(s.kind == "members" and s.outcome == "failed" for s in steps)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=2)


def test_plan_and_status_name_a_member_an_earlier_rotation_left_behind(tmp_path: Path) -> None:
    """A worker that joined while a rotation ran (outside cluster.nodes) keeps only the old CA. The
    next plan changes nothing, yet it names that member (it used to say "No changes" and nothing
    else), and `status --detailed-exitcode` exits 2 naming it (it used to say "No drift")."""
    import asyncio
    import sys

    async def cli(cwd: Path, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "trustplan", *args, cwd=cwd,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def scenario(cluster: SimCluster) -> None:
        late = cluster.workers[-1]
        path = cluster.dir / "trustplan.yaml"
        path.write_text(re.sub(r"(worker: \[[^\]]*?), ?" + re.escape(late.address) + r"\]", r"\1]", path.read_text()))
        cluster.nodes.remove(late)
        code, out = await cli(cluster.dir, "apply", "--auto-approve")
        assert code == 0, out
        cluster.nodes.append(late)  # it was there all along, but not yet a member when apply listed them
        code, out = await cli(cluster.dir, "plan", "--detailed-exitcode")
        assert f"member {late.address} (worker {late.hostname}) is not in cluster.nodes" in out, out
        assert "add it under cluster.nodes" in out
        code, out = await cli(cluster.dir, "status", "--detailed-exitcode")
        assert code == 2, out
        assert f"member {late.address} (worker {late.hostname}) is not in cluster.nodes" in out, out

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=2)


class EditFileAtSwapGate(Notes):
    """Runs `edit` the moment the swap's gate starts (after the swap's writes, before the outputs)."""

    def __init__(self, edit: object) -> None:
        super().__init__()
        self.edit, self.fired = edit, False

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if title.startswith("gate after swap") and not self.fired:
            self.fired = True
            self.edit()  # type: ignore[operator]


def test_a_foreign_edit_of_the_outputs_during_apply_is_kept_or_stops_it(tmp_path: Path) -> None:
    """The same check for the files apply writes: another edit of secrets.yaml outside its CA entries
    is kept and recorded; one of its CA entries stops the apply before the outputs are written."""

    async def scenario(cluster: SimCluster) -> None:
        secrets = cluster.dir / "secrets.yaml"
        desired, planned = await plan(cluster)
        notes = EditFileAtSwapGate(lambda: secrets.write_text(secrets.read_text() + "# kept by the other admin\n"))
        await applier.apply_desired(_request(desired, planned, "5"), reporter=notes)
        assert "# kept by the other admin" in secrets.read_text()
        said = f"secrets {secrets} changed by someone else since apply began"
        assert any(said in n for n in notes.notes), notes.notes
        steps = LocalState(desired.state).read("sim").history[-1].steps
        assert [s.outcome for s in steps if s.kind == "foreign"] == ["kept"]

        cluster_ca = re.compile(r"(  os:\n    crt: )\S+")
        yaml_path = cluster.dir / "trustplan.yaml"  # rotate once more; this time the CA entry is edited
        yaml_path.write_text(yaml_path.read_text().replace("talos-new", "talos-two"))
        desired, planned = await plan(cluster)

        def edit_ca() -> None:
            text = secrets.read_text()
            assert cluster_ca.search(text), text
            secrets.write_text(cluster_ca.sub(r"\1LS0tLS1CRUdJTiBmb3JlaWdu", text, count=1))

        with pytest.raises(TrustplanError) as stopped:
            await applier.apply_desired(_request(desired, planned, "6"),
                                        reporter=EditFileAtSwapGate(edit_ca))
        assert f"{secrets} changed under this apply: its CA entries" in str(stopped.value)
        assert "LS0tLS1CRUdJTiBmb3JlaWdu" in secrets.read_text()  # not overwritten

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)


def test_a_rotation_by_another_working_copy_stops_the_apply_without_a_rollback(tmp_path: Path) -> None:
    """Issue 20, finding 4: another working copy (its own state) rotates the Talos CA while this apply
    waits for its swap gate. The gate fails; before rolling back, apply sees a CA on the nodes that
    neither its plan nor its state knows, does not roll back over the other rotation, says another
    apply probably ran, and does not promise that a new plan from this state finishes the job."""

    async def scenario(cluster: SimCluster) -> None:
        crt, key = certgen.generate_ca("talos", pki.utcnow())
        theirs = pki.cert_to_pem(crt)

        def other_copy_rotates() -> None:
            for n in cluster.nodes:
                cfg = machineconfig.parse(n.config, n.name)
                issuer_key = pki.key_to_pem(key) if n.role == "controlplane" else None
                data = cfg.with_ca_fields({"talos": CAFields(theirs, issuer_key, ())})
                n.set_config(data, machineconfig.parse(data, n.name))

        desired, planned = await plan(cluster)
        desired = dataclasses.replace(desired, rollout=dataclasses.replace(desired.rollout, verify_timeout=3))
        with pytest.raises(TrustplanError) as stopped:
            await applier.apply_desired(_request(desired, planned, "7"),
                                        reporter=EditFileAtSwapGate(other_copy_rotates))
        message, hint = str(stopped.value), stopped.value.hint or ""
        assert "no rollback: the cluster's CAs changed under this apply" in message, message
        assert "another apply (a working copy with its own state?) probably ran" in message
        assert "rolling back" not in message and "rollback failed" not in message
        assert "nothing is lost" not in hint and "use the state and the talosconfig of the run" in hint, hint
        for n in cluster.nodes:  # the other copy's rotation stands
            assert machineconfig.parse(n.config, n.name).ca_fields("talos").issuer == theirs

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=1)

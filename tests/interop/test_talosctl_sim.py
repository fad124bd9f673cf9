"""talosctl, unmodified, used as a user would against `trustplan sim` (3 control planes + 2 workers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from interop_tools import talosctl, talosctl_binary
from simharness import run_with_cluster
from trustplan_sim.cluster import SimCluster

from trustplan.talos import machineconfig

pytestmark = pytest.mark.interop


def _json_docs(text: str) -> list[dict]:
    """talosctl get -o json prints one JSON document per resource."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        doc, end = decoder.raw_decode(text, i)
        docs.append(doc)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return docs


@pytest.mark.parametrize(
    ("layout", "k8s"), [("legacy", False), ("legacy", True), ("multidoc", False), ("multidoc", True)]
)
def test_read_commands(tmp_path: Path, layout: str, k8s: bool) -> None:
    """version, get machineconfig / members / rd, `-n worker -e cp`, `-n a,b`, kubeconfig, Unimplemented."""
    talosctl_path = talosctl_binary()

    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[1]
        other_cp = cluster.controlplanes[2]

        # version, answered by the worker through the control plane
        out = (await talosctl(talosctl_path, cluster, "-n", worker.address, "-e", cp.address, "version")).ok().out
        assert f"NODE:        {worker.address}" in out and f"Tag:         {cluster.talos_version}" in out

        # -n a,b: answered by both
        out = (await talosctl(talosctl_path, cluster, "-n", f"{other_cp.address},{worker.address}", "version")).ok().out
        assert out.count("NODE:") == 2 and f"NODE:        {other_cp.address}" in out and worker.address in out

        # get machineconfig: the worker's own config, byte for byte
        result = await talosctl(
            talosctl_path,
            cluster,
            "-n",
            worker.address,
            "-e",
            cp.address,
            "get",
            "machineconfig",
            "v1alpha1",
            "-o",
            "json",
        )
        (doc,) = _json_docs(result.ok().out)
        assert doc["node"] == worker.address and doc["metadata"]["id"] == "v1alpha1"
        assert doc["spec"] == worker.config.decode()

        # get members: every node, with its address and role
        result = await talosctl(talosctl_path, cluster, "-n", cp.address, "get", "members", "-o", "json")
        members = {d["spec"]["hostname"]: d["spec"] for d in _json_docs(result.ok().out)}
        assert {h: (m["addresses"], m["machineType"]) for h, m in members.items()} == {
            n.hostname: ([n.address], n.role) for n in cluster.nodes
        }

        # get rd: the definitions talosctl resolves names with
        out = (await talosctl(talosctl_path, cluster, "-n", cp.address, "get", "rd")).ok().out
        for rd in ("machineconfigs.config.talos.dev", "osrootsecrets.secrets.talos.dev", "members.cluster.talos.dev"):
            assert rd in out

        # the OS root, as rotate-ca reads it
        result = await talosctl(talosctl_path, cluster, "-n", cp.address, "get", "osrootsecrets", "os", "-o", "yaml")
        assert yaml.safe_load(result.ok().out)["spec"]["issuingCA"]["crt"]

        # a call the simulator does not serve fails with Unimplemented
        result = await talosctl(talosctl_path, cluster, "-n", cp.address, "memory")
        assert result.code != 0 and "Unimplemented" in result.err

        # talosctl kubeconfig: the cluster's Kubernetes CA and server
        dest = tmp_path / "kube"
        (await talosctl(talosctl_path, cluster, "-n", cp.address, "kubeconfig", "--force", str(dest))).ok()
        kube = yaml.safe_load(dest.read_text())
        cluster_entry = kube["clusters"][0]["cluster"]
        assert cluster_entry["server"] == f"https://{cp.address}:6443"
        ca = machineconfig.parse(cp.config, "cp").ca_fields("kubernetes").issuer
        assert ca is not None
        assert base64.b64decode(cluster_entry["certificate-authority-data"]).startswith(ca)

    run_with_cluster(scenario, tmp_path, controlplanes=3, workers=2, k8s=k8s, config_layout=layout)


@pytest.mark.parametrize("dry_run", [True, False])
def test_apply_config_lands_on_the_named_node(tmp_path: Path, dry_run: bool) -> None:
    """`talosctl -n worker -e cp apply-config --mode no-reboot [--dry-run]` changes the worker only."""
    talosctl_path = talosctl_binary()

    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        before = {n.name: n.config for n in cluster.nodes}
        edited = worker.config.replace(b"hostname: worker-1", b"hostname: worker-one")
        path = tmp_path / "worker.yaml"
        path.write_bytes(edited)
        args = ["-n", worker.address, "-e", cp.address, "apply-config", "--mode", "no-reboot", "-f", str(path)]
        result = await talosctl(talosctl_path, cluster, *args, *(["--dry-run"] if dry_run else []))
        result.ok()
        after = {n.name: n.config for n in cluster.nodes}
        if dry_run:
            assert after == before
            assert "Dry run summary" in result.out + result.err and "worker-one" in result.out + result.err
        else:
            assert after == {**before, worker.name: edited}

    run_with_cluster(scenario, tmp_path, controlplanes=3, workers=2)


@pytest.mark.parametrize("confirm", [False, True])
def test_apply_config_mode_try_reverts_unless_a_later_apply_confirms_it(tmp_path: Path, confirm: bool) -> None:
    """The real `talosctl apply-config --mode=try --timeout 2s` against the simulator: the node runs the
    new config, then returns to its config of before on its own (Talos's RollbackToConfigAfter);
    a later `--mode=no-reboot` apply of the same config cancels the revert (CancelConfigRollbackTimeout).
    trustplan's dead-man switch relies on exactly this."""
    from waiting import until

    talosctl_path = talosctl_binary()

    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        before = worker.config
        edited = before.replace(b"hostname: worker-1", b"hostname: worker-one")
        path = tmp_path / "worker.yaml"
        path.write_bytes(edited)
        base = ["-n", worker.address, "-e", cp.address, "apply-config", "-f", str(path)]
        result = await talosctl(talosctl_path, cluster, *base, "--mode", "try", "--timeout", "2s")
        result.ok()
        assert "automatically reverted back in 2s" in result.out + result.err
        assert worker.config == edited and worker.rollback_pending
        if confirm:
            (await talosctl(talosctl_path, cluster, *base, "--mode", "no-reboot")).ok()
            assert not worker.rollback_pending  # the revert is cancelled: nothing is left to change it
            assert worker.config == edited
        else:
            await until(lambda: worker.config == before, "the node reverted the try", timeout=15)
            assert not worker.rollback_pending

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)

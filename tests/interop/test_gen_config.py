"""`trustplan sim up --from`: simulated clusters made from what `talosctl gen config` itself wrote
(tests/fixtures/talosctl-gen-config/<release>: v1.12.1 the legacy layout, v1.14.1 the Talos 1.14
documents), judged by talosctl:

- every config the simulator made from them, and every config trustplan then writes to the nodes
  (both PKIs rotated), passes `talosctl validate --mode metal --strict` of the release that
  generated them (the simulator also runs it on each ApplyConfiguration: `talosctl=`); talosctl
  reaches every node with the talosconfig trustplan wrote;
- `talosctl rotate-ca` rotates the Talos CA of such a cluster to completion, then trustplan takes the
  cluster over (talosctl's talosconfig, the CA it made) and rotates it again, and talosctl still
  reaches every node with the talosconfig trustplan wrote. talosctl v1.12.1 cannot read a 1.14
  gen config (`"DiscoveryServiceConfig" "v1alpha1": not registered`) and refuses before changing
  anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from interop_tools import VERSIONS, applies, printed_ca, talosctl, talosctl_binary, trustplan
from simharness import run_with_cluster
from test_validate import GEN_CONFIG, validate
from trustplan_sim import oracle
from trustplan_sim.cluster import SimCluster

from trustplan.talos import machineconfig

FAST_K8S = {"k8s": True, "apiserver_restart_ms": 300, "kubelet_rejoin_ms": 200}

pytestmark = pytest.mark.interop


async def _validate_all(binary: Path, cluster: SimCluster, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        path = where / f"{node.name}.yaml"
        path.write_bytes(node.config)
        await validate(binary, path)


async def _reaches_every_node(binary: Path, cluster: SimCluster, talosconfig: Path) -> bool:
    nodes = ",".join(n.address for n in cluster.nodes)
    result = await talosctl(binary, cluster, "-n", nodes, "version", talosconfig=talosconfig, timeout=60)
    return result.code == 0 and result.out.count("NODE:") == len(cluster.nodes)


def _talos_issuers(cluster: SimCluster) -> set[bytes | None]:
    return {machineconfig.parse(n.config, n.name).ca_fields("talos").issuer for n in cluster.nodes}


def test_sim_from_gen_config_then_trustplan_rotates_both_pkis(
    tmp_path: Path, talosctl_version: str, talosctl_path: Path
) -> None:
    """The configs are those of the release under test; both PKIs rotated by trustplan."""

    async def scenario(cluster: SimCluster) -> None:
        expected = "multidoc" if talosctl_version == "v1.14.1" else "legacy"
        assert cluster.config_layout == expected and cluster.cluster_name == "demo"
        assert [n.hostname for n in cluster.nodes] == ["cp-1", "cp-2", "worker-1", "worker-2"]
        await _validate_all(talosctl_path, cluster, tmp_path / "before")
        old = tmp_path / "talosconfig.old"
        shutil.copy(cluster.talosconfig, old)
        (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir)).ok()
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        assert applies(cluster) > 0
        await _validate_all(talosctl_path, cluster, tmp_path / "after")
        assert await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)
        assert not await _reaches_every_node(talosctl_path, cluster, old)
        # the simulator ran talosctl validate on every config sent (a refusal would have failed the apply)
        judge = cluster.talosctl_validator
        assert judge is not None and judge.runs >= len(cluster.nodes)
        # a config the oracle takes (it reads only what the simulator needs) but Talos refuses
        unknown_field = b"notAField: 1\n" + cluster.nodes[0].config
        assert oracle.validate(oracle.read(unknown_field)) == []
        assert await judge.problem(unknown_field) is not None and await judge.problem(cluster.nodes[0].config) is None

    run_with_cluster(
        scenario, tmp_path / "sim", controlplanes=2, workers=2, from_dir=GEN_CONFIG / talosctl_version,
        talosctl=talosctl_path, **FAST_K8S,
    )  # fmt: skip


@pytest.mark.parametrize("generated_by", VERSIONS)
def test_rotate_ca_then_trustplan_takes_over(
    tmp_path: Path, generated_by: str, talosctl_version: str, talosctl_path: Path
) -> None:
    """talosctl (the release under test) rotates the Talos CA of a cluster made by `generated_by`;
    trustplan then rotates it again; every config stays valid for the generating release."""
    validator = talosctl_binary(generated_by)

    async def scenario(cluster: SimCluster) -> None:
        cp = cluster.controlplanes[0].address
        new_config = tmp_path / "talosconfig.talosctl"
        result = await talosctl(
            talosctl_path, cluster, "-n", cp, "rotate-ca", "--dry-run=false", "--talos=true",
            "--kubernetes=false", "-o", str(new_config), timeout=300,
        )  # fmt: skip
        if talosctl_version == "v1.12.1" and generated_by == "v1.14.1":
            # its first unknown document is DiscoveryServiceConfig, before any KubeAPIServerCAConfig
            assert result.code != 0 and '"v1alpha1": not registered' in result.err, result.err
            assert applies(cluster) == 0
            return
        result.ok()
        talosctl_ca, _ = printed_ca(result.out, "New Talos CA")
        assert _talos_issuers(cluster) == {talosctl_ca}
        assert await _reaches_every_node(talosctl_path, cluster, new_config)
        await _validate_all(validator, cluster, tmp_path / "after-talosctl")

        # trustplan takes over with talosctl's talosconfig, and rotates to a CA of its own
        shutil.copy(new_config, cluster.talosconfig)
        (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir)).ok()
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        issuers = _talos_issuers(cluster)
        assert len(issuers) == 1 and issuers != {talosctl_ca}
        assert await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)
        assert not await _reaches_every_node(talosctl_path, cluster, new_config)
        await _validate_all(validator, cluster, tmp_path / "after-trustplan")
        again = await trustplan("plan", "--detailed-exitcode", cwd=cluster.dir)
        assert again.code == 0, again.out + again.err

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=2, workers=2, from_dir=GEN_CONFIG / generated_by)

"""Issue 19 item 4 on real Kubernetes: `talosctl rotate-ca` v1.14.1, unmodified, rotates both PKIs
of `trustplan sim --k8s real` (a real etcd and kube-apiserver v1.34.4 on every control plane) to
completion, on both config layouts (legacy fields, Talos 1.14 documents); then trustplan takes the
cluster over (talosctl's talosconfig, the CAs it made and printed) and rotates both PKIs again to
CAs of its own. talosctl still reaches every node with the talosconfig trustplan wrote, the
kubeconfig trustplan wrote lists every node Ready on the real API servers, and a second plan has
nothing to do.

Marked `interop` (run by `make interop`, which CI runs) and `realk8s`. Fails, never skips, under
CI=true when talosctl v1.14.1, kube-apiserver or etcd is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from interop_tools import CACHE, printed_ca, run, talosctl, trustplan
from peers import need_kubernetes
from simharness import run_with_cluster
from trustplan_sim import realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.talos import machineconfig

pytestmark = [pytest.mark.interop, pytest.mark.realk8s]
TALOSCTL = "v1.14.1"


def _binaries() -> Path:
    """talosctl v1.14.1 (scripts/peers/talosctl.sh with TALOSCTL_VERSION), kube-apiserver, etcd."""
    path = CACHE / f"talosctl-{TALOSCTL}"
    need_kubernetes(path)
    return path


def _fields(cluster: SimCluster, pki_name: str) -> set[tuple[bytes | None, tuple[bytes, ...]]]:
    """Every node's (issuing CA, accepted CAs) of one PKI."""
    out = set()
    for n in cluster.nodes:
        f = machineconfig.parse(n.config, n.name).ca_fields(pki_name)  # type: ignore[arg-type]
        out.add((f.issuer, f.accepted))
    return out


async def _reaches_every_node(binary: Path, cluster: SimCluster, talosconfig: Path) -> bool:
    nodes = ",".join(n.address for n in cluster.nodes)
    result = await talosctl(binary, cluster, "-n", nodes, "version", talosconfig=talosconfig, timeout=60)
    return result.code == 0 and result.out.count("NODE:") == len(cluster.nodes)


async def _ready_nodes(kubeconfig: Path) -> set[str]:
    """The nodes the real API server lists Ready, through `kubectl` with `kubeconfig`."""
    result = (await run("kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json", timeout=60)).ok()
    items = json.loads(result.out)["items"]
    return {i["metadata"]["name"] for i in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"])}


@pytest.mark.parametrize("layout", ["legacy", "multidoc"])
def test_rotate_ca_on_real_kubernetes_then_trustplan_takes_over(tmp_path: Path, layout: str) -> None:
    binary = _binaries()

    async def scenario(cluster: SimCluster) -> None:
        names = {n.name for n in cluster.nodes}
        assert await _ready_nodes(cluster.kubeconfig) == names
        cp = cluster.controlplanes[0].address
        old_config = tmp_path / "talosconfig.old"
        shutil.copy(cluster.talosconfig, old_config)
        by_talosctl = tmp_path / "talosconfig.talosctl"

        # talosctl v1.14.1: the Talos API CA, then the Kubernetes CA with the talosconfig it wrote
        result = await talosctl(binary, cluster, "-n", cp, "rotate-ca", "--dry-run=false", "--talos=true",
                                "--kubernetes=false", "-o", str(by_talosctl), timeout=300)
        talos_ca, _ = printed_ca(result.ok().out, "New Talos CA")
        assert _fields(cluster, "talos") == {(talos_ca, ())}
        result = await talosctl(binary, cluster, "-n", cp, "rotate-ca", "--dry-run=false", "--talos=false",
                                "--kubernetes=true", talosconfig=by_talosctl, timeout=900)
        k8s_ca, _ = printed_ca(result.ok().out, "New Kubernetes CA")
        assert _fields(cluster, "kubernetes") == {(k8s_ca, ())}
        apis = [c.apiserver for c in cluster.controlplanes]
        assert all(isinstance(a, realk8s.RealAPIServer) and a.restart_seconds for a in apis)
        assert not await _reaches_every_node(binary, cluster, old_config)
        assert await _reaches_every_node(binary, cluster, by_talosctl)

        # trustplan takes over with talosctl's talosconfig and rotates both PKIs to its own CAs
        shutil.copy(by_talosctl, cluster.talosconfig)
        (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir, timeout=600)).ok()
        (await trustplan("apply", "plan.bin", cwd=cluster.dir, timeout=900)).ok()
        talos_after, k8s_after = _fields(cluster, "talos"), _fields(cluster, "kubernetes")
        assert len(talos_after) == 1 and next(iter(talos_after))[0] not in (talos_ca, None)
        assert len(k8s_after) == 1 and next(iter(k8s_after))[0] not in (k8s_ca, None)
        assert next(iter(k8s_after))[1] == ()  # talosctl's CA no longer accepted
        assert await _reaches_every_node(binary, cluster, cluster.talosconfig)
        assert not await _reaches_every_node(binary, cluster, by_talosctl)
        assert await _ready_nodes(cluster.kubeconfig) == names  # trustplan's kubeconfig, the real API
        again = await trustplan("plan", "--detailed-exitcode", cwd=cluster.dir)
        assert again.code == 0, again.out + again.err

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=1, k8s=True, k8s_mode="real",
                     config_layout=layout, kubelet_rejoin_ms=100)

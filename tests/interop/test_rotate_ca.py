"""`talosctl rotate-ca`, unmodified, on `trustplan sim`; then trustplan managing what it left.

- both PKIs rotated by talosctl to completion; the old talosconfig is refused, the new accepted;
  trustplan `status` and `plan` read the result (a plan naming the live CAs has nothing to do);
- the reverse: after a trustplan rotation, talosctl with the talosconfig trustplan wrote reaches
  every node;
- talosctl rotate-ca (Talos CA, and Kubernetes CA) killed right after its first, middle and last
  ApplyConfiguration: trustplan `plan` + `apply`, given the CA talosctl printed, finish the rotation;
- talosctl killed during its accept step and a control plane then reverted by hand: trustplan
  probes the workers' client trust (their trustd bundles) and finishes (issue 8);
- talosctl v1.12.1 does not know the Talos 1.14 config layout and refuses before changing anything;
  v1.14.1 rotates it.

Every case runs once per talosctl release (tests/conftest.py: talosctl_version).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from interop_tools import applies, printed_ca, run_killed_after_applies, talosctl, trustplan
from simharness import run_with_cluster
from trustplan_sim.cluster import SimCluster

from trustplan.talos import machineconfig, pki

FAST_K8S = {"k8s": True, "apiserver_restart_ms": 300, "kubelet_rejoin_ms": 200}

pytestmark = pytest.mark.interop


def _issuers(cluster: SimCluster, pki_name: str) -> set[bytes | None]:
    return {machineconfig.parse(n.config, n.name).ca_fields(pki_name).issuer for n in cluster.nodes}  # type: ignore[arg-type]


def _accepted(cluster: SimCluster, pki_name: str) -> set[tuple[bytes, ...]]:
    return {machineconfig.parse(n.config, n.name).ca_fields(pki_name).accepted for n in cluster.nodes}  # type: ignore[arg-type]


def _fp(pem: bytes) -> str:
    return pki.fingerprint(pki.load_cert_pem(pem, "ca"))


async def _reaches_every_node(binary: Path, cluster: SimCluster, talosconfig: Path) -> bool:
    nodes = ",".join(n.address for n in cluster.nodes)
    result = await talosctl(binary, cluster, "-n", nodes, "version", talosconfig=talosconfig, timeout=60)
    return result.code == 0 and result.out.count("NODE:") == len(cluster.nodes)


def _desired_from_live(cluster: SimCluster, talos_ca: bytes, k8s_ca: bytes | None) -> None:
    """A trustplan.yaml that names the CAs now live (`sha256:`): managing the cluster as it is."""
    text = (cluster.dir / "trustplan.yaml").read_text()
    head = text.split("authorities:\n", 1)[0]
    trust = f"authorities: {{}}\ntrust:\n  talos: {{issuer: '{_fp(talos_ca)}', accepted: []}}\n"
    if k8s_ca is not None:
        trust += f"  kubernetes: {{issuer: '{_fp(k8s_ca)}', accepted: []}}\n"
    tail = "keystore:" + text.split("keystore:", 1)[1]
    (cluster.dir / "trustplan.yaml").write_text(head + trust + tail)


def test_rotate_ca_both_pkis_then_trustplan_reads_it(tmp_path: Path, talosctl_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp = cluster.controlplanes[0]
        old_config = tmp_path / "talosconfig.old"
        shutil.copy(cluster.talosconfig, old_config)
        new_config = tmp_path / "talosconfig.new"
        result = await talosctl(
            talosctl_path,
            cluster,
            "-n",
            cp.address,
            "rotate-ca",
            "--dry-run=false",
            "--talos=true",
            "--kubernetes=false",
            "-o",
            str(new_config),
            timeout=300,
        )
        result.ok()
        talos_ca, _ = printed_ca(result.out, "New Talos CA")
        assert _issuers(cluster, "talos") == {talos_ca} and _accepted(cluster, "talos") == {()}

        result = await talosctl(
            talosctl_path,
            cluster,
            "-n",
            cp.address,
            "rotate-ca",
            "--dry-run=false",
            "--talos=false",
            "--kubernetes=true",
            talosconfig=new_config,
            timeout=600,
        )
        result.ok()
        k8s_ca, _ = printed_ca(result.out, "New Kubernetes CA")
        assert _issuers(cluster, "kubernetes") == {k8s_ca} and _accepted(cluster, "kubernetes") == {()}

        assert not await _reaches_every_node(talosctl_path, cluster, old_config)
        assert await _reaches_every_node(talosctl_path, cluster, new_config)

        # managed by trustplan from here: the talosconfig talosctl wrote, the CAs it made
        shutil.copy(new_config, cluster.talosconfig)
        _desired_from_live(cluster, talos_ca, k8s_ca)
        status = (await trustplan("status", "--format", "json", cwd=cluster.dir)).ok()
        report = json.loads(status.out)
        assert _fp(talos_ca) in json.dumps(report) and _fp(k8s_ca) in json.dumps(report)
        # no node changes: the live state is the desired one. But the kubeconfig and secrets.yaml the
        # simulator wrote still hold the old Kubernetes CA (talosctl printed the new ones): trustplan
        # rewrites them rather than saying "No changes" while a configured credential is refused
        plan = await trustplan("plan", "-o", "plan.bin", "--detailed-exitcode", cwd=cluster.dir)
        assert plan.code == 2, plan.out + plan.err
        assert "Plan: no node changes; rewrite kubeconfig, secrets" in plan.out, plan.out
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        again = await trustplan("plan", "--detailed-exitcode", cwd=cluster.dir)
        assert again.code == 0, again.out + again.err  # now nothing to do

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2, **FAST_K8S)


def test_talosctl_reaches_every_node_after_a_trustplan_rotation(tmp_path: Path, talosctl_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        old_config = tmp_path / "talosconfig.old"
        shutil.copy(cluster.talosconfig, old_config)
        (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir)).ok()
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        assert await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)
        assert not await _reaches_every_node(talosctl_path, cluster, old_config)
        # talosctl can read what trustplan wrote, and talosctl's kubeconfig uses the new Kubernetes CA
        kube = tmp_path / "kubeconfig"
        cp = cluster.controlplanes[0].address
        (await talosctl(talosctl_path, cluster, "-n", cp, "kubeconfig", "--force", str(kube))).ok()
        assert _issuers(cluster, "kubernetes") != {cluster.secrets.k8s.crt_pem}

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2, **FAST_K8S)


@pytest.mark.parametrize("pki_name", ["talos", "kubernetes"])
@pytest.mark.parametrize("stop_after", ["first", "middle", "last"])
def test_trustplan_finishes_a_killed_rotate_ca(
    tmp_path: Path, stop_after: str, pki_name: str, talosctl_path: Path
) -> None:
    """rotate-ca makes 3 phases x 5 nodes = 15 applies per CA; kill it after apply 1, 8 or 15."""
    talos = pki_name == "talos"

    async def scenario(cluster: SimCluster) -> None:
        total = 3 * len(cluster.nodes)
        n = {"first": 1, "middle": total // 2 + 1, "last": total}[stop_after]
        cp = cluster.controlplanes[0]
        argv: list[str | Path] = [
            talosctl_path, "--talosconfig", cluster.talosconfig, "-n", cp.address, "rotate-ca", "--dry-run=false",
            f"--talos={str(talos).lower()}", f"--kubernetes={str(not talos).lower()}",
            "-o", tmp_path / "talosconfig.talosctl",
        ]  # fmt: skip
        result = await run_killed_after_applies(argv, cluster, n)
        assert applies(cluster) == n
        # the user kept talosctl's output: the new CA (and key), and the talosconfig it printed
        crt, key = printed_ca(result.out, "New Talos CA" if talos else "New Kubernetes CA")
        (cluster.dir / "talosctl-ca.crt").write_bytes(crt)
        (cluster.dir / "talosctl-ca.key").write_bytes(key)
        if talos and stop_after == "last":  # every node dropped the old CA: only the printed talosconfig works
            printed = result.out.split("> Generating new talosconfig:\n", 1)[1].split("\n> ", 1)[0]
            (cluster.dir / "talosconfig").write_text(printed)
        # trustplan.yaml: finish this CA's rotation to talosctl's CA; leave the other PKI alone
        mine, other = ("talos", "kubernetes") if talos else ("kubernetes", "talos")
        generated = {"talos": "talos-new", "kubernetes": "k8s-new"}
        lines = []
        for line in (cluster.dir / "trustplan.yaml").read_text().splitlines(keepends=True):
            if line.startswith(f"  {generated[mine]}: "):
                line = "  talosctl-ca: {certificate: talosctl-ca.crt, key: talosctl-ca.key}\n"
            elif line.startswith(f"  {generated[other]}: ") or line.startswith(f"  {other}: {{issuer"):
                continue
            elif line.startswith(f"  {mine}: {{issuer"):
                line = f"  {mine}: {{issuer: talosctl-ca, accepted: []}}\n"
            lines.append(line)
        (cluster.dir / "trustplan.yaml").write_text("".join(lines))

        (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir)).ok()
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        assert _issuers(cluster, pki_name) == {crt} and _accepted(cluster, pki_name) == {()}
        assert await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)
        again = await trustplan("plan", "--detailed-exitcode", cwd=cluster.dir)
        assert again.code == 0, again.out + again.err

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2, **({} if talos else FAST_K8S))


def test_rotate_ca_on_the_1_14_layout(tmp_path: Path, talosctl_version: str, talosctl_path: Path) -> None:
    """talosctl v1.12.1 cannot read a config with a KubeAPIServerCAConfig document (Talos 1.14): it
    stops before its first ApplyConfiguration and changes nothing (trustplan rotates such clusters).
    talosctl v1.14.1 rotates the Talos CA of the same cluster to completion, and its new talosconfig
    reaches every node."""

    async def scenario(cluster: SimCluster) -> None:
        before = {n.name: n.config for n in cluster.nodes}
        result = await talosctl(
            talosctl_path, cluster, "-n", cluster.controlplanes[0].address, "rotate-ca", "--dry-run=false",
            "--talos=true", "--kubernetes=false", "-o", str(tmp_path / "new"), timeout=120,
        )  # fmt: skip
        if talosctl_version == "v1.12.1":
            assert result.code != 0 and '"KubeAPIServerCAConfig" "v1alpha1": not registered' in result.err
            assert {n.name: n.config for n in cluster.nodes} == before and applies(cluster) == 0
            return
        result.ok()
        crt, _ = printed_ca(result.out, "New Talos CA")
        assert _issuers(cluster, "talos") == {crt} and _accepted(cluster, "talos") == {()}
        assert await _reaches_every_node(talosctl_path, cluster, tmp_path / "new")
        assert not await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1, config_layout="multidoc")


@pytest.mark.parametrize("killed_after", [4, 5])
def test_trustplan_finishes_rotate_ca_killed_in_accept_with_a_control_plane_reverted(
    tmp_path: Path, killed_after: int, talosctl_path: Path
) -> None:
    """Issue 8, item 4. talosctl dies in its accept step (after the 3 control planes and 1 or 2
    workers took its new CA), then the operator restores cp-3's config from before by hand. The
    workers that asked trustd while every control plane trusted the new CA accept it, which their
    configs do not say: trustplan probes them directly, and plan + apply finish the rotation."""

    async def scenario(cluster: SimCluster) -> None:
        cp3 = cluster.node("cp-3")
        before = cp3.config
        argv: list[str | Path] = [
            talosctl_path, "--talosconfig", cluster.talosconfig, "-n", cluster.controlplanes[0].address,
            "rotate-ca", "--dry-run=false", "--talos=true", "--kubernetes=false", "-o", tmp_path / "talosctl.cfg",
        ]  # fmt: skip
        result = await run_killed_after_applies(argv, cluster, killed_after)
        crt, key = printed_ca(result.out, "New Talos CA")
        assert all(crt in machineconfig.parse(n.config, n.name).ca_fields("talos").accepted for n in cluster.nodes
                   if n.version > 1)
        cp3.set_config(before)  # `talosctl apply-config` of a backup
        (cluster.dir / "talosctl-ca.crt").write_bytes(crt)
        (cluster.dir / "talosctl-ca.key").write_bytes(key)
        text = (cluster.dir / "trustplan.yaml").read_text()
        text = text.replace(
            "  talos-new: {generate: {algorithm: ed25519}}\n",
            "  talosctl-ca: {certificate: talosctl-ca.crt, key: talosctl-ca.key}\n",
        ).replace("issuer: talos-new", "issuer: talosctl-ca")
        (cluster.dir / "trustplan.yaml").write_text(text)

        plan = (await trustplan("plan", "-o", "plan.bin", cwd=cluster.dir)).ok()
        assert "(probed directly, its trust comes from trustd)" in plan.err + plan.out
        (await trustplan("apply", "plan.bin", cwd=cluster.dir)).ok()
        assert _issuers(cluster, "talos") == {crt} and _accepted(cluster, "talos") == {()}
        assert await _reaches_every_node(talosctl_path, cluster, cluster.talosconfig)
        again = await trustplan("plan", "--detailed-exitcode", cwd=cluster.dir)
        assert again.code == 0, again.out + again.err

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)

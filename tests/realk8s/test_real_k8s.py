"""`trustplan sim up --k8s real`: a real etcd member and a real kube-apiserver v1.34.4 on each
simulated control plane, configured from its machine config as Talos configures them. A both-PKI
rotation by trustplan completes against them, every Kubernetes gate is answered by the real
kube-apiserver, the kubeconfig trustplan writes works on every control plane (curl and kubectl), the
old one is refused, and the kubernetes state backend keeps its state in the real API server.

Slow (a cluster of real processes per test): `make test-realk8s`. They fail, never skip, under CI=true
when kube-apiserver or etcd is missing."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from simharness import SimProcess, run_with_cluster
from trustplan.providers.kubernetes import KubernetesChecker
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import pki

pytestmark = pytest.mark.realk8s
TRUSTPLAN = [str(Path(os.sys.executable).with_name("trustplan"))]  # type: ignore[attr-defined]
VERSION = "v1.34.4"


@pytest.fixture(autouse=True)
def _binaries() -> None:
    """kube-apiserver v1.34.4 and etcd must exist: skipped on a laptop without them, failed in CI."""
    missing = []
    if realk8s.find_apiserver() is None:
        missing.append(f"kube-apiserver {VERSION} (scripts/peers/kube-apiserver.sh)")
    if etcd.find_etcd() is None:
        missing.append("etcd (apt-get install etcd-server)")
    if missing:
        why = "not built/installed here: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def kubeconfig_files(kubeconfig: Path, out: Path) -> tuple[Path, Path, Path, str]:
    """The kubeconfig's CA, client cert and key as files (for curl); and its server URL."""
    doc = yaml.safe_load(kubeconfig.read_text())
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in (("ca.crt", doc["clusters"][0]["cluster"]["certificate-authority-data"]),
                       ("admin.crt", doc["users"][0]["user"]["client-certificate-data"]),
                       ("admin.key", doc["users"][0]["user"]["client-key-data"])):
        path = out / name
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
        paths.append(path)
    return paths[0], paths[1], paths[2], str(doc["clusters"][0]["cluster"]["server"])


def curl(kubeconfig: Path, server: str, path: str, scratch: Path) -> tuple[int, str]:
    """`curl --cacert --cert --key SERVER/PATH` with the kubeconfig's credential: (HTTP code, body)."""
    ca, crt, key, _ = kubeconfig_files(kubeconfig, scratch)
    proc = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "--cert", str(crt), "--key",
                           str(key), "-w", "\n%{http_code}", f"{server}{path}"],
                          capture_output=True, text=True, check=False)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


def kubectl(kubeconfig: Path, *args: str) -> Any:
    proc = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args, "-o", "json"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ready_nodes(kubeconfig: Path) -> set[str]:
    items = kubectl(kubeconfig, "get", "nodes")["items"]
    return {n["metadata"]["name"] for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}


def trustplan(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=900)


@pytest.fixture
def real_sim(tmp_path: Path) -> Iterator[SimProcess]:
    with SimProcess(tmp_path / "sim", controlplanes=3, workers=1, k8s=True, k8s_mode="real",
                    start_timeout=300, log=tmp_path / "sim.log") as sim:
        yield sim


def test_cli_rotation_on_real_kubernetes(real_sim: SimProcess, tmp_path: Path) -> None:
    d = real_sim.dir
    doc = json.loads((d / "sim.json").read_text())
    assert doc["k8s_mode"] == "real"
    cps = [n for n in doc["nodes"] if n["role"] == "controlplane"]
    servers = [f"https://{n['k8s']['address']}:{n['k8s']['port']}" for n in cps]

    # the real kube-apiserver answers on every control plane, and every kubelet registered Ready
    for server in servers:
        code, body = curl(d / "kubeconfig", server, "/version", tmp_path / "old")
        assert code == 200 and json.loads(body)["gitVersion"] == VERSION
    assert ready_nodes(d / "kubeconfig") == {"cp-1", "cp-2", "cp-3", "worker-1"}

    # the state backend in the real API server: a Secret and a Lease in namespace trustplan
    kubectl(d / "kubeconfig", "create", "namespace", "trustplan")
    desired = d / "trustplan.yaml"
    desired.write_text(desired.read_text().replace(
        "state: trustplan.state.json\n",
        "state: {backend: kubernetes, kubeconfig: kubeconfig, namespace: trustplan, name: sim-state}\n"))
    old = tmp_path / "old-kubeconfig"
    shutil.copy(d / "kubeconfig", old)

    plan = trustplan(d, "plan", "-o", "plan.bin")
    assert plan.returncode == 2 or plan.returncode == 0, plan.stderr
    applied = trustplan(d, "apply", "plan.bin")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    # the API servers restarted with the new CA, as Talos restarts the static pod
    restarts = [line for line in real_sim.lines if "kube-apiserver restarted in" in line]
    assert {line.split(":")[1].strip() for line in restarts} >= {"cp-1", "cp-2", "cp-3"}

    # the kubeconfig trustplan wrote works on every control plane; the old one is refused (401)
    for server in servers:
        code, body = curl(d / "kubeconfig", server, "/version", tmp_path / "new")
        assert code == 200 and json.loads(body)["gitVersion"] == VERSION
        code, _ = curl(old, server, "/api/v1/nodes", tmp_path / "old")
        assert code in (0, 401)  # 0: curl no longer trusts the server's new certificate
    assert ready_nodes(d / "kubeconfig") == {"cp-1", "cp-2", "cp-3", "worker-1"}
    secret = kubectl(d / "kubeconfig", "-n", "trustplan", "get", "secret", "sim-state")
    assert secret["metadata"]["name"] == "sim-state"
    status = trustplan(d, "plan", "-o", "again.bin")
    assert status.returncode == 0, status.stdout + status.stderr  # nothing left to do


async def plan_and_apply(cluster: SimCluster) -> applier.Applied:
    """`trustplan plan` then `apply` in-process on the cluster's trustplan.yaml."""
    desired = desired_mod.load(cluster.dir / "trustplan.yaml")
    planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    return await applier.apply_desired(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())


@pytest.mark.parametrize("layout", ["multidoc"])
def test_every_gate_is_answered_by_the_real_kube_apiserver(tmp_path: Path, layout: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[dict[str, str]] = []
    check = KubernetesChecker.check

    async def spy(self: KubernetesChecker, *args: Any, **kwargs: Any) -> dict[str, str]:
        result = await check(self, *args, **kwargs)
        answers.append(result)
        return result

    monkeypatch.setattr(KubernetesChecker, "check", spy)

    async def scenario(cluster: SimCluster) -> None:
        applied = await plan_and_apply(cluster)
        gates = [s for s in applied.steps if s["kind"] == "gate" and s.get("pki") == "kubernetes"]
        assert gates and all(s["outcome"] == "ok" for s in gates)
        assert len(answers) == len(gates)
        for result in answers:  # each control plane's answer names the real server's version
            assert len(result) == 3 and all(r.endswith(f"({VERSION})") for r in result.values()), result
        answers.clear()
        assert ready_nodes(cluster.kubeconfig) == {"cp-1", "cp-2", "cp-3"}
        apis = [cp.apiserver for cp in cluster.controlplanes]
        assert all(isinstance(a, realk8s.RealAPIServer) and a.restart_seconds for a in apis)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     config_layout=layout, kubelet_rejoin_ms=100)

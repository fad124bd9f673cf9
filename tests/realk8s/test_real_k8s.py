"""`trustplan sim up --k8s real`: a real etcd member and a real kube-apiserver v1.34.4 on each
simulated control plane, configured from its machine config as Talos configures them. A both-PKI
rotation by trustplan completes against them, every Kubernetes gate is answered by the real
kube-apiserver, the kubeconfig trustplan writes works on every control plane (curl and kubectl), the
old one is refused, and the kubernetes state backend keeps its state in the real API server.

Slow (a cluster of real processes per test): `make test-realk8s`. They fail, never skip, under CI=true
when kube-apiserver or etcd is missing."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from peers import need_kubernetes
from simharness import SimProcess, narrow_to, run_with_cluster
from trustplan.providers.kubechecks.nodes import KubernetesChecker
from trustplan_sim import realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import certgen, machineconfig, pki

pytestmark = pytest.mark.realk8s
TRUSTPLAN = [str(Path(os.sys.executable).with_name("trustplan"))]  # type: ignore[attr-defined]
VERSION = "v1.34.4"


@pytest.fixture(autouse=True)
def _binaries() -> None:
    """kube-apiserver v1.34.4 and etcd must exist: skipped on a laptop without them, failed in CI."""
    need_kubernetes()


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


def run_ok(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`trustplan ARGS` in `cwd`; it must exit 0."""
    proc = subprocess.run([*TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, f"trustplan {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc


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

    # a Talos API CA rotation with the kubernetes state backend in the real API server: no
    # kube-apiserver input changes, so none restarts (trustplan refuses to keep the state in a
    # cluster whose Kubernetes CA it rotates)
    kubectl(d / "kubeconfig", "create", "namespace", "trustplan")
    desired = d / "trustplan.yaml"
    both = desired.read_text()
    narrow_to(desired, "talos")
    desired.write_text(desired.read_text().replace(
        "state: trustplan.state.json\n",
        "state: {backend: kubernetes, kubeconfig: kubeconfig, namespace: trustplan, name: sim-state}\n"))
    run_ok(d, "plan", "-o", "talos.bin")
    run_ok(d, "apply", "talos.bin")
    secret = kubectl(d / "kubeconfig", "-n", "trustplan", "get", "secret", "sim-state")
    assert secret["metadata"]["name"] == "sim-state"
    assert not [line for line in real_sim.lines if "kube-apiserver inputs changed" in line]

    # then both PKIs, the state moved back to a file first
    run_ok(d, "state", "migrate", "--to", "trustplan.state.json")
    desired.write_text(both)
    old = tmp_path / "old-kubeconfig"
    shutil.copy(d / "kubeconfig", old)
    run_ok(d, "plan", "-o", "plan.bin")
    run_ok(d, "apply", "plan.bin")

    # the API servers restarted with the new CA, as Talos restarts the static pod
    found = (re.search(r"(cp-\d): kube-apiserver restarted in", line) for line in real_sim.lines)
    restarted = {m.group(1) for m in found if m}
    assert restarted == {"cp-1", "cp-2", "cp-3"}

    # the kubeconfig trustplan wrote works on every control plane; the old one is refused (401)
    for server in servers:
        code, body = curl(d / "kubeconfig", server, "/version", tmp_path / "new")
        assert code == 200 and json.loads(body)["gitVersion"] == VERSION
        code, _ = curl(old, server, "/api/v1/nodes", tmp_path / "old")
        assert code in (0, 401)  # 0: curl no longer trusts the server's new certificate
    assert ready_nodes(d / "kubeconfig") == {"cp-1", "cp-2", "cp-3", "worker-1"}
    # every kubelet re-joined with a client cert of its own from the new CA
    new_ca = x509.load_pem_x509_certificate((tmp_path / "new" / "ca.crt").read_bytes())
    for name in ("cp-1", "worker-1"):
        kubelet = x509.load_pem_x509_certificate((d / "k8s-real" / name / "kubelet" / "kubelet.crt").read_bytes())
        assert pki.verify_issued_by(kubelet, new_ca)
        assert kubelet.subject.rfc4514_string() == f"CN=system:node:{name},O=system:nodes"
    again = run_ok(d, "plan", "-o", "again.bin")
    assert "No changes" in again.stdout + again.stderr, again.stdout + again.stderr


async def plan_and_apply(cluster: SimCluster) -> applier.Applied:
    """`trustplan plan` then `apply` in-process on the cluster's trustplan.yaml."""
    desired = desired_mod.load(cluster.dir / "trustplan.yaml")
    planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    request = applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())
    return await applier.apply_desired(request)


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
        gates = [s for s in applied.steps if s.kind == "gate" and s.pki == "kubernetes"]
        assert gates and all(s.outcome == "ok" for s in gates)
        assert len(answers) == len(gates)
        for result in answers:  # each control plane's answer names the real server's version
            assert len(result) == 3 and all(r.endswith(f"({VERSION})") for r in result.values()), result
        answers.clear()
        assert ready_nodes(cluster.kubeconfig) == {"cp-1", "cp-2", "cp-3"}
        apis = [cp.apiserver for cp in cluster.controlplanes]
        assert all(isinstance(a, realk8s.RealAPIServer) and a.restart_seconds for a in apis)

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=0, k8s=True, k8s_mode="real",
                     config_layout=layout, kubelet_rejoin_ms=100)


def edited(data: bytes, edit: Any) -> bytes:
    """The config with `edit(documents)` applied (documents as loaded YAML)."""
    docs = list(yaml.safe_load_all(data))
    edit(docs)
    return yaml.safe_dump_all(docs, sort_keys=False).encode()


def test_each_input_change_restarts_what_talos_restarts(tmp_path: Path) -> None:
    """A Talos API CA change restarts nothing; an aggregator CA change restarts kube-apiserver on the
    new bundle; an etcd CA change rewrites etcd's files and restarts kube-apiserver, not etcd (as Talos:
    a reboot restarts etcd, tests/realk8s/test_etcd_api.py). Each restart comes back ready (timed). A
    stopped node's Node goes NotReady."""

    async def scenario(cluster: SimCluster) -> None:
        node = cluster.controlplanes[0]
        api = node.apiserver
        assert isinstance(api, realk8s.RealAPIServer) and node.etcd is not None

        async def apply(data: bytes) -> None:
            node.set_config(data, machineconfig.parse(data, "test"))
            for _ in range(600):
                await asyncio.sleep(0.1)
                if api.serving and api._task is None and not realk8s_tasks(cluster):  # noqa: SLF001
                    return
            raise AssertionError(f"kube-apiserver did not come back: {api.error}")

        talos_ca, _ = certgen.generate_ca("talos", pki.utcnow())

        def accept_talos(docs: list[Any]) -> None:
            docs[0]["machine"]["acceptedCAs"] = [{"crt": pki.b64encode_pem(pki.cert_to_pem(talos_ca))}]

        await apply(edited(node.config, accept_talos))
        assert api.restarts == 0 and api.restart_seconds == []

        agg_ca, _ = certgen.generate_ca("kubernetes", pki.utcnow())

        def accept_aggregator(docs: list[Any]) -> None:
            doc = next(d for d in docs if d.get("kind") == "KubeAggregatorCAConfig")
            doc["acceptedCAs"] = [pki.cert_to_pem(agg_ca).decode()]

        await apply(edited(node.config, accept_aggregator))
        assert api.restarts == 1 and len(api.restart_seconds) == 1
        assert pki.cert_to_pem(agg_ca) in api.path("aggregator-ca.crt").read_bytes()

        # the etcd CA's accept value (old + new, old key): Talos rewrites etcd's files and restarts
        # kube-apiserver, not etcd (it reads its CA file only at start; a reboot restarts it)
        etcd_ca, _ = certgen.generate_ca("kubernetes", pki.utcnow())
        old_etcd = node.etcd.pki_path("ca.crt").read_bytes()
        assert node.etcd.proc is not None
        etcd_pid = node.etcd.proc.pid

        def accept_etcd_ca(docs: list[Any]) -> None:
            ca = docs[0]["cluster"]["etcd"]["ca"]
            ca["crt"] = pki.b64encode_pem(old_etcd + pki.cert_to_pem(etcd_ca))

        await apply(edited(node.config, accept_etcd_ca))
        assert api.path("etcd-client-ca.crt").read_bytes() == old_etcd + pki.cert_to_pem(etcd_ca)
        client = x509.load_pem_x509_certificate(api.path("etcd-client.crt").read_bytes())
        assert pki.verify_issued_by(client, pki.load_cert_pem(old_etcd, "old etcd CA"))  # the first block issues
        assert len(api.restart_seconds) == 2 and api.serving
        assert node.etcd.proc is not None and node.etcd.proc.pid == etcd_pid
        assert await asyncio.to_thread(node.etcd.healthy)

        # a stopped worker is NotReady in the real API, and Ready again once it is back
        await cluster.stop_node("worker-1")
        for _ in range(100):
            if await asyncio.to_thread(ready_nodes, cluster.kubeconfig) == {"cp-1"}:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(ready_nodes, cluster.kubeconfig) == {"cp-1"}
        await cluster.start_node("worker-1")
        for _ in range(100):
            if await asyncio.to_thread(ready_nodes, cluster.kubeconfig) == {"cp-1", "worker-1"}:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("worker-1 did not re-join")

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1, k8s=True, k8s_mode="real",
                     config_layout="multidoc", kubelet_rejoin_ms=100)


def realk8s_tasks(cluster: SimCluster) -> set[Any]:
    assert cluster.real is not None
    return {t for t in cluster.real._tasks if not t.done()}  # noqa: SLF001

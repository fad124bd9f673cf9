"""`trustplan` as a team runs it: the state in a real kube-apiserver, applies from separate processes
against the simulator. Two applies never both run; a killed apply's lock is taken over after it
expires; an API server restart mid-apply does not lose the state; migrate moves state both ways;
and a plan that would rotate the Kubernetes CA of the cluster holding the state is refused."""

from __future__ import annotations

import base64
import gzip
import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubeapi import TRUSTPLAN, KubeAPIServer, free_port, run, use_kubernetes_state
from simharness import SimProcess
from waiting import wait_until


def stored(api: KubeAPIServer, name: str) -> dict[str, Any]:
    secret = api.core().read_namespaced_secret(name, "trustplan")
    result: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(secret.data["state.json.gz"])))
    return result


def wait_for_lease(api: KubeAPIServer, name: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Return once the apply `proc` holds the Lease `name` (it must not end before it does)."""

    def held() -> bool:
        assert proc.poll() is None, "the apply ended before it took the lock"
        try:
            api.coordination().read_namespaced_lease(name, "trustplan")
        except Exception:  # noqa: BLE001 - 404 until the apply takes the lock
            return False
        return True

    wait_until(held, "the apply took the lock", timeout=timeout)


def apply_proc(cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(TRUSTPLAN), "apply", "plan.bin", *extra], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def planned_sim(tmp_path: Path, api: KubeAPIServer, name: str, latency_ms: float, extra: str = "") -> SimProcess:
    """A started simulator whose state lives in `api` as `name`, with a plan.bin made for it."""
    sim = SimProcess(tmp_path / "sim", controlplanes=1, workers=1, latency_ms=latency_ms).start()
    try:
        use_kubernetes_state(sim.dir / "trustplan.yaml", api, name, extra)
        planned = run(["plan", "-o", "plan.bin"], sim.dir)
        assert planned.returncode == 0, planned.stderr
    except BaseException:
        sim.stop()
        raise
    return sim


def test_two_applies_at_once_one_runs_and_the_other_names_it(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    name = f"team-{uuid.uuid4().hex[:6]}"
    with planned_sim(tmp_path, kube_api, name, latency_ms=400) as sim:
        first, second = apply_proc(sim.dir, "--lock-timeout", "1s"), apply_proc(sim.dir, "--lock-timeout", "1s")
        results = {p.pid: (p.wait(timeout=240), *p.communicate()) for p in (first, second)}
    winners = [pid for pid, (code, out, _) in results.items() if code == 0 and "Apply complete" in out]
    assert len(winners) == 1, results
    loser_code, _, loser_err = next(v for pid, v in results.items() if pid != winners[0])
    assert loser_code == 1
    assert "state is locked by" in loser_err and f"(pid {winners[0]}, apply of plan sha256:" in loser_err
    assert "Traceback" not in loser_err
    state = stored(kube_api, name)
    assert state["serial"] == 1 and [h["status"] for h in state["history"]] == ["applied"]


def test_a_killed_apply_is_taken_over_after_its_lease_expires(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    name = f"killed-{uuid.uuid4().hex[:6]}"
    with planned_sim(tmp_path, kube_api, name, latency_ms=400, extra=", leaseSeconds: 10") as sim:
        victim = apply_proc(sim.dir)
        wait_for_lease(kube_api, name, victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        held = run(["plan"], sim.dir)
        assert held.returncode == 1 and f"(pid {victim.pid}, apply of plan" in held.stderr
        after = run(["plan", "--lock-timeout", "30s", "-o", "plan.bin"], sim.dir)  # waits out the lease
        assert after.returncode == 0, after.stderr
        finished = run(["apply", "plan.bin"], sim.dir)  # the new plan finishes what the killed one began
        assert finished.returncode == 0, finished.stderr
    assert stored(kube_api, name)["serial"] == 1


def test_api_server_restarted_mid_apply(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    name = f"restart-{uuid.uuid4().hex[:6]}"
    with planned_sim(tmp_path, kube_api, name, latency_ms=400) as sim:
        proc = apply_proc(sim.dir)
        wait_for_lease(kube_api, name, proc)
        kube_api.restart(wait=False)  # refused until the fresh server is ready (seconds)
        out, err = proc.communicate(timeout=240)
        kube_api.wait_ready()
    assert proc.returncode == 0, err
    assert "Apply complete" in out and f"kubernetes secret trustplan/{name}" in out
    state = stored(kube_api, name)
    assert state["serial"] == 1 and state["history"][0]["status"] == "applied"


def test_state_migrate_moves_a_local_state_in_and_back(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    name = f"migrate-{uuid.uuid4().hex[:6]}"
    with SimProcess(tmp_path / "sim") as sim:
        assert run(["apply", "--auto-approve"], sim.dir).returncode == 0  # a local state, serial 1
        local = json.loads((sim.dir / "trustplan.state.json").read_text())
        use_kubernetes_state(sim.dir / "trustplan.yaml", kube_api, name)
        pushed = run(["state", "migrate", "--from", "trustplan.state.json"], sim.dir)
        assert pushed.returncode == 0, pushed.stderr
        assert stored(kube_api, name) == local
        again = run(["state", "migrate", "--from", "trustplan.state.json"], sim.dir)
        assert again.returncode == 1 and "already holds serial 1, not older than serial 1" in again.stderr
        nothing = run(["plan", "--detailed-exitcode"], sim.dir)  # the backend's state is the one in use
        assert nothing.returncode == 0, nothing.stdout + nothing.stderr
        pulled = run(["state", "migrate", "--to", "back.json"], sim.dir)
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads((sim.dir / "back.json").read_text()) == local


def test_rotating_the_kubernetes_ca_of_the_backends_cluster_is_refused(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    with SimProcess(tmp_path / "sim", k8s=True, k8s_port=free_port()) as sim:
        sim_kubeconfig = yaml.safe_load((sim.dir / "kubeconfig").read_text())
        sim_ca = base64.b64decode(sim_kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
        # The backend's kubeconfig trusts the simulated cluster's Kubernetes CA: it lives in that cluster.
        backend = tmp_path / "backend.kubeconfig"
        backend.write_text(yaml.safe_dump(kube_api.kubeconfig_dict(ca_bundle=kube_api.ca_pem + sim_ca)))
        desired = sim.dir / "trustplan.yaml"
        desired.write_text(desired.read_text().replace(
            "state: trustplan.state.json\n",
            f"state: {{backend: kubernetes, kubeconfig: {backend}, namespace: trustplan, name: in-cluster}}\n"))
        result = run(["plan", "-o", "plan.bin"], sim.dir)
        assert result.returncode == 1
        assert "refusing: this plan rotates the Kubernetes CA" in result.stderr
        assert "of the cluster that holds the state backend (trustplan/in-cluster)" in result.stderr
        assert not (sim.dir / "plan.bin").exists()
        # The same backend is fine for a plan that leaves the Kubernetes CA alone.
        text = desired.read_text()
        for kube_part, rest in [("  kubernetes: {issuer: k8s-new, accepted: []}\n", ""),
                                ("  k8s-new: {generate: {algorithm: ecdsa-p256}}\n", ""),
                                ("{talosconfig: talosconfig, kubeconfig: kubeconfig}", "{talosconfig: talosconfig}")]:
            assert kube_part in text
            text = text.replace(kube_part, rest)
        desired.write_text(text)
        talos_only = run(["plan", "-o", "plan.bin"], sim.dir)
        assert talos_only.returncode == 0, talos_only.stderr

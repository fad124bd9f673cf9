"""A rotation of the encryption key killed after its swap, before the Secret rewrite (`--k8s real`,
Talos 1.14 layout, the apply a separate process killed with SIGKILL): the next `trustplan apply`
plans only the remove of the old key, and rewrites every Secret before it, so a Secret written before
the rotation is still readable through the real kube-apiserver once the old key is gone."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from faults.simproc import kill_during, run_cli
from realk8s.credstory import need_binaries
from simharness import SimProcess

pytestmark = pytest.mark.realk8s


@pytest.fixture
def _binaries() -> None:
    """Fails in CI (skips elsewhere) when kube-apiserver or etcd is missing."""
    need_binaries()


def kubectl(sim: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={sim / 'kubeconfig'}", *args], capture_output=True,
                          text=True, check=False, timeout=60)


def test_a_kill_before_the_secret_rewrite_is_finished_by_rewriting_before_the_remove(tmp_path: Path) -> None:
    with SimProcess(tmp_path / "sim", 1, 0, k8s=True, k8s_mode="real", config_layout="multidoc",
                    kubelet_rejoin_ms=100) as sim:
        made = kubectl(sim.dir, "create", "secret", "generic", "before", "--from-literal=word=kept")
        assert made.returncode == 0, made.stderr
        desired = sim.dir / "trustplan.yaml"
        head, rest = desired.read_text().split("authorities:\n", 1)
        _, tail = rest.split("keystore:", 1)
        # The kill must land between the swap's write and its rewrite: a window of milliseconds, which a
        # loaded machine can miss. Then that rotation is finished and the next key tried (3 at most).
        for generation in (2027, 2028, 2029):
            desired.write_text(f"{head}authorities:\n  etcd-key-{generation}: {{generate: {{}}}}\n"
                               f"trust:\n  encryption: {{issuer: etcd-key-{generation}}}\nkeystore:{tail}")
            proc, killed = kill_during(sim.dir, "apply", "--auto-approve", line="swap: patching 1 nodes: finished",
                                       timeout=240)
            assert killed, proc.stderr[-3000:]
            if not any("rewriting every Secret" in x for x in proc.lines):
                break
            finished = run_cli(sim.dir, "apply", "--auto-approve")
            assert finished.returncode == 0, finished.stderr[-4000:]
        else:
            pytest.fail("three kills in a row landed after the rewrite had started: nothing proven")
        again = run_cli(sim.dir, "apply", "--auto-approve")
        assert again.returncode == 0, again.stderr[-4000:]
        assert "remove: rewriting every Secret" in again.stderr, again.stderr[-3000:]
        got = kubectl(sim.dir, "get", "secret", "before", "-o", "json")
        assert got.returncode == 0, got.stderr  # still decrypts: it was stored under the new key first
        assert base64.b64decode(json.loads(got.stdout)["data"]["word"]) == b"kept"
        plan = run_cli(sim.dir, "plan", "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout[-3000:]

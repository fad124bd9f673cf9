"""Issue 22: SIGKILL inside each phase of a rotation of the aggregator CA, the service-account key
and the encryption key (with the Talos API and Kubernetes API CAs, one plan), through the CLI on
machine configs talosctl v1.12.1 wrote (legacy single values) for a Talos v1.14.1 install: the move
into the 1.14 documents, accept, swap, the token drain's stop and the remove of the old key. Each
kill lands after the first control plane of the phase was written and before the second, so the
rotation is half done on the nodes; the next `trustplan apply` (plan + apply) must finish it, and
the state, the live configs and the desired state must agree.

The Kubernetes API gates and the Secret rewrite are not exercised here (machine-config files have no
API server: `tests/realk8s/test_real_credentials.py` runs them on real ones).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from faults.simproc import kill_during, run_cli
from waiting import wait_until

from trustplan.talos import machineconfig
from trustplan.talos.rewrite import kind_trust

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubecreds"
CPS = ("10.5.0.2", "10.5.0.3")
KINDS = ("aggregator", "serviceaccount", "encryption")
DRAIN = 1.0  # seconds: the apply stops after the outputs, the next one removes the old key

#: where each round's apply is killed: the stderr line after which the first control plane of that
#: phase holds the change and the second does not yet (in the apply that runs it)
KILLS = (
    ("move", f"move: patching 2 nodes: {CPS[0]} ok"),
    ("accept", f"accept: patching 3 nodes: {CPS[0]} ok"),
    ("swap", f"swap: patching 3 nodes: {CPS[0]} ok"),
    ("after the swap's gates", "gate after swap: kubernetes API"),
    ("remove of the old key, after the drain stop", f"remove: patching 2 nodes: {CPS[0]} ok"),
)


def desired(generation: int) -> str:
    return f"""version: v1alpha1
cluster:
  name: demo
  machineConfigs:
    10.5.0.2: nodes/cp-1.yaml
    10.5.0.3: nodes/cp-2.yaml
    10.5.0.5: nodes/worker-1.yaml
  nodes:
    controlplane: [10.5.0.2, 10.5.0.3]
    worker: [10.5.0.5]
authorities:
  talos-{generation}: {{generate: {{}}}}
  k8s-{generation}: {{generate: {{}}}}
  aggregator-{generation}: {{generate: {{}}}}
  sa-{generation}: {{generate: {{algorithm: ecdsa-p256}}}}
  etcd-key-{generation}: {{generate: {{}}}}
trust:
  talos: {{issuer: talos-{generation}}}
  kubernetes: {{issuer: k8s-{generation}}}
  aggregator: {{issuer: aggregator-{generation}}}
  serviceaccount: {{issuer: sa-{generation}, drain: {DRAIN:g}s}}
  encryption: {{issuer: etcd-key-{generation}}}
keystore: .trustplan/keys
state: trustplan.state.json
"""


def cluster(root: Path) -> Path:
    (root / "nodes").mkdir(parents=True)
    for name, fixture in (("cp-1", "controlplane"), ("cp-2", "controlplane"), ("worker-1", "worker")):
        text = (FIXTURES / f"{fixture}-1.12.yaml").read_text().replace("installer:v1.12.1", "installer:v1.14.1")
        (root / "nodes" / f"{name}.yaml").write_text(text)
        (root / "nodes" / f"{name}.yaml").chmod(0o600)
    return root


def after_the_drain() -> None:
    """Return once the drain has passed since now (the swap was recorded before this call)."""
    passed = time.monotonic() + DRAIN + 0.2
    wait_until(lambda: time.monotonic() > passed, "the token drain passed", timeout=DRAIN + 10)


def finish(root: Path, context: str) -> None:
    """Apply until nothing is held back: the first apply may stop for the token drain."""
    for _ in range(4):
        again = run_cli(root, "apply", "--auto-approve")
        assert again.returncode == 0, f"{context}: the next apply failed:\n{again.stderr[-4000:]}"
        if "waits for the token drain" not in again.stderr:
            return
        after_the_drain()
    raise AssertionError(f"{context}: still held back by the drain after 4 applies")


def agree(root: Path, generation: int, context: str) -> None:
    """The state, the live configs and the desired state agree, and a new plan has no changes."""
    index = json.loads((root / ".trustplan" / "keys" / "index.json").read_text())
    state = json.loads((root / "trustplan.state.json").read_text())
    for address, name in zip(CPS, ("cp-1", "cp-2"), strict=True):
        data = (root / "nodes" / f"{name}.yaml").read_bytes()
        assert state["nodes"][address]["config_digest"] == machineconfig.digest(data), context
        cfg = machineconfig.parse(data, name)
        for kind, prefix in zip(KINDS, ("aggregator", "sa", "etcd-key"), strict=True):
            fields = machineconfig.kind_fields(cfg, kind)  # type: ignore[arg-type]
            trust, _ = kind_trust(kind, fields)  # type: ignore[arg-type]
            assert fields.layout == "document", (context, name, kind)
            assert (trust.issuer, trust.accepted) == (index[f"{prefix}-{generation}"], ()), (context, name, kind)
    plan = run_cli(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, f"{context}: a plan after the finish still has changes:\n{plan.stdout[-3000:]}"


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_a_kill_inside_each_phase_of_the_kubernetes_credentials_is_finished_by_the_next_apply(tmp_path: Path) -> None:
    root = cluster(tmp_path)
    started = time.monotonic()
    for generation, (phase, line) in enumerate(KILLS, start=1):
        (root / "trustplan.yaml").write_text(desired(generation))
        context = f"round {generation}: killed in the {phase}"
        if phase.startswith("remove"):  # the old key's remove runs in the apply after the drain stop
            first = run_cli(root, "apply", "--auto-approve")
            assert first.returncode == 0 and "waits for the token drain" in first.stderr, first.stderr[-3000:]
            after_the_drain()
        proc, killed = kill_during(root, "apply", "--auto-approve", line=line, timeout=120)
        assert killed, f"{context}: the apply ended before the kill:\n{proc.stderr[-3000:]}"
        assert any(line in x for x in proc.lines), f"{context}: never reached {line!r}:\n{proc.stderr[-3000:]}"
        finish(root, context)
        agree(root, generation, context)
    print(f"\nkill test of the Kubernetes credentials: {len(KILLS)} kills, {time.monotonic() - started:.1f}s")

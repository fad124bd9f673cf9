"""The aggregator CA, the service-account key and the encryption key in one plan with the Talos API and
Kubernetes API CAs, end to end through the CLI on machine configs written by talosctl gen config
(v1.14.1: the documents; v1.12.1: the legacy single values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from trustplan.talos import machineconfig
from trustplan.talos.rewrite import kind_trust

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubecreds"
CPS = ("10.5.0.2", "10.5.0.3")
KINDS = ("aggregator", "serviceaccount", "encryption")

DOC = Path(__file__).parent.parent.parent / "docs" / "credentials.md"
#: the walkthrough's desired state, as docs/credentials.md shows it (its first yaml block)
DESIRED = DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0].replace("drain: 90m", "drain: DRAIN")


def cluster(root: Path, cp: str = "controlplane-1.14.yaml", drain: str = "0s", image: str | None = None) -> Path:
    (root / "nodes").mkdir(parents=True)
    for name in ("cp-1.yaml", "cp-2.yaml"):
        text = (FIXTURES / cp).read_text()
        if image is not None:
            text = text.replace("installer:v1.12.1", f"installer:{image}")
        (root / "nodes" / name).write_text(text)
    worker = (FIXTURES / cp.replace("controlplane", "worker")).read_text()
    (root / "nodes" / "worker-1.yaml").write_text(
        worker.replace("installer:v1.12.1", f"installer:{image}") if image else worker
    )
    for p in (root / "nodes").iterdir():
        p.chmod(0o600)
    (root / "trustplan.yaml").write_text(DESIRED.replace("DRAIN", drain))
    return root


def issuers(root: Path, name: str) -> dict[str, str | None]:
    cfg = machineconfig.parse((root / "nodes" / name).read_bytes(), name)
    out = {}
    for kind in KINDS:
        trust, _ = kind_trust(kind, machineconfig.kind_fields(cfg, kind))  # type: ignore[arg-type]
        out[kind] = trust.issuer
        assert trust.accepted == (), (kind, trust)
    return out


def test_one_plan_rotates_all_five_with_one_write_per_node_per_phase(tmp_path: Path) -> None:
    root = cluster(tmp_path)
    before = issuers(root, "cp-1.yaml")
    planned = run_cli(root, "plan", "-o", "plan.bin")
    assert planned.code == 0, planned.err
    assert (
        "managing the Talos API and Kubernetes API CA, the aggregator CA, the service-account signing key, "
        "the encryption-at-rest key" in planned.out
    )
    assert "sa-2027  service-account signing key, rsa-4096, (signing key), no expiry (generate)" in planned.out
    gate = "? model check: encryption-at-rest key: all 2 API servers accept etcd-key-2027 and encrypt only with"
    assert gate in planned.out
    doc = json.loads(run_cli(root, "show", "-f", "json", "plan.bin").out)
    for phase in doc["phases"]:
        cp_kinds = [e["pki"] for e in phase["edits"] if e["node"] == CPS[0]]
        assert cp_kinds == ["talos", "kubernetes", *KINDS]  # one write carries them all
    applied = run_cli(root, "apply", "plan.bin")
    assert applied.code == 0, applied.err
    assert "in 9 config writes" in applied.out  # 3 nodes x 3 phases
    after = issuers(root, "cp-1.yaml")
    assert after == issuers(root, "cp-2.yaml")
    assert all(after[k] != before[k] for k in KINDS)
    keys = json.loads((root / ".trustplan" / "keys" / "index.json").read_text())
    assert after["serviceaccount"] == keys["sa-2027"] and after["encryption"] == keys["etcd-key-2027"]
    worker = yaml.safe_load_all((root / "nodes" / "worker-1.yaml").read_text())
    assert not any(isinstance(d, dict) and d.get("kind") == "KubeServiceAccountConfig" for d in worker)
    again = run_cli(root, "plan")
    assert again.code == 0 and "no changes" in (again.out + again.err).lower()


def test_the_drain_stops_apply_before_the_remove_of_the_old_key(tmp_path: Path) -> None:
    root = cluster(tmp_path, drain="90m")
    old = issuers(root, "cp-1.yaml")["serviceaccount"]
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    applied = run_cli(root, "apply", "plan.bin")
    assert applied.code == 0, applied.err
    assert "waits for the token drain of 90m; `trustplan plan` offers it from" in applied.err
    cfg = machineconfig.parse((root / "nodes" / "cp-1.yaml").read_bytes(), "cp-1")
    trust, _ = kind_trust("serviceaccount", machineconfig.kind_fields(cfg, "serviceaccount"))
    assert trust.accepted == (old,)  # still accepted: tokens signed with it keep working
    state = json.loads((root / "trustplan.state.json").read_text())
    assert set(state["swaps"]) >= {"serviceaccount", "encryption", "aggregator"}
    replan = run_cli(root, "plan")
    assert replan.code == 0
    assert "waits for the token drain of 90m" in replan.out and "remove" not in replan.out.split("Warnings")[0]


def test_a_legacy_layout_on_talos_1_12_is_refused_naming_the_version(tmp_path: Path) -> None:
    root = cluster(tmp_path, cp="controlplane-1.12.yaml")
    planned = run_cli(root, "plan")
    assert planned.code != 0
    assert "runs Talos v1.12.1: a graceful rotation needs Talos v1.14.0 or later" in planned.err


@pytest.mark.parametrize("kinds", [KINDS])
def test_a_legacy_layout_on_talos_1_14_is_moved_then_rotated(tmp_path: Path, kinds: tuple[str, ...]) -> None:
    root = cluster(tmp_path, cp="controlplane-1.12.yaml", image="v1.14.1")
    planned = run_cli(root, "plan", "-o", "plan.bin")
    assert planned.code == 0, planned.err
    assert "Phase 1: move" in planned.out
    assert run_cli(root, "apply", "plan.bin").code == 0
    cfg = machineconfig.parse((root / "nodes" / "cp-1.yaml").read_bytes(), "cp-1")
    assert all(machineconfig.kind_fields(cfg, k).layout == "document" for k in kinds)  # type: ignore[arg-type]
    assert "aggregatorCA" not in cfg.v1alpha1["cluster"] and "serviceAccount" not in cfg.v1alpha1["cluster"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            ("sa-2027: {generate: {}}", "sa-2027: {generate: {algorithm: secretbox}}"),
            "authorities.sa-2027: authority 'sa-2027' asks for algorithm secretbox, which only the encryption key uses",
        ),
        (
            ("etcd-key-2027: {generate: {}}", "etcd-key-2027: {generate: {algorithm: rsa}}"),
            "authority 'etcd-key-2027' asks for algorithm rsa; the encryption key is a secretbox key",
        ),
        (("drain: DRAIN", "drain: soon"), "trust.serviceaccount.drain"),
    ],
)
def test_bad_credentials_in_the_desired_state_are_one_clear_error(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    root = cluster(tmp_path)
    (root / "trustplan.yaml").write_text(DESIRED.replace(*edit).replace("DRAIN", "0s"))
    checked = run_cli(root, "validate")
    assert checked.code == 1 and message in checked.err and "Traceback" not in checked.err, checked.err

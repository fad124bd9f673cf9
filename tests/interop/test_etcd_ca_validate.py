"""`talosctl validate --mode metal --strict` (v1.12.1 and v1.14.1) on the etcd CA field trustplan writes in
each phase of the graceful rotation, on the control-plane config each release's `talosctl gen config`
made itself. A missing talosctl fails the test (`make interop` builds both releases)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from interop_tools import run
from trustplan_sim.etcd import generate_etcd_ca

from trustplan.talos import etcdca, pki

REPO = Path(__file__).resolve().parents[2]
GEN_CONFIG = REPO / "tests" / "fixtures" / "talosctl-gen-config"

pytestmark = pytest.mark.interop


def _v1alpha1(docs: list[dict]) -> dict:  # type: ignore[type-arg]
    return next(d for d in docs if isinstance(d, dict) and d.get("version") == "v1alpha1")


def test_every_phase_of_the_etcd_ca_field_validates(tmp_path: Path, talosctl_version: str, talosctl_path: Path) -> None:
    text = (GEN_CONFIG / talosctl_version / "controlplane.yaml").read_text()
    old_field = _v1alpha1(list(yaml.safe_load_all(text)))["cluster"]["etcd"]["ca"]
    old = (pki.b64decode_pem(old_field["crt"], "cp-1", "crt"), pki.b64decode_pem(old_field["key"], "cp-1", "key"))
    new = generate_etcd_ca(pki.utcnow())

    async def scenario() -> None:
        for phase, (crt, key) in etcdca.rotation_values(old, new).items():
            docs = list(yaml.safe_load_all(text))
            doc = _v1alpha1(docs)
            blocks = pki.split_pem_bundle(crt)
            etcdca.write(doc, blocks[0], key, blocks[1:])
            assert etcdca.read(doc, phase) is not None
            config = tmp_path / f"{phase}.yaml"
            config.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            result = await run(talosctl_path, "validate", "--config", config, "--mode", "metal", "--strict")
            assert result.code == 0, f"{talosctl_path.name} {phase}: {result.out}{result.err}"

    asyncio.run(scenario())


def test_every_config_a_trustplan_apply_writes_validates(
    tmp_path: Path, talosctl_version: str, talosctl_path: Path
) -> None:
    """`trustplan apply` of `trust.etcd` on three control planes of each release's gen config output (machine
    config files), one phase per plan (accept, then swap, then remove: the desired state pre-stages the new
    CA, then switches, then drops the old), and every config it wrote judged by that release's talosctl."""
    from conftest import run_cli

    text = (GEN_CONFIG / talosctl_version / "controlplane.yaml").read_text()
    old_field = _v1alpha1(list(yaml.safe_load_all(text)))["cluster"]["etcd"]["ca"]
    old_fp = pki.fingerprint(pki.load_cert_pem(pki.b64decode_pem(old_field["crt"], "cp", "crt"), "cp"))
    (tmp_path / "nodes").mkdir()
    for k in (1, 2, 3):
        (tmp_path / "nodes" / f"cp-{k}.yaml").write_text(text)
        (tmp_path / "nodes" / f"cp-{k}.yaml").chmod(0o600)
    steps = {
        "accept": f"{{issuer: {old_fp}, accepted: [etcd-2027]}}",
        "swap": f"{{issuer: etcd-2027, accepted: [{old_fp}]}}",
        "remove": "{issuer: etcd-2027}",
    }

    async def validate(phase: str) -> None:
        for k in (1, 2, 3):
            config = tmp_path / "nodes" / f"cp-{k}.yaml"
            result = await run(talosctl_path, "validate", "--config", config, "--mode", "metal", "--strict")
            assert result.code == 0, f"{talosctl_path.name} {phase} cp-{k}: {result.out}{result.err}"

    for phase, trust in steps.items():
        (tmp_path / "trustplan.yaml").write_text(f"""\
version: v1alpha1
cluster:
  name: demo
  machineConfigs: {{10.5.0.2: nodes/cp-1.yaml, 10.5.0.3: nodes/cp-2.yaml, 10.5.0.4: nodes/cp-3.yaml}}
  nodes: {{controlplane: [10.5.0.2, 10.5.0.3, 10.5.0.4]}}
authorities:
  etcd-2027: {{generate: {{}}}}
trust:
  etcd: {trust}
""")
        planned = run_cli(tmp_path, "plan", "-o", "plan.bin")
        assert planned.code == 0, planned.err
        assert f"Phase 1: {phase}" in planned.out and "Phase 2" not in planned.out
        applied = run_cli(tmp_path, "apply", "plan.bin")
        assert applied.code == 0, applied.err
        asyncio.run(validate(phase))
    fields = etcdca.read(_v1alpha1(list(yaml.safe_load_all((tmp_path / "nodes" / "cp-1.yaml").read_text()))), "cp")
    assert fields is not None and fields.accepted == () and fields.issuer != old_fp

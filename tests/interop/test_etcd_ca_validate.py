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

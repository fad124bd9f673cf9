"""`talosctl validate --mode metal --strict` (v1.12.1 and v1.14.1) on the etcd CA field trustplan writes in
each phase of the graceful rotation, on a control-plane config talosctl made itself. A missing talosctl
fails the test (`make interop` builds v1.12.1; `TALOSCTL_VERSION=v1.14.1 scripts/peers/talosctl.sh`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from interop_tools import CACHE, run, talosctl_binary
from trustplan_sim.etcd_members import generate_etcd_ca

from trustplan.talos import etcdca, pki

REPO = Path(__file__).resolve().parents[2]
CONTROLPLANE = REPO / "tests" / "fixtures" / "talosctl-gen-config" / "nodes" / "cp-1.yaml"

pytestmark = pytest.mark.interop


def _talosctls() -> list[Path]:
    newer = CACHE / "talosctl-v1.14.1"
    if not newer.is_file():
        pytest.fail(f"talosctl v1.14.1 not found at {newer}: run TALOSCTL_VERSION=v1.14.1 scripts/peers/talosctl.sh")
    return [talosctl_binary(), newer]


def test_every_phase_of_the_etcd_ca_field_validates(tmp_path: Path) -> None:
    binaries = _talosctls()
    text = CONTROLPLANE.read_text()
    old_field = next(yaml.safe_load_all(text))["cluster"]["etcd"]["ca"]
    old = (pki.b64decode_pem(old_field["crt"], "cp-1", "crt"), pki.b64decode_pem(old_field["key"], "cp-1", "key"))
    new = generate_etcd_ca(pki.utcnow())

    async def scenario() -> None:
        for phase, (crt, key) in etcdca.rotation_values(old, new).items():
            docs = list(yaml.safe_load_all(text))  # v1alpha1 first, then the other documents
            doc = docs[0]
            blocks = pki.split_pem_bundle(crt)
            etcdca.write(doc, blocks[0], key, blocks[1:])
            assert etcdca.read(doc, phase) is not None
            config = tmp_path / f"{phase}.yaml"
            config.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            for talosctl in binaries:
                result = await run(talosctl, "validate", "--config", config, "--mode", "metal", "--strict")
                assert result.code == 0, f"{talosctl.name} {phase}: {result.out}{result.err}"

    asyncio.run(scenario())

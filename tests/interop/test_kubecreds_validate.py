"""talosctl validate --strict (v1.14.1) accepts the configs trustplan writes for the aggregator CA,
the service-account key and the encryption key: a legacy talosctl v1.12.1 config moved into the 1.14
documents, and a talosctl v1.14.1 config with a second secretbox key. Fails, never skips, without
talosctl v1.14.1 (TALOSCTL_VERSION=v1.14.1 scripts/peers/talosctl.sh builds it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trustplan.talos import machineconfig
from trustplan.talos.kubecreds import KindFields, Material

pytestmark = pytest.mark.interop
FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubecreds"
KINDS = ("aggregator", "serviceaccount", "encryption")


def config(name: str) -> machineconfig.MachineConfig:
    path = FIXTURES / name
    return machineconfig.parse(path.read_bytes(), str(path))


def test_talosctl_1_14_validates_every_config_written(tmp_path: Path) -> None:
    """`talosctl validate --strict` (v1.14.1) accepts the moved legacy config and a rotated one."""
    talosctl = os.environ.get("TALOSCTL_V14") or str(Path.home() / ".cache/trustplan/peers/talosctl-v1.14.1")
    if not shutil.which(talosctl):
        pytest.fail(f"talosctl v1.14.1 is not at {talosctl} (scripts/peers/talosctl.sh builds it)")
    legacy = config("controlplane-1.12.yaml")
    moved = machineconfig.with_kind_fields(
        legacy,
        {k: KindFields("document", machineconfig.kind_fields(legacy, k).issuer) for k in KINDS},  # type: ignore[misc]
    )
    cfg = config("controlplane-1.14.yaml")
    enc = machineconfig.kind_fields(cfg, "encryption").issuer
    assert enc is not None
    rotated = machineconfig.with_kind_fields(
        cfg, {"encryption": KindFields("document", Material(b"", os.urandom(32), "next"), (enc,))}
    )
    for name, written in (("moved.yaml", moved), ("rotated.yaml", rotated)):
        path = tmp_path / name
        path.write_bytes(written.data)
        run = subprocess.run(
            [talosctl, "validate", "--config", str(path), "--mode", "metal", "--strict"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, (name, run.stderr)

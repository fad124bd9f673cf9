"""`talosctl validate --mode metal --strict` on every machine config trustplan writes.

Clusters of machine-config files, each rotated (both CAs) by the files provider:
- examples/files (the files walkthrough, docs/walkthroughs.md), judged by each talosctl release;
- tests/fixtures/talosctl-gen-config/<release>: made by that talosctl release itself (`gen secrets`,
  `gen config`, comments and examples kept; v1.12.1 the legacy layout, v1.14.1 the Talos 1.14
  documents), one file per node, judged by the release that generated it.
The talosconfig trustplan writes must load in `talosctl config info`.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from interop_tools import run, trustplan

REPO = Path(__file__).resolve().parents[2]
GEN_CONFIG = REPO / "tests" / "fixtures" / "talosctl-gen-config"
EXAMPLE = REPO / "examples" / "files"

pytestmark = pytest.mark.interop


async def validate(talosctl: Path, config: Path) -> None:
    result = await run(talosctl, "validate", "--config", config, "--mode", "metal", "--strict", timeout=60)
    assert result.code == 0, f"{config.name}: {result.out}{result.err}"


def files_cluster(work: Path, generated_by: str) -> None:
    """A files cluster from `talosctl gen config` output: one copy of its role's file per node."""
    shutil.copytree(GEN_CONFIG / generated_by, work)
    shutil.copy(GEN_CONFIG / "trustplan.yaml", work / "trustplan.yaml")
    (work / "nodes").mkdir()
    for name in ("cp-1", "cp-2", "cp-3", "worker-1", "worker-2"):
        role = "controlplane" if name.startswith("cp") else "worker"
        shutil.copy(work / f"{role}.yaml", work / "nodes" / f"{name}.yaml")


@pytest.mark.parametrize("source", ["examples-files", "talosctl-gen-config"])
def test_every_config_trustplan_writes_validates(
    tmp_path: Path, source: str, talosctl_version: str, talosctl_path: Path
) -> None:
    async def scenario() -> None:
        work = tmp_path / "cluster"
        if source == "examples-files":
            shutil.copytree(EXAMPLE, work)
        else:
            files_cluster(work, talosctl_version)
        configs = sorted((work / "nodes").glob("*.yaml"))
        assert len(configs) == 5
        for config in configs:  # the input is valid to begin with
            await validate(talosctl_path, config)
        before = {c.name: c.read_bytes() for c in configs}
        (await trustplan("plan", "-o", "plan.bin", cwd=work)).ok()
        (await trustplan("apply", "plan.bin", cwd=work)).ok()
        for config in configs:
            assert config.read_bytes() != before[config.name], f"{config.name} was not rewritten"
            await validate(talosctl_path, config)
        info = await run(talosctl_path, "--talosconfig", work / "talosconfig", "config", "info", timeout=30)
        assert info.code == 0 and "Current context:" in info.out, info.out + info.err

    asyncio.run(scenario())

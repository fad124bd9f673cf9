"""`talosctl validate --mode metal --strict` on every machine config trustplan writes.

Two clusters of machine-config files, each rotated (both CAs) by the files provider:
- examples/files (the files walkthrough, docs/walkthroughs.md);
- tests/fixtures/talosctl-gen-config: made by talosctl v1.12.1 itself (`gen secrets`, `gen config`,
  comments and examples kept), one file per node. See its README for the exact commands.
The talosconfig trustplan writes must load in `talosctl config info`.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from interop_tools import run, talosctl_binary, trustplan

REPO = Path(__file__).resolve().parents[2]
GEN_CONFIG = REPO / "tests" / "fixtures" / "talosctl-gen-config"
EXAMPLE = REPO / "examples" / "files"

pytestmark = pytest.mark.interop


async def _validate(talosctl: Path, config: Path) -> None:
    result = await run(talosctl, "validate", "--config", config, "--mode", "metal", "--strict", timeout=60)
    assert result.code == 0, f"{config.name}: {result.out}{result.err}"


@pytest.mark.parametrize("source", [EXAMPLE, GEN_CONFIG], ids=["examples-files", "talosctl-gen-config"])
def test_every_config_trustplan_writes_validates(tmp_path: Path, source: Path) -> None:
    talosctl_path = talosctl_binary()

    async def scenario() -> None:
        work = tmp_path / "cluster"
        shutil.copytree(source, work)
        configs = sorted((work / "nodes").glob("*.yaml"))
        assert len(configs) == 5
        for config in configs:  # the input is valid to begin with
            await _validate(talosctl_path, config)
        before = {c.name: c.read_bytes() for c in configs}
        (await trustplan("plan", "-o", "plan.bin", cwd=work)).ok()
        (await trustplan("apply", "plan.bin", cwd=work)).ok()
        for config in configs:
            assert config.read_bytes() != before[config.name], f"{config.name} was not rewritten"
            await _validate(talosctl_path, config)
        info = await run(talosctl_path, "--talosconfig", work / "talosconfig", "config", "info", timeout=30)
        assert info.code == 0 and "Current context:" in info.out, info.out + info.err

    asyncio.run(scenario())

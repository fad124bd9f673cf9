"""`talosctl validate --mode metal --strict` v1.12.1 on the configs `plan --allow-disruptive` writes: the
aggregator CA and the service-account key replaced in place in the legacy fields of the machine
configs talosctl v1.12.1 generated (tests/fixtures/talosctl-gen-config/v1.12.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from interop.test_validate import files_cluster, validate
from interop_tools import talosctl_binary, trustplan

pytestmark = pytest.mark.interop
EXTRA = "\n  aggregator-2027: {generate: {}}\n  sa-2027: {generate: {}}\n"
TRUST = "\n  aggregator: {issuer: aggregator-2027}\n  serviceaccount: {issuer: sa-2027}\n"


def test_configs_replaced_in_place_validate_on_talos_1_12(tmp_path: Path) -> None:
    talosctl = talosctl_binary("v1.12.1")

    async def scenario() -> None:
        work = tmp_path / "cluster"
        files_cluster(work, "v1.12.1")
        desired = work / "trustplan.yaml"
        text = desired.read_text().replace("authorities:\n", "authorities:" + EXTRA, 1)
        desired.write_text(text.replace("trust:\n", "trust:" + TRUST, 1))
        cps = sorted((work / "nodes").glob("cp-*.yaml"))
        before = {c.name: c.read_bytes() for c in cps}
        (await trustplan("plan", "--allow-disruptive", "aggregator,serviceaccount", "-o", "plan.bin", cwd=work)).ok()
        (await trustplan("apply", "plan.bin", cwd=work)).ok()
        for config in cps:
            text = config.read_text()
            assert config.read_bytes() != before[config.name] and "aggregatorCA:" in text, config.name
            await validate(talosctl, config)

    asyncio.run(scenario())

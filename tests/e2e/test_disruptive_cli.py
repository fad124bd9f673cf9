"""`plan --allow-disruptive KIND` through the CLI on machine configs talosctl v1.12.1 wrote (legacy
single values, Talos v1.12.1): the text, Markdown and JSON plans say which tokens and clients break
and for how long; `apply plan.bin` replaces the values in place; a bad flag is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from trustplan.talos import machineconfig
from trustplan.talos.rewrite import kind_trust

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubecreds"
DESIRED = """version: v1alpha1
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
  aggregator-2027: {generate: {}}
  sa-2027: {generate: {algorithm: ecdsa-p256}}
trust:
  aggregator: {issuer: aggregator-2027}
  serviceaccount: {issuer: sa-2027}
keystore: .trustplan/keys
state: trustplan.state.json
"""


@pytest.fixture()
def legacy(tmp_path: Path) -> Path:
    (tmp_path / "nodes").mkdir()
    for name, fixture in (("cp-1", "controlplane"), ("cp-2", "controlplane"), ("worker-1", "worker")):
        (tmp_path / "nodes" / f"{name}.yaml").write_text((FIXTURES / f"{fixture}-1.12.yaml").read_text())
        (tmp_path / "nodes" / f"{name}.yaml").chmod(0o600)
    (tmp_path / "trustplan.yaml").write_text(DESIRED)
    return tmp_path


def issuers(root: Path, name: str) -> dict[str, tuple[str | None, tuple[str, ...], str]]:
    cfg = machineconfig.parse((root / "nodes" / name).read_bytes(), name)
    out = {}
    for kind in ("aggregator", "serviceaccount"):
        fields = machineconfig.kind_fields(cfg, kind)  # type: ignore[arg-type]
        trust, _ = kind_trust(kind, fields)  # type: ignore[arg-type]
        out[kind] = (trust.issuer, trust.accepted, fields.layout)
    return out


def test_the_plan_says_what_breaks_and_apply_replaces_the_values_in_place(legacy: Path) -> None:
    before = issuers(legacy, "cp-1.yaml")
    refused = run_cli(legacy, "plan")
    assert refused.code != 0 and "`trustplan plan --allow-disruptive aggregator`" in refused.err
    planned = run_cli(legacy, "plan", "--allow-disruptive", "aggregator,serviceaccount", "-o", "plan.bin")
    assert planned.code == 0, planned.err
    text = planned.out
    assert "Phase 1: swap" in text and "Phase 2" not in text  # one write per control plane
    sa = "service-account signing key replaced in place (`--allow-disruptive serviceaccount`"
    assert sa in text and "every bound service-account token and every legacy token Secret signed with" in text
    assert "aggregator CA replaced in place (`--allow-disruptive aggregator`" in text
    markdown = run_cli(legacy, "show", "-f", "markdown", "plan.bin").out
    assert sa in markdown and "up to an hour by default" in markdown
    doc = json.loads(run_cli(legacy, "show", "-f", "json", "plan.bin").out)
    disruptive = {w["pki"]: w for w in doc["warning_details"] if w["code"] == "disruptive"}
    assert set(disruptive) == {"aggregator", "serviceaccount"}
    assert disruptive["serviceaccount"]["fingerprint"] == before["serviceaccount"][0]
    assert disruptive["serviceaccount"]["nodes"] == ["10.5.0.2", "10.5.0.3"]

    applied = run_cli(legacy, "apply", "plan.bin")  # the saved plan carries the consent
    assert applied.code == 0, applied.err
    keys = json.loads((legacy / ".trustplan" / "keys" / "index.json").read_text())
    for name in ("cp-1.yaml", "cp-2.yaml"):
        after = issuers(legacy, name)
        assert after["aggregator"] == (keys["aggregator-2027"], (), "legacy")
        assert after["serviceaccount"] == (keys["sa-2027"], (), "legacy")
    assert run_cli(legacy, "plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize(
    "value,message",
    [
        ("encryption", "not offered for the encryption key: replacing its only key leaves every Secret in etcd "
                       "unreadable"),
        ("etcd", "'etcd': expected one of aggregator, serviceaccount"),
    ],
)
def test_a_bad_kind_is_one_clear_error_and_nothing_is_written(legacy: Path, value: str, message: str) -> None:
    before = {p: p.read_bytes() for p in legacy.rglob("*") if p.is_file()}
    result = run_cli(legacy, "plan", "--allow-disruptive", value, "-o", "plan.bin")
    assert result.code == 2 and message in result.err and "--allow-disruptive" in result.err, result.err
    assert "Traceback" not in result.err
    assert {p: p.read_bytes() for p in legacy.rglob("*") if p.is_file()} == before

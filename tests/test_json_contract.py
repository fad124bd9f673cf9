"""The JSON contract for policy tools (issue 14, items 5 and 6): structured warnings, `new` on
authorities, a schema that takes newer minor documents, `trustplan schema`, and an offline `$schema`
line from `trustplan init`."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import copy_example, run_cli

sys.path.insert(0, str(Path(__file__).parent / "render"))
from render_scenarios import SCENARIOS, document  # noqa: E402

from trustplan import schemas  # noqa: E402


def valid(doc: dict[str, Any], schema: dict[str, Any] | None = None) -> bool:
    return jsonschema.Draft202012Validator(schema or schemas.load("plan")).is_valid(doc)


@pytest.fixture(scope="module")
def rotation() -> dict[str, Any]:
    return document(SCENARIOS["rotation"]())


def test_warnings_are_structured(rotation: dict[str, Any]) -> None:
    details = rotation["warning_details"]
    assert [w["message"] for w in details] == rotation["warnings"]
    untrusted = [w for w in details if w["code"] == "ca-untrusted"]
    assert {w["pki"] for w in untrusted} == {"talos", "kubernetes"}
    for w in untrusted:
        assert w["fingerprint"].startswith("sha256:") and w["fingerprint"] in w["message"]
        assert w["nodes"] == [n["address"] for n in rotation["nodes"]]
    resume = document(SCENARIOS["resume"]())
    codes = {w["code"]: w for w in resume["warning_details"]}
    assert codes["ca-expiring"]["pki"] == "talos" and len(codes["ca-expiring"]["nodes"]) == 5
    assert codes["nodes-skipped"] == {
        "code": "nodes-skipped",
        "pki": None,
        "fingerprint": None,
        "nodes": ["10.5.0.2"],
        "message": "already in the desired state, skipped: 10.5.0.2",
    }


def test_authorities_say_whether_they_are_new(rotation: dict[str, Any]) -> None:
    live = {fp for n in rotation["nodes"] for t in n["live"].values() for fp in [t["issuer"], *t["accepted"]]}
    assert rotation["authorities"]
    for a in rotation["authorities"]:
        assert a["new"] is (a["fingerprint"] not in live)
    assert rotation["summary"]["ca_changes"] == 30 and rotation["summary"]["config_writes"] == 15


def newer_minor(doc: dict[str, Any]) -> dict[str, Any]:
    newer = copy.deepcopy(doc)
    newer["format_minor"] = 7
    newer["approvals"] = [{"by": "alice", "at": "2026-11-28T09:00:00Z"}]
    newer["authorities"][0]["crl"] = {"url": "https://example.com/crl", "size": 12}
    newer["nodes"][0]["hostname"] = "cp-1"
    newer["nodes"][0]["live"]["talos"]["fetched"] = True
    newer["phases"][0]["edits"][0]["reason"] = "expand"
    newer["phases"][0]["gates"][0]["timeout_s"] = 60
    newer["warning_details"][0]["severity"] = "high"
    newer["summary"]["estimated_seconds"] = 42.5
    return newer


def test_an_older_consumers_schema_accepts_a_newer_minor_document(rotation: dict[str, Any]) -> None:
    older = schemas.load("plan")  # what a 1.1 consumer ships; the document below is 1.7
    assert valid(rotation, older)
    assert valid(newer_minor(rotation), older)
    other_major = {**rotation, "format_version": 2}
    assert not valid(other_major, older)
    a_1_0 = copy.deepcopy(rotation)  # and a 1.0 document (before `new`, `warning_details`, ...) too
    for key in ("format_minor", "warning_details"):
        del a_1_0[key]
    for a in a_1_0["authorities"]:
        del a["new"]
    assert valid(a_1_0, older)


def test_added_fields_may_never_carry_key_material(rotation: dict[str, Any]) -> None:
    leaked = newer_minor(rotation)
    leaked["nodes"][0]["debug"] = {"dump": ["-----BEGIN EC PRIVATE KEY-----\nMHc...\n-----END EC PRIVATE KEY-----\n"]}
    assert not valid(leaked)


def test_a_newer_minor_plan_file_is_shown(tmp_path: Path) -> None:
    from trustplan.formats import planfile

    root = copy_example(tmp_path / "cluster")
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    doc = json.loads(planfile.read(root / "plan.bin").document)
    (root / "newer.bin").write_bytes(planfile.encode_document(newer_minor(doc)))
    shown = run_cli(root, "show", "newer.bin", "--format", "json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["format_minor"] == 7


@pytest.mark.parametrize("name", ["desired", "plan", "state"])
def test_schema_command_prints_and_writes_each_schema(name: str, tmp_path: Path) -> None:
    printed = run_cli(tmp_path, "schema", name)
    assert printed.code == 0
    assert json.loads(printed.out) == schemas.load(name)
    written = run_cli(tmp_path, "schema", name, "-o", "editor/schema.json")
    assert written.code == 0
    assert (tmp_path / "editor/schema.json").read_text() == printed.out


def test_init_writes_a_schema_line_that_resolves_offline(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "cluster")
    (root / "trustplan.yaml").unlink()
    result = run_cli(root, "init", "--machine-configs", "nodes")
    assert result.code == 0, result.err
    text = (root / "trustplan.yaml").read_text()
    first = text.splitlines()[0]
    assert first == "# yaml-language-server: $schema=.trustplan/desired.schema.json"
    target = root / first.split("$schema=", 1)[1]  # relative to the file, as the YAML language server resolves it
    schema = json.loads(target.read_text())
    assert schema == schemas.load("desired")
    jsonschema.validate(yaml.safe_load(text), schema)
    assert run_cli(root, "validate").code == 0

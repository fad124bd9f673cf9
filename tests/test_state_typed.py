"""The state as frozen dataclasses (trustplan.state.document): a state file of main reads into typed
records and writes back byte for byte through them; a state file with a bad field is refused with one
error naming the file and the field, and nothing is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import snapshot
from trustplan.state import AuthorityRecord, LocalState, NodeRecord, StateDocument, TrustRecord, document, empty_state
from trustplan.state.journal import HistoryEntry, Step

from trustplan.errors import StateError

GOLDEN = Path(__file__).parent / "golden" / "state-main-v1.json"


def test_a_state_file_of_main_goes_through_the_typed_records_byte_for_byte() -> None:
    data = GOLDEN.read_bytes()
    state = document.load(data, str(GOLDEN))
    assert document.encode(state) == data
    assert (state.cluster, state.serial) == ("demo", 1) and state.lineage
    node = state.nodes["10.5.0.2"]
    assert isinstance(node, NodeRecord) and node.role == "controlplane" and isinstance(node.talos, TrustRecord)
    assert node.talos.issuer in state.authorities
    assert all(isinstance(a, AuthorityRecord) and "PRIVATE" not in a.certificate for a in state.authorities.values())
    assert isinstance(state.history[0], HistoryEntry) and all(isinstance(s, Step) for s in state.history[0].steps)


def test_optional_fields_are_written_only_when_set() -> None:
    bare = json.loads(document.encode(empty_state("demo")))
    assert sorted(bare) == ["authorities", "cluster", "history", "lineage", "nodes", "serial", "version"]
    node = NodeRecord("worker", "sha256:" + "c" * 64, TrustRecord("sha256:b", ("sha256:b", "sha256:a")),
                      TrustRecord(None))
    full = dataclasses.replace(empty_state("demo"), nodes={"10.5.0.9": node}, swaps={"talos": "2026-01-01T00:00:00Z"},
                               history_compacted=3)
    again = document.load(document.encode(full), "x")
    assert again == full
    written = json.loads(document.encode(again))
    assert written["history_compacted"] == 3 and written["swaps"] == {"talos": "2026-01-01T00:00:00Z"}
    assert written["nodes"]["10.5.0.9"]["talos"]["accepted"] == ["sha256:b", "sha256:a"]  # order kept
    assert written["nodes"]["10.5.0.9"]["kubernetes"] == {"issuer": None, "accepted": []}


def test_a_state_written_and_read_back_is_the_same_typed_state(tmp_path: Path) -> None:
    state = document.load(GOLDEN.read_bytes(), str(GOLDEN))
    store = LocalState(tmp_path / "s.json")
    store.write(state)
    assert store.read("demo") == state
    assert (tmp_path / "s.json").read_bytes() == GOLDEN.read_bytes()


@pytest.mark.parametrize(("field", "value", "message"), [
    (("nodes", "10.5.0.2", "role"), "boss", "nodes/10.5.0.2/role: 'boss' is not one of ['controlplane', 'worker']"),
    (("serial",), -1, "serial: -1 is less than the minimum of 0"),
    (("nodes", "10.5.0.3", "talos", "accepted"), "sha256:ab",
     "nodes/10.5.0.3/talos/accepted: 'sha256:ab' is not of type 'array'"),
])
def test_a_bad_field_is_named_with_the_file(
    tmp_path: Path, field: tuple[str, ...], value: object, message: str
) -> None:
    doc = json.loads(GOLDEN.read_bytes())
    where = doc
    for key in field[:-1]:
        where = where[key]
    where[field[-1]] = value
    path = tmp_path / "trustplan.state.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(StateError) as caught:
        LocalState(path).read("demo")
    assert str(caught.value) == f"{path}: {message} (schemas/state.schema.json)"


def test_plan_refuses_a_state_file_with_a_bad_field_and_writes_nothing(example: Path, cli) -> None:  # noqa: ANN001
    doc = json.loads(GOLDEN.read_bytes())
    doc["history"][0]["steps"][0]["outcome"] = "maybe"
    (example / "trustplan.state.json").write_text(json.dumps(doc))
    before = snapshot(example)
    result = cli("plan", "-o", "plan.bin")
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: trustplan.state.json: history/0/steps/0/outcome: 'maybe' is not one of "
                      "['ok', 'failed', 'not-run', 'kept', 'stopped'] (schemas/state.schema.json)"], result.err
    assert "Traceback" not in result.err and snapshot(example) == before


def test_the_state_records_are_frozen() -> None:
    state = StateDocument("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.serial = 3  # type: ignore[misc]

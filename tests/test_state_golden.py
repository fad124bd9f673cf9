"""The state file keeps its format: a state file written by main's trustplan (before the journal was
typed: tests/golden/state-main-v1.json, from a plan and apply of the example on the memory provider)
reads and writes back byte for byte, and each journal step of its history reads into a typed Step
and back to the same document."""

from __future__ import annotations

from pathlib import Path

from trustplan.state import document

from trustplan.engine.journal import HistoryEntry, Step

GOLDEN = Path(__file__).parent / "golden" / "state-main-v1.json"


def test_a_state_file_of_main_reads_and_writes_back_identically() -> None:
    data = GOLDEN.read_bytes()
    doc = document.parse(data, str(GOLDEN))
    assert document.dump(doc) == data


def test_every_journal_step_of_main_round_trips_through_the_typed_step() -> None:
    doc = document.parse(GOLDEN.read_bytes(), str(GOLDEN))
    steps = [s for entry in doc["history"] for s in entry["steps"]]
    assert {s["kind"] for s in steps} >= {"write", "gate", "output"}  # the file holds each kind apply writes
    for s in steps:
        assert Step.from_document(s).to_document() == s


def test_every_history_entry_of_main_round_trips_through_the_typed_entry() -> None:
    doc = document.parse(GOLDEN.read_bytes(), str(GOLDEN))
    assert doc["history"]
    for entry in doc["history"]:
        typed = HistoryEntry.from_document(entry)
        assert typed.status in ("applied", "failed") and typed.steps
        assert typed.to_document() == entry


def test_a_failed_entry_keeps_its_error() -> None:
    entry = {"serial": 2, "plan_digest": "sha256:ab", "started": "2026-01-01T00:00:00Z",
             "finished": "2026-01-01T00:01:00Z", "status": "failed", "error": "gate timed out",
             "steps": [{"phase": "swap", "kind": "gate", "pki": "talos", "outcome": "failed", "message": "x"}]}
    typed = HistoryEntry.from_document(entry)
    assert typed.error == "gate timed out" and typed.status == "failed"
    assert typed.to_document() == entry

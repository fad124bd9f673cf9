"""The typed saved plan: planfile.decode gives a frozen SavedPlan whose fields say what the file says,
and a malformed or tampered file gives one PlanFileError naming the file and where, never a crash."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).parent / "render"))
from render_scenarios import SCENARIOS, document  # noqa: E402
from trustplan.planner import PlanWarning  # noqa: E402

from trustplan.errors import PlanFileError  # noqa: E402
from trustplan.formats import planfile  # noqa: E402
from trustplan.formats.planfile.savedplan import PlanRollout, SavedPlan  # noqa: E402


@pytest.fixture(scope="module")
def rotation() -> SavedPlan:
    return SCENARIOS["rotation"]()


def test_decode_gives_back_the_plan_that_was_saved(rotation: SavedPlan) -> None:
    saved = planfile.decode(planfile.encode(rotation), "plan.bin")
    assert saved.plan == rotation.plan
    assert saved.bindings == rotation.bindings
    assert saved.outputs == rotation.outputs
    assert [(o.step.output, o.path) for o in saved.outputs] == [
        ("talosconfig", "talosconfig"), ("kubeconfig", "kubeconfig"), ("secrets", "secrets.yaml"),
        ("secrets", "secrets.yaml"),
    ]
    assert saved.signer is None and saved.inconsistent == () and saved.format_minor == 1
    assert saved.document == rotation.document
    with pytest.raises(dataclasses.FrozenInstanceError):
        saved.plan = rotation.plan  # type: ignore[misc]


def test_warnings_come_back_as_typed_values(rotation: SavedPlan) -> None:
    saved = planfile.decode(planfile.encode(rotation), "plan.bin")
    assert all(isinstance(w, PlanWarning) for w in saved.plan.warnings)
    untrusted = [w for w in saved.plan.warnings if w.code == "ca-untrusted"]
    assert {w.pki for w in untrusted} == {"talos", "kubernetes"}
    assert all(w.nodes == tuple(n.address for n in saved.plan.nodes) for w in untrusted)
    resume = planfile.decode(planfile.encode(SCENARIOS["resume"]()), "plan.bin")
    assert {w.code for w in resume.plan.warnings} >= {"ca-expiring", "nodes-skipped"}


def test_the_rollout_and_the_signer_are_read(rotation: SavedPlan) -> None:
    with_rollout = planfile.new(rotation.plan, rotation.bindings, {"talosconfig": "tc"}, PlanRollout(1, 5, 2, 8))
    key = ed25519.Ed25519PrivateKey.generate()
    saved = planfile.decode(planfile.encode(with_rollout, key), "signed.bin")
    assert saved.rollout == PlanRollout(1, 5, 2, 8)
    assert saved.signer == planfile.key_fingerprint(key.public_key().public_bytes_raw())
    assert saved.path_of("talosconfig") == "tc" and saved.path_of("kubeconfig") is None


def _crafted(doc: dict[str, Any]) -> bytes:
    return planfile.encode_document(doc)


def _edit_first_accept(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc["phases"][0]["edits"][0].update(changes)
    return doc


TAMPERED = {
    "unknown node": (lambda d: _edit_first_accept(d, node="10.9.9.9"), "phases[0].edits[0]: node 10.9.9.9 is not"),
    "wrong role": (lambda d: _edit_first_accept(d, role="worker"), "is a controlplane, not a worker"),
    "unknown CA": (lambda d: _edit_first_accept(d, ca="sha256:" + "e" * 64), "phases[0].edits[0].ca: CA sha256:eee"),
    "doctored subject": (
        lambda d: d["authorities"][0].update(subject="O=talos,CN=everyone") or d,
        "authorities[0].subject: 'O=talos,CN=everyone' is not what the certificate says",
    ),
    "bad time": (lambda d: d.update(created="2026-13-45T12:00:00Z") or d, "created: '2026-13-45T12:00:00Z' is not"),
    "schema": (lambda d: _edit_first_accept(d, kind="format-disk"), "does not match the plan schema at phases/0/edits"),
    "terminal escape": (lambda d: d["warnings"].append("\x1b[2J") or d, "holds control characters"),
    "duplicate node": (lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])) or d, "is listed twice"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_document_gives_one_clear_error(rotation: SavedPlan, case: str) -> None:
    tamper, expected = TAMPERED[case]
    data = _crafted(tamper(document(rotation)))
    with pytest.raises(PlanFileError) as caught:
        planfile.decode(data, "evil.bin")
    message = str(caught.value)
    assert message.startswith("evil.bin: "), message
    assert expected in message, message
    assert caught.value.hint


@pytest.mark.parametrize("where", [3, 11, 14, 200, -40, -1])
def test_a_flipped_byte_gives_one_clear_error(rotation: SavedPlan, where: int) -> None:
    data = bytearray(planfile.encode(rotation))
    data[where] ^= 0x20
    with pytest.raises(PlanFileError, match=r"^plan\.bin: "):
        planfile.decode(bytes(data), "plan.bin")


def test_a_body_that_is_not_a_json_object_is_refused() -> None:
    for body in (b"[1, 2]", b"\xff\xfe", b"{"):
        data = planfile._container(body, None)
        with pytest.raises(PlanFileError, match=r"^x\.bin: plan document is not"):
            planfile.decode(data, "x.bin")


def test_a_doctored_summary_decodes_but_is_marked_inconsistent(rotation: SavedPlan) -> None:
    """`show` prints what the file says; apply refuses it (tests/test_tamper.py)."""
    doc = document(rotation)
    doc["summary"]["remove"] = 0
    saved = planfile.decode(_crafted(doc), "evil.bin")
    assert saved.inconsistent == ("summary",)
    assert saved.plan == rotation.plan  # the steps themselves are what they were


def test_fields_of_a_newer_format_are_kept_and_named(rotation: SavedPlan) -> None:
    doc = document(rotation)
    doc["format_minor"] = 7
    doc["approvals"] = [{"by": "alice"}]  # a new top-level section: not part of the plan's content
    doc["nodes"][0]["hostname"] = "cp-1"
    saved = planfile.decode(_crafted(doc), "newer.bin")
    assert saved.format_minor == 7 and saved.inconsistent == ("nodes",)
    assert json.loads(saved.document)["approvals"] == [{"by": "alice"}]  # --format json shows them


def test_a_format_1_0_document_reads_its_warnings_as_messages(rotation: SavedPlan) -> None:
    doc = document(rotation)
    for key in ("format_minor", "warning_details"):
        del doc[key]
    saved = planfile.decode(_crafted(doc), "old.bin")
    assert [w.message for w in saved.plan.warnings] == doc["warnings"]
    assert {w.code for w in saved.plan.warnings} == {"message"}
    assert saved.format_minor == 0

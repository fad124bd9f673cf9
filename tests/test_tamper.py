"""Apply trusts only what it can recompute: a plan file edited by someone who can also recompute its
digest (a pull-request branch, a CI artifact) is refused, naming what differs, and no node changes.
With `planSigning` set, only a saved plan signed with that key is applied."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot
from test_planfile import signing  # noqa: F401 - fixture

from trustplan.formats import planfile
from trustplan.talos import certgen, pki


@pytest.fixture
def planned(example: Path, cli) -> Path:  # noqa: ANN001
    result = cli("plan", "-o", "plan.bin")
    assert result.code == 0, result.err
    return example


def _doc(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(planfile.decode((root / "plan.bin").read_bytes(), "plan.bin").document)
    return doc


def _write(root: Path, doc: dict[str, Any]) -> None:
    """A crafted plan: valid magic, length, schema and SHA-256 (anyone can recompute them)."""
    (root / "evil.bin").write_bytes(planfile.encode_document(doc))


def _refused(cli, root: Path, *patterns: str) -> str:  # noqa: ANN001
    before = snapshot(root)
    result = cli("apply", "evil.bin")
    assert result.code == 1, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.err
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    assert "nothing was sent to any node" in result.err or "nothing was changed" in result.err
    assert snapshot(root) == before  # no node config, state, keystore or output changed
    return errors[0]


def _foreign_ca(doc: dict[str, Any]) -> dict[str, Any]:
    """An attacker's own Talos CA, as a plan authority entry."""
    cert, _ = certgen.generate_ca("talos", pki.utcnow())
    ca = pki.CACert.from_cert(cert)
    return {
        "fingerprint": ca.fingerprint,
        "name": "talos-2026",
        "pki": "talos",
        "source": "generate",
        "subject": ca.subject,
        "algorithm": ca.algorithm,
        "not_before": ca.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": ca.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "certificate": ca.pem.decode(),
        "key_available": False,
    }


def test_an_untouched_plan_applies(planned: Path, cli) -> None:  # noqa: ANN001
    """The control: re-encoding the decoded document gives an identical plan, which applies."""
    _write(planned, _doc(planned))
    assert (planned / "evil.bin").read_bytes() == (planned / "plan.bin").read_bytes()
    result = cli("apply", "evil.bin")
    assert result.code == 0, result.err


def test_a_foreign_ca_accepted_on_every_node_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    foreign = _foreign_ca(doc)
    doc["authorities"].append(foreign)
    accept = next(p for p in doc["phases"] if p["name"] == "accept")
    for node in doc["nodes"]:
        accept["edits"].append({"kind": "accept", "node": node["address"], "role": node["role"], "pki": "talos",
                                "ca": foreign["fingerprint"], "destructive": False})
    doc["summary"]["accept"] += len(doc["nodes"])
    doc["summary"]["node_changes"] += len(doc["nodes"])
    _write(planned, doc)
    _refused(cli, planned, "evil.bin: refusing to apply", "names CAs that neither", foreign["fingerprint"])


def test_a_foreign_ca_in_place_of_a_known_one_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    """The attacker keeps the authority's name and fingerprint field but swaps its certificate."""
    doc = _doc(planned)
    foreign = _foreign_ca(doc)
    target = next(a for a in doc["authorities"] if a["name"] == "talos-2026")
    target["certificate"] = foreign["certificate"]
    _write(planned, doc)
    _refused(cli, planned, "certificate's fingerprint is")


def test_a_doctored_ca_description_is_refused_even_by_show(planned: Path, cli) -> None:  # noqa: ANN001
    """Reviewers approve a CA by what `show` prints: it must be what the certificate says."""
    doc = _doc(planned)
    doc["authorities"][0]["subject"] = "O=talos,CN=trusted-by-everyone"
    _write(planned, doc)
    result = cli("show", "evil.bin")
    assert result.code == 1 and result.out == ""
    assert "authorities[0].subject: 'O=talos,CN=trusted-by-everyone' is not what the certificate says" in result.err


def test_terminal_escapes_in_a_plan_are_refused_even_by_show(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    doc["warnings"].append("\x1b[2J\x1b[1;1HPlan: no changes.")
    _write(planned, doc)
    result = cli("show", "evil.bin")
    assert result.code == 1 and "\x1b" not in result.err
    assert "warnings[" in result.err and "holds control characters" in result.err


def test_dropped_gates_are_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    for phase in doc["phases"]:
        phase["gates"] = []
    doc["summary"]["gates"] = 0
    _write(planned, doc)
    _refused(cli, planned, "gates dropped: gate after accept (talos API with talos-2026)")


def test_a_plan_keeping_only_the_control_plane_edits_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    """The issue's lock-out: workers left behind, gates gone."""
    doc = _doc(planned)
    for phase in doc["phases"]:
        phase["edits"] = [e for e in phase["edits"] if e["role"] == "controlplane"]
        phase["gates"] = []
    _write(planned, doc)
    message = _refused(cli, planned, "steps the desired state asks for are missing", "gates dropped")
    assert "10.5.0.5" in message


def test_reordered_phases_are_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    names = [p["name"] for p in doc["phases"]]
    assert names == ["accept", "swap", "outputs", "remove"]  # the new credentials before remove
    doc["phases"][0], doc["phases"][1] = doc["phases"][1], doc["phases"][0]
    _write(planned, doc)
    _refused(cli, planned, "phases are reordered: swap -> accept -> outputs -> remove", "the safety check refuses it")


def test_a_changed_issuer_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    swap = next(p for p in doc["phases"] if p["name"] == "swap")
    edit = next(e for e in swap["edits"] if e["pki"] == "talos")
    old = edit["old"]
    edit["new"] = old  # keep issuing from the old CA on one node
    _write(planned, doc)
    _refused(cli, planned, f"issuer changed on {edit['node']} (talos)", "but the desired state asks for talos-2026")


def test_a_doctored_summary_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    """What reviewers read must be what would run."""
    doc = _doc(planned)
    doc["summary"]["remove"] = 0
    _write(planned, doc)
    _refused(cli, planned, "'summary' section differs")


def test_show_warns_that_a_doctored_summary_will_be_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    doc["summary"]["remove"] = 0
    _write(planned, doc)
    shown = cli("show", "evil.bin", "--format", "json")
    assert shown.code == 0
    assert json.loads(shown.out)["summary"]["remove"] == 0  # what the file says
    assert "evil.bin: the plan document's 'summary' section says something other than its steps" in shown.err
    assert "`trustplan apply` refuses this plan" in shown.err
    assert "section says" not in cli("show", "plan.bin").err


def test_a_plan_edited_to_another_role_or_unknown_node_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = _doc(planned)
    original = copy.deepcopy(doc)
    doc["phases"][0]["edits"][0]["node"] = "10.9.9.9"
    _write(planned, doc)
    _refused(cli, planned, "node 10.9.9.9 is not one of the plan's nodes")
    doc = original
    doc["phases"][0]["edits"][0]["role"] = "worker"
    _write(planned, doc)
    _refused(cli, planned, "is a controlplane, not a worker")


# --- planSigning: only a saved, signed plan ----------------------------------------------------------


def test_plan_signing_refuses_apply_without_a_plan_file(example: Path, signing, cli) -> None:  # noqa: ANN001, F811
    before = snapshot(example)
    result = cli("apply", "--auto-approve")
    assert result.code == 1
    assert result.err.startswith(
        "Error: trustplan.yaml: planSigning is set, so only a saved plan signed with that key can be applied"
    )
    assert snapshot(example) == before  # no key minted, no node changed


def test_plan_signing_refuses_an_unsigned_plan(example: Path, signing, cli) -> None:  # noqa: ANN001, F811
    assert cli("plan", "-o", "evil.bin").code == 0
    _refused(cli, example, "the plan is not signed, and planSigning requires a signature")


def test_a_deeply_nested_plan_document_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    import hashlib
    import struct

    body = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    head = struct.pack(">10sHI", b"TRUSTPLAN\0", 1, len(body)) + body
    (planned / "evil.bin").write_bytes(head + hashlib.sha256(head).digest())
    result = cli("show", "evil.bin")
    assert result.code == 1
    assert "evil.bin: plan document is nested too deeply to be a plan" in result.err

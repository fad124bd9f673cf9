"""plan.bin refusals: `trustplan apply` refuses a tampered, stale, expired, foreign or unknown-version
plan with one message that says which and what to do, and leaves every file as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from pathlib import Path

import pytest
from conftest import CliClock, snapshot

from trustplan.errors import PlanFileError
from trustplan.formats import planfile


@pytest.fixture
def planned(example: Path, cli) -> Path:  # noqa: ANN001
    """The example with a fresh plan.bin (and the keystore the plan wrote)."""
    result = cli("plan", "-o", "plan.bin")
    assert result.code == 0, result.err
    return example


def refused(cli, root: Path, plan: str, pattern: str) -> str:  # noqa: ANN001
    """Apply `plan`; assert exit 1, one error matching `pattern`, a hint, no traceback, nothing changed.

    Returns all of stderr."""
    before = snapshot(root)
    result = cli("apply", plan)
    assert result.code == 1, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.err
    assert pattern in errors[0], errors[0]
    assert "  hint: " in result.err
    assert snapshot(root) == before
    assert result.out == ""
    return result.err


def reencode(data: bytes, *, version: int | None = None, **changes: object) -> bytes:
    """A plan file whose document was edited, with a correct length and digest (a crafted file)."""
    doc = json.loads(planfile.decode(data, "plan.bin").document)
    doc.update(changes)
    out = planfile.encode_document(doc)
    if version is not None:
        head = out[:-32]
        head = head[:10] + struct.pack(">H", version) + head[12:]
        out = head + hashlib.sha256(head).digest()
    return out


@pytest.mark.parametrize("where", ["magic", "version", "length", "body-start", "body-middle", "body-end", "digest"])
def test_a_flipped_byte_anywhere_is_refused(planned: Path, cli, where: str) -> None:  # noqa: ANN001
    data = bytearray((planned / "plan.bin").read_bytes())
    offset = {
        "magic": 3,
        "version": 11,
        "length": 15,
        "body-start": 16,
        "body-middle": len(data) // 2,
        "body-end": len(data) - 33,
        "digest": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    (planned / "tampered.bin").write_bytes(bytes(data))
    message = refused(cli, planned, "tampered.bin", "tampered.bin: ")
    expected = {
        "magic": "not a trustplan plan file",
        "version": "plan file format version 0 is not supported",
        "length": "truncated or has extra bytes; it has been modified",
    }.get(where, "digest does not match its content; it has been modified")
    assert expected in message


def test_every_single_byte_flip_is_detected(planned: Path) -> None:
    """Not through the CLI (that is above), but over every offset of the file."""
    data = (planned / "plan.bin").read_bytes()
    for offset in range(0, len(data), max(1, len(data) // 500)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x80
        with pytest.raises(PlanFileError):
            planfile.decode(bytes(flipped), "plan.bin")


def test_truncated_plan_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    (planned / "short.bin").write_bytes((planned / "plan.bin").read_bytes()[:-1])
    refused(cli, planned, "short.bin", "truncated or has extra bytes")


def test_unknown_format_version_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    (planned / "v2.bin").write_bytes(reencode((planned / "plan.bin").read_bytes(), version=2))
    message = refused(cli, planned, "v2.bin", "plan file format version 2 is not supported")
    assert "reads version 1" in message


def test_stale_when_a_node_config_changed_after_planning(planned: Path, cli) -> None:  # noqa: ANN001
    with (planned / "nodes/worker-2.yaml").open("a") as f:
        f.write("# edited by hand\n")
    refused(cli, planned, "plan.bin", "plan.bin: the plan is stale: live config changed on 10.5.0.6")


def test_stale_when_the_state_changed_after_planning(planned: Path, cli) -> None:  # noqa: ANN001
    assert cli("plan", "-o", "other.bin").code == 0
    assert cli("apply", "other.bin").code == 0  # someone else applied first: state serial 0 -> 1
    message = refused(cli, planned, "plan.bin", "plan.bin: the plan is stale: the state changed since it was made")
    assert "(serial 0 then, 1 now)" in message


def test_stale_when_the_desired_state_changed(planned: Path, cli) -> None:  # noqa: ANN001
    with (planned / "trustplan.yaml").open("a") as f:
        f.write("# a comment is a change too: the plan binds to the file's digest\n")
    refused(cli, planned, "plan.bin", "trustplan.yaml changed since this plan was made")


def test_expired_plan_is_refused(example: Path, cli, cli_clock: CliClock) -> None:  # noqa: ANN001
    """A plan made with --expires-in 1s is refused from the second it expires (the clock is moved on,
    not waited for)."""
    made = cli_clock.now
    assert cli("plan", "-o", "plan.bin", "--expires-in", "1s").code == 0
    cli_clock.advance(seconds=1)
    expires = (made + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    err = refused(cli, example, "plan.bin", f"plan.bin: plan expired at {expires}")
    assert "make a fresh plan" in err


def test_a_plan_is_accepted_until_it_expires(example: Path, cli, cli_clock: CliClock) -> None:  # noqa: ANN001
    assert cli("plan", "-o", "plan.bin", "--expires-in", "1h").code == 0
    cli_clock.advance(minutes=59, seconds=59)
    result = cli("apply", "plan.bin")
    assert result.code == 0, result.err
    assert result.out.startswith("Apply complete: ")


def test_crafted_expiry_in_the_past_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    data = reencode((planned / "plan.bin").read_bytes(), expires="2020-01-01T00:00:00Z")
    (planned / "old.bin").write_bytes(data)
    refused(cli, planned, "old.bin", "old.bin: plan expired at 2020-01-01T00:00:00Z")


def test_plan_for_another_cluster_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    desired = planned / "trustplan.yaml"
    desired.write_text(desired.read_text().replace("name: demo", "name: prod"))
    refused(cli, planned, "plan.bin", "plan.bin: this plan is for cluster 'demo', but trustplan.yaml is cluster 'prod'")


def test_plan_for_another_state_lineage_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    data = reencode((planned / "plan.bin").read_bytes(), state={"lineage": "someone-else", "serial": 4})
    (planned / "foreign.bin").write_bytes(data)
    refused(cli, planned, "foreign.bin", "this plan was made for another state lineage")


def test_a_missing_keystore_key_stops_apply_before_any_node_changes(planned: Path, cli) -> None:  # noqa: ANN001
    for key in (planned / ".trustplan/keys").glob("*.key"):
        key.unlink()
    refused(cli, planned, "plan.bin", "is missing from the keystore")


def test_missing_plan_file(planned: Path, cli) -> None:  # noqa: ANN001
    refused(cli, planned, "nope.bin", "nope.bin: plan file not found")


def test_a_document_that_breaks_the_schema_is_refused(planned: Path, cli) -> None:  # noqa: ANN001
    doc = json.loads(planfile.decode((planned / "plan.bin").read_bytes(), "plan.bin").document)
    doc["phases"][0]["edits"][0]["kind"] = "format-disk"
    (planned / "odd.bin").write_bytes(planfile.encode_document(doc))
    refused(cli, planned, "odd.bin", "plan document does not match the plan schema")


def test_encoding_is_canonical_and_deterministic(planned: Path) -> None:
    data = (planned / "plan.bin").read_bytes()
    saved = planfile.decode(data, "plan.bin")
    assert planfile.encode(saved) == data
    doc = json.loads(saved.document)
    assert planfile.encode_document(doc) == data
    body = data[16:-32]
    assert body == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert struct.unpack(">10sHI", data[:16]) == (b"TRUSTPLAN\0", 1, len(body))
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


# --- signed plans (desired state `planSigning`) ---------------------------------------------------


def _keypair(dir: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private, public = dir / f"{name}.key", dir / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture
def signing(example: Path) -> tuple[Path, Path]:
    """The example requiring plans signed by `ci.key`; also an `other.key` nobody trusts."""
    keys = example.parent / "keys"
    keys.mkdir()
    ci = _keypair(keys, "ci")
    _keypair(keys, "other")
    (example / "trustplan.yaml").write_text(
        (example / "trustplan.yaml").read_text() + f"planSigning: {{publicKey: {ci[1]}}}\n"
    )
    return ci


def test_a_plan_signed_with_the_planSigning_key_applies(example: Path, signing: tuple[Path, Path], cli) -> None:  # noqa: ANN001, N802
    assert cli("plan", "-o", "plan.bin", "--sign-key", str(signing[0])).code == 0
    shown = cli("show", "plan.bin")
    assert "signed by Ed25519 key sha256:" in shown.err
    result = cli("apply", "plan.bin")
    assert result.code == 0, result.err


def test_unsigned_or_wrongly_signed_plans_are_refused(example: Path, signing: tuple[Path, Path], cli) -> None:  # noqa: ANN001
    assert cli("plan", "-o", "unsigned.bin").code == 0
    refused(cli, example, "unsigned.bin", "the plan is not signed")
    other = signing[0].parent / "other.key"
    assert cli("plan", "-o", "other.bin", "--sign-key", str(other)).code == 0
    refused(cli, example, "other.bin", "not by the planSigning key")
    assert cli("plan", "-o", "signed.bin", "--sign-key", str(signing[0])).code == 0
    data = bytearray((example / "signed.bin").read_bytes())
    data[-1] ^= 0x01  # the signature itself
    (example / "forged.bin").write_bytes(bytes(data))
    refused(cli, example, "forged.bin", "signature is not valid")
    data = bytearray((example / "signed.bin").read_bytes())
    data[20] ^= 0x01  # the signed content
    (example / "tampered.bin").write_bytes(bytes(data))
    refused(cli, example, "tampered.bin", "has been modified")


def test_a_signed_plan_decodes_and_names_its_signer(planned: Path) -> None:
    from trustplan.formats.planfile import encode, key_fingerprint, load_signing_key, signer

    private, public = _keypair(planned, "k")
    saved = planfile.decode((planned / "plan.bin").read_bytes(), "plan.bin")
    assert saved.signer is None
    data = encode(saved, load_signing_key(private))
    raw = signer(data)
    assert raw is not None and key_fingerprint(raw).startswith("sha256:")
    signed = planfile.decode(data, "signed.bin")
    assert signed.signer == key_fingerprint(raw)
    assert (signed.plan, signed.bindings, signed.outputs, signed.rollout) == (
        saved.plan, saved.bindings, saved.outputs, saved.rollout)
    assert signer(encode(saved)) is None

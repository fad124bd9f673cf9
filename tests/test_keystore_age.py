"""The age-encrypted keystore: keys round-trip through plan and apply, no CA key is written in
plaintext anywhere, the identity is needed only to decrypt, and `keystore rekey` adds and removes
recipients (and encrypts keys left in plaintext from before)."""

from __future__ import annotations

import base64
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from kubeapi import run
from simharness import SimProcess

from trustplan.formats.keystore import Keystore
from trustplan.formats.keystore_age import AgeSealer
from trustplan.talos import pki


def identity() -> tuple[str, str]:
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def encrypt_keystore(desired: Path, *recipients: str) -> None:
    text = desired.read_text().replace("secrets: secrets.yaml\n", "")
    listed = ", ".join(recipients)
    desired.write_text(text.replace("keystore: .trustplan/keys\n",
                                    f"keystore: {{path: .trustplan/keys, age: {{recipients: [{listed}]}}}}\n"))


def key_forms(key: pki.PrivateKey) -> list[bytes]:
    """Every way a CA key could end up in a file: PEM (both encodings), base64 of PEM, raw DER."""
    pems = [pki.key_to_pem(key), pki.key_to_pkcs8_pem(key)]
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return [*pems, *(base64.b64encode(p) for p in pems), der]


def test_encrypted_keystore_round_trips_and_writes_no_plaintext_key(tmp_path: Path) -> None:
    secret, recipient = identity()
    scratch = tmp_path / "tmp"  # the CLI's temp files land here, so they are searched too
    scratch.mkdir()
    with SimProcess(tmp_path / "sim") as sim:
        encrypt_keystore(sim.dir / "trustplan.yaml", recipient)
        env = {"TMPDIR": str(scratch)}
        planned = run(["plan", "-o", "plan.bin"], sim.dir, env)  # minting needs the recipients only
        assert planned.returncode == 0, planned.stderr
        refused = run(["apply", "plan.bin"], sim.dir, env)
        assert refused.returncode == 1
        assert "keystore.age: no identity to decrypt the CA keys with" in refused.stderr
        assert "TRUSTPLAN_AGE_IDENTITY" in refused.stderr
        applied = run(["apply", "plan.bin"], sim.dir, {**env, "TRUSTPLAN_AGE_IDENTITY": secret})
        assert applied.returncode == 0, applied.stderr
        checked = run(["keystore", "check"], sim.dir, {"TRUSTPLAN_AGE_IDENTITY": secret})
        assert checked.returncode == 0 and "open and match their certificates" in checked.stdout
    keys_dir = sim.dir / ".trustplan" / "keys"
    names = sorted(p.name for p in keys_dir.iterdir())
    assert [n for n in names if n.endswith(".key")] == []
    sealed = [p for p in keys_dir.iterdir() if p.name.endswith(".key.age")]
    assert len(sealed) == 1 and all(p.stat().st_mode & 0o777 == 0o600 for p in sealed)
    store = Keystore(keys_dir, AgeSealer([recipient], None, "test"))
    store.sealer._identities = [pyrage.x25519.Identity.from_str(secret)]  # type: ignore[union-attr]
    _, key = store.load("sha256:" + sealed[0].name.split(".")[0])
    forms = key_forms(key)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(form in data for form in forms), f"{path} holds the CA key in plaintext"


def test_rekey_adds_and_removes_recipients(example: Path) -> None:
    (secret1, r1), (secret2, r2) = identity(), identity()
    desired = example / "trustplan.yaml"
    encrypt_keystore(desired, r1)
    assert run(["plan", "-o", "plan.bin"], example).returncode == 0
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2}).returncode == 1

    encrypt_keystore_text = desired.read_text()
    desired.write_text(encrypt_keystore_text.replace(f"recipients: [{r1}]", f"recipients: [{r1}, {r2}]"))
    added = run(["keystore", "rekey"], example, {"TRUSTPLAN_AGE_IDENTITY": secret1})
    assert added.returncode == 0 and "Encrypted 2 CA key(s)" in added.stdout and "to 2 recipient(s)" in added.stdout
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2}).returncode == 0

    desired.write_text(desired.read_text().replace(f"recipients: [{r1}, {r2}]", f"recipients: [{r2}]"))
    removed = run(["keystore", "rekey"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2})
    assert removed.returncode == 0, removed.stderr
    gone = run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret1})
    assert gone.returncode == 1 and "cannot decrypt this key with the age identity" in gone.stderr
    assert "AGE-SECRET-KEY" not in gone.stderr + gone.stdout


def test_rekey_encrypts_a_plaintext_keystore_and_removes_the_plaintext(example: Path) -> None:
    secret, recipient = identity()
    desired = example / "trustplan.yaml"
    desired.write_text(desired.read_text().replace("secrets: secrets.yaml\n", ""))
    assert run(["plan", "-o", "plan.bin"], example).returncode == 0  # plaintext keys, as before
    keys_dir = example / ".trustplan" / "keys"
    assert len(list(keys_dir.glob("*.key"))) == 2
    encrypt_keystore(desired, recipient)
    env = {"TRUSTPLAN_AGE_IDENTITY": secret}
    before = run(["keystore", "check"], example, env)
    assert before.returncode == 1 and "stored in plaintext, and keystore encryption is on" in before.stderr
    assert run(["keystore", "rekey"], example, env).returncode == 0
    assert list(keys_dir.glob("*.key")) == [] and len(list(keys_dir.glob("*.key.age"))) == 2
    assert run(["keystore", "check"], example, env).returncode == 0
    replanned = run(["plan", "-o", "plan.bin"], example, env)  # the same CAs, not new ones
    assert replanned.returncode == 0 and len(list(keys_dir.glob("*.key.age"))) == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("keystore: .trustplan/keys\n", "keystore: {age: {recipients: [age1nope]}}\n"),
         "keystore.age.recipients[0]: 'age1nope' is not an age public key"),
        (lambda t: t.replace("keystore: .trustplan/keys\n",
                             "keystore: {age: {recipients: [" + identity()[1] + "]}}\n"),
         "secrets: secrets.yaml holds CA keys in plaintext, and keystore.age is on"),
    ],
)
def test_bad_encryption_settings_are_one_clear_error(example: Path, edit, message: str) -> None:  # noqa: ANN001
    desired = example / "trustplan.yaml"
    desired.write_text(edit(desired.read_text()))
    result = run(["plan"], example)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def _two_recipient_sets(example: Path) -> tuple[str, str]:
    """A keystore of two keys sealed to identity 1; trustplan.yaml now lists identity 2 alone."""
    (secret1, r1), (secret2, r2) = identity(), identity()
    desired = example / "trustplan.yaml"
    encrypt_keystore(desired, r1)
    assert run(["plan", "-o", "plan.bin"], example).returncode == 0
    desired.write_text(desired.read_text().replace(f"recipients: [{r1}]", f"recipients: [{r2}]"))
    return secret1, secret2


def test_a_rekey_killed_among_its_keys_leaves_the_old_keystore_whole_and_is_resumed(
    example: Path, cli, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """Issue 20, finding 7: stopped after one key was re-encrypted, the keystore used to hold keys under
    two recipient sets, which neither identity alone could read. Now the old one is untouched until the
    new one is complete, and the next rekey finishes the job."""
    import trustplan.cli.keystore as cli_keystore
    import trustplan.formats.keystore as formats_keystore
    from trustplan.system import atomic

    secret1, secret2 = _two_recipient_sets(example)
    sealed = []

    def killed_at_the_second_key(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name.endswith(".key.age"):
            sealed.append(path)
            if len(sealed) == 2:
                raise KeyboardInterrupt  # as abrupt as a kill: no code of rekey runs after it
        atomic.write_atomic(path, data, mode=mode)

    for module in (cli_keystore, formats_keystore):
        monkeypatch.setattr(module, "write_atomic", killed_at_the_second_key, raising=False)
    monkeypatch.setenv("TRUSTPLAN_AGE_IDENTITY", secret1)
    assert cli("keystore", "rekey").code == 130
    monkeypatch.undo()
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret1}).returncode == 0  # whole, old
    resumed = run(["keystore", "rekey"], example, {"TRUSTPLAN_AGE_IDENTITY": secret1})
    assert resumed.returncode == 0, resumed.stderr
    assert "removed the partial re-encryption a stopped `keystore rekey` left" in resumed.stderr
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2}).returncode == 0  # whole, new
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret1}).returncode == 1
    assert sorted(p.name for p in (example / ".trustplan").iterdir()) == ["keys"]


def test_a_rekey_killed_between_its_renames_is_named_and_finished(
    example: Path, cli, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    import trustplan.formats.keystore as formats_keystore

    secret1, secret2 = _two_recipient_sets(example)
    renames = []
    real = formats_keystore.os.rename

    def killed_after_the_first_rename(src: Path, dst: Path) -> None:
        renames.append(src)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(formats_keystore.os, "rename", killed_after_the_first_rename)
    monkeypatch.setenv("TRUSTPLAN_AGE_IDENTITY", secret1)
    assert cli("keystore", "rekey").code == 130
    monkeypatch.undo()
    stopped = run(["plan"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2})  # never an empty keystore: new CAs
    assert stopped.returncode == 1 and "a `trustplan keystore rekey` was stopped" in stopped.stderr
    assert "run `trustplan keystore rekey` again" in stopped.stderr
    finished = run(["keystore", "rekey"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2})
    assert finished.returncode == 0, finished.stderr
    assert "finished the re-encryption" in finished.stderr
    assert run(["keystore", "check"], example, {"TRUSTPLAN_AGE_IDENTITY": secret2}).returncode == 0
    assert sorted(p.name for p in (example / ".trustplan").iterdir()) == ["keys"]

"""Bad input never crashes: each case is one clear error naming the file and the rule, exit 1, no
traceback, and nothing written: the folder is byte-identical, not even a state lock file is left."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CAFiles, copy_example, snapshot
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from test_desired import assert_nothing_written

from trustplan.talos import certgen, pki

BOMB = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)
]


def _append(text: str) -> Callable[[Path, CAFiles], None]:
    def change(root: Path, _: CAFiles) -> None:
        path = root / "trustplan.yaml"
        path.write_text(path.read_text() + text)

    return change


def _replace(old: str, new: str, file: str = "trustplan.yaml") -> Callable[[Path, CAFiles], None]:
    def change(root: Path, _: CAFiles) -> None:
        path = root / file
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))

    return change


def _to_secrets(text: str) -> Callable[[Path, CAFiles], None]:
    return _to_secrets_bytes(text.encode())


def _to_secrets_bytes(data: bytes) -> Callable[[Path, CAFiles], None]:
    def change(root: Path, _: CAFiles) -> None:
        path = root / "secrets.yaml"
        path.write_bytes(path.read_bytes() + data)

    return change


def _fifo(root: Path, _: CAFiles) -> None:
    (root / "nodes" / "cp-1.yaml").unlink()
    os.mkfifo(root / "nodes" / "cp-1.yaml")


def _self_signed_ca(key: rsa.RSAPrivateKey, key_usage: bool) -> x509.Certificate:
    now = pki.utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=900))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if key_usage:
        builder = builder.add_extension(certgen._key_usage(cert_sign=True), critical=True)
    return builder.sign(key, hashes.SHA256())


def _import(kind: str) -> Callable[[Path, CAFiles], None]:
    def change(root: Path, ca: CAFiles) -> None:
        if kind == "rsa-1024":
            key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            crt, key_pem = pki.cert_to_pem(_self_signed_ca(key, True)), pki.key_to_pem(key)
        elif kind == "no-key-usage":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            crt, key_pem = pki.cert_to_pem(_self_signed_ca(key, False)), pki.key_to_pem(key)
        else:  # two certificates in one file
            crt, key_pem = ca.talos_crt + ca.kube_crt, ca.talos_key
        (root / "ca.crt").write_bytes(crt)
        (root / "ca.key").write_bytes(key_pem)
        _replace("talos-2026: {generate: {algorithm: ed25519}}",
                 "talos-2026: {certificate: ca.crt, key: ca.key}")(root, ca)

    return change


CASES = [
    ("duplicate-top-level-key", _append("trust:\n  talos: {issuer: talos-2026}\n"),
     "trustplan.yaml:26: malformed YAML: found duplicate key 'trust' (a key may appear once in a mapping)"),
    ("duplicate-nested-key", _replace("  name: demo\n", "  name: demo\n  name: other\n"),
     "trustplan.yaml:7: malformed YAML: found duplicate key 'name'"),
    ("alias-bomb", _append("\n".join(BOMB) + "\n"),
     "YAML refused: expands to more than 200000 values through its aliases"),
    ("too-many-aliases", _append("x: &x 1\ny: [" + ",".join(["*x"] * 101) + "]\n"),
     "YAML refused: more than 100 YAML aliases"),
    ("deep-nesting", _append("deep: " + "[" * 100 + "]" * 100 + "\n"),
     "YAML refused: nested more than 64 levels deep"),
    ("deeper-nesting", _append("deep: " + "[" * 50000 + "]" * 50000 + "\n"), "trustplan.yaml:26: malformed YAML"),
    ("machine-config-duplicate-key", _replace("version: v1alpha1\n", "version: v1alpha1\nversion: v1alpha1\n",
                                             "nodes/cp-2.yaml"),
     "nodes/cp-2.yaml:2: malformed YAML: found duplicate key 'version'"),
    ("machine-config-is-dev-zero", _replace("nodes/cp-1.yaml", "/dev/zero"),
     "/dev/zero: machine config file for node 10.5.0.2 is a device; only regular files are read"),
    ("machine-config-is-a-fifo", _fifo,
     "nodes/cp-1.yaml: machine config file for node 10.5.0.2 is a FIFO; only regular files are read"),
    ("machine-config-is-a-directory", _replace("nodes/cp-1.yaml", "nodes"), "is a directory, not a file"),
    ("two-nodes-on-one-file", _replace("10.5.0.3: nodes/cp-2.yaml", "10.5.0.3: nodes/cp-1.yaml"),
     "nodes 10.5.0.2 and 10.5.0.3 map to the same machine config file"),
    ("rsa-1024-ca", _import("rsa-1024"), "ca.crt: RSA key of 1024 bits is too weak for a CA (at least 2048)"),
    ("ca-without-key-usage", _import("no-key-usage"),
     "ca.crt: CA certificate has no keyUsage extension (keyCertSign is required)"),
    ("two-certificates-in-one-file", _import("two-certs"), "ca.crt: holds 2 certificates where one is expected"),
    ("recursive-alias", _append("a: &a [*a]\n"),
     "trustplan.yaml:26: YAML refused: the alias *a is inside the collection it names (a recursive alias)"),
    ("secrets-duplicate-key", _to_secrets("cluster:\n  id: other\n"),
     "secrets.yaml:24: malformed YAML: found duplicate key 'cluster'"),
    ("secrets-bad-utf8", _to_secrets_bytes(b"note: \xff\xfe\n"),
     "secrets.yaml: malformed YAML: unacceptable character #x00ff"),
    ("secrets-too-deep", _to_secrets("deep: " + "[" * 100 + "]" * 100 + "\n"),
     "secrets.yaml:24: YAML refused: nested more than 64 levels deep"),
    ("keystore-under-a-file", _replace("keystore: .trustplan/keys", "keystore: secrets.yaml/keys"),
     "secrets.yaml/keys/index.json: unreadable keystore index (Not a directory)"),
    ("state-under-a-file", _replace("state: trustplan.state.json", "state: secrets.yaml/state.json"),
     "secrets.yaml: exists and is not a folder"),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_clear_error(
    example: Path, ca_files: CAFiles, cli, change, expected: str  # noqa: ANN001
) -> None:
    change(example, ca_files)
    before = snapshot(example) if not (example / "nodes" / "cp-1.yaml").is_fifo() else None
    result = cli("plan", "-o", "plan.bin")
    assert result.code == 1, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.err
    assert expected in errors[0], errors[0]
    assert not (example / "plan.bin").exists()
    assert not (example / ".trustplan").exists()  # no CA minted into the keystore
    if before is not None:
        assert_nothing_written(before, example)


@pytest.mark.parametrize("args, code, expected", [
    (["plan", "-o", "nodes"], 2, "Invalid value for --out: nodes is a directory; give the plan file's path"),
    (["plan", "-o", "secrets.yaml/plan.bin"], 1,
     "secrets.yaml/plan.bin: cannot write the plan file: secrets.yaml is not a folder"),
    (["plan", "--format", "markdown", "--split-dir", "secrets.yaml"], 2,
     "Invalid value for --split-dir: secrets.yaml exists and is not a directory"),
    (["show", "plan.bin", "--format", "markdown", "--split-dir", "secrets.yaml"], 2,
     "Invalid value for --split-dir: secrets.yaml exists and is not a directory"),
    (["show", "nodes"], 1, "nodes: plan file is a directory, not a file"),
    (["apply", "nodes"], 1, "nodes: plan file is a directory, not a file"),
    (["show", "/dev/zero"], 1, "/dev/zero: plan file is a device; only regular files are read"),
    (["plan", "--expires-in", "99999999999d"], 2,
     "Invalid value for --expires-in: duration '99999999999d' is too long (at most 366d)"),
    (["plan", "--lock-timeout", "99999999999999999999999d"], 2,
     "duration '99999999999999999999999d' is too long (at most 366d)"),
])
def test_bad_paths_and_durations_on_the_command_line(
    example: Path, cli, args: list[str], code: int, expected: str  # noqa: ANN001
) -> None:
    """Exit 1 for a refused input, 2 for a bad command line (usage shown); one error line either way."""
    assert cli("plan", "-o", "plan.bin").code == 0
    before = snapshot(example)
    result = cli(*args)
    assert result.code == code, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.err
    assert ("Usage: trustplan " in result.err) == (code == 2)
    assert snapshot(example) == before


def test_an_unwritable_output_is_refused_before_any_node_changes(example: Path, cli) -> None:  # noqa: ANN001
    _replace("talosconfig: talosconfig", "talosconfig: secrets.yaml/talosconfig")(example, None)  # type: ignore[arg-type]
    assert cli("plan", "-o", "plan.bin").code == 0
    before = snapshot(example)
    result = cli("apply", "plan.bin")
    assert result.code == 1
    assert "secrets.yaml/talosconfig: cannot write the talosconfig output: secrets.yaml is not a folder" in result.err
    assert snapshot(example) == before


def test_a_broken_secrets_file_is_refused_before_any_node_changes(example: Path, cli) -> None:  # noqa: ANN001
    assert cli("plan", "-o", "plan.bin").code == 0
    (example / "secrets.yaml").write_text("certs: [1, 2]\n")
    before = snapshot(example)
    result = cli("apply", "plan.bin")
    assert result.code == 1
    assert "secrets.yaml: certs: not a Talos secrets bundle" in result.err
    assert snapshot(example) == before


def test_an_alias_bomb_is_refused_under_a_1_gb_address_space_limit(tmp_path: Path) -> None:
    """The example CI runs `plan` on every pull request: a 1 KB trustplan.yaml must not take it down."""
    root = copy_example(tmp_path / "cluster")
    (root / "trustplan.yaml").write_text((root / "trustplan.yaml").read_text() + "\n".join(BOMB) + "\n")
    before = snapshot(root)
    result = subprocess.run(
        ["sh", "-c", f"ulimit -v 1000000 && exec {sys.executable} -m trustplan plan -o plan.bin"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert result.stderr.startswith("Error: trustplan.yaml:")
    assert "YAML refused: expands to more than 200000 values through its aliases (*name)" in result.stderr
    assert snapshot(root) == before


#: one case of each kind (YAML syntax, a special file, a weak CA, a bad path in the desired state):
#: in-process tests see the message and exit code, only a real process shows that no traceback escapes
REAL_PROCESS = ["duplicate-top-level-key", "machine-config-is-dev-zero", "rsa-1024-ca", "state-under-a-file",
                "recursive-alias", "secrets-duplicate-key", "secrets-bad-utf8"]


@pytest.mark.parametrize("case", ["secrets-duplicate-key", "secrets-bad-utf8", "secrets-too-deep", "recursive-alias"])
def test_validate_checks_secrets_yaml_as_plan_reads_it(
    example: Path, ca_files: CAFiles, cli, case: str  # noqa: ANN001
) -> None:
    """`validate` used to call a secrets.yaml with duplicate keys valid, which plan then refused."""
    _, change, expected = next(c for c in CASES if c[0] == case)
    change(example, ca_files)
    before = snapshot(example)
    result = cli("validate")
    assert result.code == 1, result.out + result.err
    assert [line for line in result.err.splitlines() if line.startswith("Error: ")] == [f"Error: {expected}"] or (
        expected in result.err and result.err.count("Error: ") == 1), result.err
    assert snapshot(example) == before


def _encrypted_and_planned(root: Path) -> Path:
    """The example with an age-encrypted keystore and a saved plan (its new CA keys sealed);
    returns the identity file keystore.age.identity names."""
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    identity = root / "identity.txt"
    identity.write_text(str(ident) + "\n")
    desired = root / "trustplan.yaml"
    desired.write_text(desired.read_text().replace("secrets: secrets.yaml\n", "").replace(
        "keystore: .trustplan/keys\n",
        f"keystore: {{path: .trustplan/keys, age: {{recipients: [{ident.to_public()}], identity: identity.txt}}}}\n"))
    planned = subprocess.run([sys.executable, "-m", "trustplan", "plan", "-o", "plan.bin"], cwd=root,
                             capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    return identity


def _non_utf8(identity: Path) -> None:
    identity.write_bytes(identity.read_bytes().replace(b"AGE-SECRET-KEY-1", b"AGE-SECRET-KEY-\xff", 1))


def _fifo_identity(identity: Path) -> None:
    identity.unlink()
    os.mkfifo(identity)


@pytest.mark.parametrize("change, expected", [
    (_non_utf8, "identity.txt: the age identity file is not UTF-8 text (an invalid byte at offset 15)"),
    (_fifo_identity, "identity.txt: age identity file is a FIFO; only regular files are read"),
], ids=["non-utf8-identity", "fifo-identity"])
def test_a_bad_age_identity_is_one_error_and_never_waited_on(
    tmp_path: Path, change: Callable[[Path], None], expected: str
) -> None:
    """A FIFO used to hang apply forever while it held the state lock; a non-UTF-8 byte raised
    UnicodeDecodeError. Now: one error, exit 1, nothing written, and the key's bytes never echoed."""
    root = copy_example(tmp_path / "cluster")
    identity = _encrypted_and_planned(root)
    change(identity)
    before = {k: v for k, v in snapshot(root).items() if k != "identity.txt"}
    result = subprocess.run([sys.executable, "-m", "trustplan", "apply", "plan.bin"], cwd=root,
                            capture_output=True, text=True, timeout=60)  # a hang fails here
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not re.search(r"AGE-SECRET-KEY-.[0-9A-Z]{10}", result.stderr)  # the key itself is never echoed
    assert {k: v for k, v in snapshot(root).items() if k != "identity.txt"} == before


@pytest.mark.parametrize("case", REAL_PROCESS)
def test_bad_input_in_a_real_process_prints_one_error_and_no_traceback(
    tmp_path: Path, ca_files: CAFiles, case: str
) -> None:
    _, change, expected = next(c for c in CASES if c[0] == case)
    root = copy_example(tmp_path / "cluster")
    change(root, ca_files)
    before = snapshot(root)
    result = subprocess.run([sys.executable, "-m", "trustplan", "plan", "-o", "plan.bin"],
                            cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("Error: ")] == [
        next(line for line in result.stderr.splitlines() if expected in line)
    ]
    assert result.stdout == ""
    assert_nothing_written(before, root)


@pytest.mark.parametrize("endpoint, expected", [
    ("127.0.0.1\x00evil", "'127.0.0.1\\x00evil' is not an IP address or a host name"),
    ("xn--zz.example", "'xn--zz.example' is not a valid host name (IDNA)"),
    ("a" * 64 + ".example", "is not a valid host name (IDNA)"),
], ids=["nul-byte", "bad-punycode", "label-over-63"])
def test_a_bad_talosconfig_endpoint_is_one_error_in_plan_and_status(
    tmp_path: Path, endpoint: str, expected: str
) -> None:
    """Used to be a traceback from the connection (embedded null byte, UnicodeError from the idna codec)."""
    import yaml
    from simharness import SimProcess

    with SimProcess(tmp_path / "sim") as sim:
        path = sim.dir / "talosconfig"
        doc = yaml.safe_load(path.read_text())
        for context in doc["contexts"].values():
            context["endpoints"] = [endpoint]
        path.write_text(yaml.safe_dump(doc))
        before = snapshot(sim.dir)
        for command in ("plan", "status"):
            result = subprocess.run([sys.executable, "-m", "trustplan", command], cwd=sim.dir,
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 1, result.stderr
            assert "Traceback" not in result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1 and "talosconfig" in errors[0] and expected in errors[0], result.stderr
        assert snapshot(sim.dir) == before

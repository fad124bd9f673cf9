"""Bad input: one clear error naming the file (and the YAML path and line where there is one) and
the rule, exit code 1, no traceback, and not a byte written anywhere.

Each case edits a scratch copy of examples/files, snapshots the tree, runs the CLI, and compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CAFiles, snapshot


def edit(path: str, old: str, new: str, count: int = 1) -> Callable[[Path, CAFiles], None]:
    def do(root: Path, _: CAFiles) -> None:
        p = root / path
        text = p.read_text()
        assert old in text, f"{old!r} not in {path}"
        p.write_text(text.replace(old, new, count))

    return do


def append(path: str, text: str) -> Callable[[Path, CAFiles], None]:
    def do(root: Path, _: CAFiles) -> None:
        with (root / path).open("a") as f:
            f.write(text)

    return do


GENERATED_TALOS = "talos-2026: {generate: {algorithm: ed25519}}"


def imported(crt: str, key: str, missing: str | None = None) -> Callable[[Path, CAFiles], None]:
    """Make talos-2026 an imported CA whose files hold the named fixture material."""

    def do(root: Path, cas: CAFiles) -> None:
        (root / "ca").mkdir()
        (root / "ca/talos.crt").write_bytes(getattr(cas, crt) if crt != "garbage" else b"-----BEGIN CERTIFICATE-----\n"
                                            b"not base64!!\n-----END CERTIFICATE-----\n")
        (root / "ca/talos.key").write_bytes(getattr(cas, key))
        if missing:
            (root / missing).unlink()
        edit("trustplan.yaml", GENERATED_TALOS, "talos-2026: {certificate: ca/talos.crt, key: ca/talos.key}")(root, cas)

    return do


def line_of(root: Path, path: str, needle: str) -> int:
    return next(i for i, line in enumerate((root / path).read_text().splitlines(), 1) if needle in line)


# (id, change, expected message after "Error: "; {line:...} is filled from the changed file)
CASES: list[tuple[str, Callable[[Path, CAFiles], None], str]] = [
    (
        "malformed-yaml",
        edit("trustplan.yaml", "trust:\n", "trust: [\n"),
        r"trustplan\.yaml:\d+: malformed YAML: .+",
    ),
    (
        "malformed-machine-config",
        edit("nodes/cp-2.yaml", "  type: controlplane", "  type: [controlplane"),
        r"nodes/cp-2\.yaml:6: malformed YAML: .+",
    ),
    (
        "unknown-key",
        append("trustplan.yaml", "colour: blue\n"),
        r"trustplan\.yaml:{line:colour}: colour: unknown key 'colour' \(allowed here: .*trust.*\)",
    ),
    (
        "unknown-nested-key",
        edit("trustplan.yaml", "algorithm: ed25519}", "algorithm: ed25519, size: 3}"),
        r"trustplan\.yaml:{line:talos-2026}: authorities\.talos-2026\.generate\.size: unknown key 'size' .*",
    ),
    (
        "bad-pem",
        imported("garbage", "talos_key"),
        r"ca/talos\.crt: not a valid PEM certificate \(.+\)",
    ),
    (
        "key-not-matching-cert",
        imported("talos_crt", "kube_key"),
        r"ca/talos\.key: the private key does not match the certificate ca/talos\.crt",
    ),
    (
        "not-a-ca",
        imported("leaf_crt", "leaf_key"),
        r"ca/talos\.crt: certificate is not a CA \(basicConstraints CA:true is missing\)",
    ),
    (
        "expired-ca",
        imported("expired_crt", "expired_key"),
        r"ca/talos\.crt: certificate expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC",
    ),
    (
        "imported-key-file-missing",
        imported("talos_crt", "talos_key", missing="ca/talos.key"),
        r"trustplan\.yaml:{line:talos-2026}: authorities\.talos-2026\.key: file not found: ca/talos\.key",
    ),
    (
        "unknown-authority-name",
        edit("trustplan.yaml", "issuer: talos-2026", "issuer: talos-2027"),
        r"trustplan\.yaml:{line:talos-2027}: trust\.talos\.issuer: unknown authority name 'talos-2027' "
        r"\(known: k8s-2026, talos-2026\)",
    ),
    (
        "authority-in-two-pkis",
        edit("trustplan.yaml", "issuer: k8s-2026", "issuer: talos-2026"),
        r"trustplan\.yaml:{line:kubernetes:}: trust\.kubernetes\.issuer: authority 'talos-2026' is already used by "
        r"the talos PKI; a CA serves one PKI",
    ),
    (
        "sha256-ref-not-on-any-node",
        edit("trustplan.yaml", "issuer: talos-2026", "issuer: sha256:" + "0" * 64),
        r"trustplan\.yaml:{line:sha256:}: trust\.talos\.issuer: sha256:0{64} is not a CA on any node",
    ),
    (
        "role-contradicts-machine-type",
        edit(
            "trustplan.yaml",
            "controlplane: [10.5.0.2, 10.5.0.3, 10.5.0.4]\n    worker: [10.5.0.5, 10.5.0.6]",
            "controlplane: [10.5.0.2, 10.5.0.3, 10.5.0.4, 10.5.0.6]\n    worker: [10.5.0.5]",
        ),
        r"trustplan\.yaml:{line:controlplane: [}: cluster\.nodes\.controlplane\[3\]: node 10\.5\.0\.6 is listed "
        r"under cluster\.nodes\.controlplane but its machine config says machine\.type: worker",
    ),
    (
        "missing-machine-config",
        edit("trustplan.yaml", "nodes/cp-3.yaml", "nodes/cp-9.yaml"),
        r"nodes/cp-9\.yaml: machine config file for node 10\.5\.0\.4 not found",
    ),
    (
        "unknown-node-in-cluster-nodes",
        edit("trustplan.yaml", "worker: [10.5.0.5, 10.5.0.6]", "worker: [10.5.0.5, 10.5.0.6, 10.5.0.9]"),
        r"trustplan\.yaml:{line:worker: [}: cluster\.nodes\.worker\[2\]: unknown node 10\.5\.0\.9: it has no entry "
        r"in cluster\.machineConfigs",
    ),
    (
        "machine-config-not-base64",
        edit("nodes/worker-2.yaml", "    crt: LS0t", "    crt: ~~LS0t"),
        r"nodes/worker-2\.yaml: machine\.ca\.crt: not valid base64 \(.+\)",
    ),
    (
        "kube-apiserver-ca-in-both-layouts",
        append("nodes/worker-1.yaml", "---\napiVersion: v1alpha1\nkind: KubeAPIServerCAConfig\n"),
        r"nodes/worker-1\.yaml: cluster\.ca: kube-apiserver CA is set both in the v1alpha1 config \(\.cluster\.ca\) "
        r"and in a KubeAPIServerCAConfig document",
    ),
]


def _expected(pattern: str, root: Path) -> str:
    def fill(m: re.Match[str]) -> str:
        return str(line_of(root, "trustplan.yaml", m.group(1)))

    return re.sub(r"\{line:(.+?)\}", fill, pattern)


def assert_nothing_written(before: dict[str, tuple[int, bytes]], root: Path) -> None:
    # byte-identical: not even an empty state lock file is left behind (issue 20, finding 12)
    assert snapshot(root) == before


def assert_one_error(result, pattern: str) -> None:  # noqa: ANN001
    assert result.code == 1, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.err
    assert re.fullmatch(pattern, errors[0].removeprefix("Error: ")), errors[0]
    assert result.out == ""


@pytest.mark.parametrize("change, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_writes_nothing(
    example: Path, ca_files: CAFiles, cli, change, pattern: str  # noqa: ANN001
) -> None:
    change(example, ca_files)
    pattern = _expected(pattern, example)
    before = snapshot(example)
    result = cli("plan", "-o", "plan.bin", "--detailed-exitcode")
    assert_one_error(result, pattern)
    assert_nothing_written(before, example)


OFFLINE = {"malformed-yaml", "unknown-key", "unknown-nested-key", "bad-pem", "key-not-matching-cert", "not-a-ca",
           "expired-ca", "imported-key-file-missing", "unknown-authority-name", "authority-in-two-pkis",
           "unknown-node-in-cluster-nodes"}


@pytest.mark.parametrize("change, pattern", [c[1:] for c in CASES if c[0] in OFFLINE],
                         ids=[c[0] for c in CASES if c[0] in OFFLINE])
def test_validate_reports_the_same_error_offline(
    example: Path, ca_files: CAFiles, cli, change, pattern: str  # noqa: ANN001
) -> None:
    change(example, ca_files)
    pattern = _expected(pattern, example)
    before = snapshot(example)
    assert_one_error(cli("validate"), pattern)
    assert_nothing_written(before, example)


def test_missing_desired_state_file(example: Path, cli) -> None:  # noqa: ANN001
    before = snapshot(example)
    result = cli("plan", "-c", "nope.yaml")
    assert_one_error(result, r"nope\.yaml: file not found")
    assert "trustplan init" in result.err  # the hint says what to do
    assert_nothing_written(before, example)


def test_the_example_itself_is_valid(example: Path, cli) -> None:  # noqa: ANN001
    result = cli("validate")
    assert result.code == 0, result.err
    assert result.out == "trustplan.yaml: valid (files provider, 5 nodes, managing talos, kubernetes)\n"


def test_imported_ca_is_accepted_and_planned(example: Path, ca_files: CAFiles, cli) -> None:  # noqa: ANN001
    imported("talos_crt", "talos_key")(example, ca_files)
    result = cli("plan", "--detailed-exitcode")
    assert result.code == 2, result.err
    assert "talos-2026  Talos API CA, ed25519, O=talos" in result.out
    assert "(import)" in result.out


def test_kubernetes_api_endpoints_default_and_override(tmp_path: Path) -> None:
    from trustplan.errors import SchemaError
    from trustplan.formats import desired as desired_mod

    base = (
        "version: v1alpha1\ncluster:\n  name: c\n  talosconfig: talosconfig\n"
        "  nodes: {controlplane: [10.5.0.2, 10.5.0.3], worker: [10.5.0.5]}\n{extra}"
        "authorities: {k: {generate: {}}}\ntrust: {kubernetes: {issuer: k}}\n"
    )
    path = tmp_path / "trustplan.yaml"
    path.write_text(base.replace("{extra}", ""))
    d = desired_mod.load(path)
    assert d.kube_servers(["10.5.0.2", "10.5.0.3"]) == ["https://10.5.0.2:6443", "https://10.5.0.3:6443"]
    path.write_text(base.replace("{extra}", "  kubernetes: {port: 7443}\n"))
    assert desired_mod.load(path).kube_servers(["10.5.0.2"]) == ["https://10.5.0.2:7443"]
    path.write_text(base.replace("{extra}", "  kubernetes: {endpoints: ['https://lb.example:6443']}\n"))
    assert desired_mod.load(path).kube_servers(["10.5.0.2"]) == ["https://lb.example:6443"]
    path.write_text(base.replace("{extra}", "  kubernetes: {endpoints: ['http://plain:6443']}\n"))
    with pytest.raises(SchemaError, match=r"cluster\.kubernetes\.endpoints\[0\]"):
        desired_mod.load(path)

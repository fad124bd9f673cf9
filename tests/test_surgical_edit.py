"""Surgical config edits: a CA rotation on commented machine configs changes the CA lines and nothing
else (issue 14, item 1).

The fixtures: tests/fixtures/talosctl holds a control plane and a worker written by the real
`talosctl gen config` v1.12.1 (docs and examples included; generate.sh regenerates them);
tests/fixtures/configs (made by generate.py from its templates) has configs shaped as
`talosctl gen config` writes them, with doc comments and commented-out examples, a Talos 1.14-style
worker with a KubeAPIServerCAConfig document, and a control plane edited by hand with odd indentation,
quoting, flow collections and comments between the CA lines.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, snapshot

from trustplan.talos import machineconfig, pki, yamledit
from trustplan.talos.machineconfig import CAFields

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
TALOSCTL = Path(__file__).parent / "fixtures" / "talosctl"  # written by the real talosctl v1.12.1
NODES = ("cp-1", "cp-2", "worker-1", "worker-2")


def ca_lines(text: str) -> set[int]:
    """Line numbers (0-based) of the CA fields, found by parsing: `machine`/`cluster` `ca` and
    `acceptedCAs` in the v1alpha1 document, `issuingCA` and `acceptedCAs` in a KubeAPIServerCAConfig."""
    lines: set[int] = set()
    offset = 0
    for chunk in machineconfig._split_documents(text):
        base = text.index(chunk, offset)
        offset = base + len(chunk)
        root = yamledit.compose(chunk)
        boxes: list[tuple[yaml.Node, tuple[str, ...]]] = []
        version, kind = yamledit.get(root, "version"), yamledit.get(root, "kind")
        if version and version[1].value == "v1alpha1":
            sections = [yamledit.get(root, s) for s in ("machine", "cluster")]
            boxes = [(pair[1], ("ca", "acceptedCAs")) for pair in sections if pair]
        elif kind and kind[1].value == machineconfig.KUBE_CA_DOC_KIND:
            boxes = [(root, ("issuingCA", "acceptedCAs"))]
        for box, keys in boxes:
            for key in keys:
                pair = yamledit.get(box, key)
                if pair is None:
                    continue
                first = text.count("\n", 0, base + pair[0].start_mark.index)
                last = text.count("\n", 0, base + yamledit.node_end(chunk, pair[1]) - 1)
                lines.update(range(first, last + 1))
    return lines


def non_ca_lines(text: str) -> list[str]:
    ca = ca_lines(text)
    return [line for i, line in enumerate(text.splitlines(keepends=True)) if i not in ca]


def changed_lines(old: str, new: str) -> list[str]:
    return [
        d for d in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if d[:1] in "+-" and not d.startswith(("+++", "---"))
    ]


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, bytes]], list[str]]:
    """The fixture cluster taken through `plan -o plan.bin` and `apply plan.bin` (both CAs rotated),
    with every intermediate config the files provider wrote."""
    root = tmp_path_factory.mktemp("gitops") / "cluster"
    shutil.copytree(FIXTURES, root)
    before = snapshot(root)
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    applied = run_cli(root, "apply", "plan.bin")
    assert applied.code == 0, applied.err
    return root, before, [applied.out, applied.err]


@pytest.mark.parametrize("node", NODES)
def test_rotation_changes_only_ca_lines(rotated, node: str) -> None:
    root, before, _ = rotated
    old = before[f"nodes/{node}.yaml"][1].decode()
    new = (root / "nodes" / f"{node}.yaml").read_text()
    assert new != old
    assert non_ca_lines(new) == non_ca_lines(old)  # every comment, key, blank line, separator, byte
    # and the CA fields now hold the new CAs only
    cfg = machineconfig.parse(new.encode(), node)
    state_cas = {pki.CACert.from_pem(cfg.ca_fields(p).issuer or b"", node).fingerprint for p in ("talos", "kubernetes")}
    assert len(state_cas) == 2 and all(not cfg.ca_fields(p).accepted for p in ("talos", "kubernetes"))


def test_talosctl_control_plane_diff_is_the_four_ca_lines(rotated) -> None:
    root, before, _ = rotated
    old = before["nodes/cp-1.yaml"][1].decode()
    diff = changed_lines(old, (root / "nodes/cp-1.yaml").read_text())
    assert len(diff) == 8  # 4 lines out, 4 lines in: machine.ca crt/key, cluster.ca crt/key
    assert {d.split(":")[0].strip("+- ") for d in diff} == {"crt", "key"}
    assert len(old) > 15000 and old.count("\n#") + old.count("    #") > 100  # the docs and examples are there


def test_hand_edited_config_keeps_quoting_and_comments(rotated) -> None:
    root, _, _ = rotated
    new = (root / "nodes/cp-2.yaml").read_text()
    assert '         crt: "LS0t' in new and "         key: 'LS0t" in new  # the quoting style of each value
    assert "   acceptedCAs: []   # none yet\n" in new  # emptied, its comment kept
    assert "   # the 2024 CA, still accepted while old talosconfigs are phased out\n" in new
    assert new.endswith("... # explicit document end, then a trailing comment\n")


def _fields(cfg: machineconfig.MachineConfig, pki_name: str) -> CAFields:
    return cfg.ca_fields(pki_name)  # type: ignore[arg-type]


def test_accept_inserts_in_the_documents_own_style(ca_files) -> None:
    """talosctl indents sequences 4 past their key: a new acceptedCAs follows the ca block that way,
    before the comment that introduces the next key."""
    data = (FIXTURES / "nodes/cp-1.yaml").read_bytes()
    cfg = machineconfig.parse(data, "cp-1")
    f = _fields(cfg, "talos")
    new = cfg.with_ca_fields({"talos": CAFields(f.issuer, f.issuer_key, (ca_files.talos_crt,))}).decode()
    b64 = pki.b64encode_pem(ca_files.talos_crt)
    assert changed_lines(data.decode(), new) == ["+    acceptedCAs:", f"+        - crt: {b64}"]
    assert f"        - crt: {b64}\n    # Extra certificate subject alternative names" in new


def test_existing_entries_keep_their_bytes_when_a_ca_is_added_and_moved(ca_files) -> None:
    data = (FIXTURES / "nodes/cp-2.yaml").read_bytes()
    cfg = machineconfig.parse(data, "cp-2")
    f = _fields(cfg, "talos")
    old_entry = next(line for line in data.decode().splitlines() if line.startswith("   -   crt: "))
    # swap-like: the issuer moves to the front of acceptedCAs, a new CA is appended after the old one
    new = cfg.with_ca_fields(
        {"talos": CAFields(f.issuer, f.issuer_key, (f.issuer or b"", *f.accepted, ca_files.talos_crt))}
    ).decode()
    assert old_entry in new.splitlines()  # the 2024 entry with its `# 2024` comment, byte for byte
    assert non_ca_lines(new) == non_ca_lines(data.decode())
    after = machineconfig.parse(new.encode(), "cp-2")
    assert _fields(after, "talos").accepted == (f.issuer, *f.accepted, ca_files.talos_crt)


def test_kube_ca_document_edited_as_literal_blocks(ca_files) -> None:
    data = (FIXTURES / "nodes/worker-2.yaml").read_bytes()
    cfg = machineconfig.parse(data, "worker-2")
    f = _fields(cfg, "kubernetes")
    new = cfg.with_ca_fields({"kubernetes": CAFields(f.issuer, None, (ca_files.kube_crt,))}).decode()
    added = changed_lines(data.decode(), new)
    assert added[0] == "+    - |" and all(line.startswith("+        ") for line in added[1:])
    assert _fields(machineconfig.parse(new.encode(), "w"), "kubernetes").accepted == (ca_files.kube_crt,)


def test_flow_style_section_falls_back_to_re_encoding(ca_files) -> None:
    """A shape the in-place editor does not handle is re-encoded: same meaning, new layout."""
    b64 = pki.b64encode_pem(ca_files.talos_crt)
    key = pki.b64encode_pem(ca_files.talos_key)
    data = f"version: v1alpha1\nmachine: {{type: controlplane, ca: {{crt: {b64}, key: {key}}}}}\n".encode()
    cfg = machineconfig.parse(data, "flow")
    new = cfg.with_ca_fields({"talos": CAFields(ca_files.talos_crt, ca_files.talos_key, (ca_files.kube_crt,))})
    assert _fields(machineconfig.parse(new, "flow"), "talos").accepted == (ca_files.kube_crt,)


def test_unchanged_fields_leave_the_file_identical() -> None:
    for node in NODES:
        data = (FIXTURES / "nodes" / f"{node}.yaml").read_bytes()
        cfg = machineconfig.parse(data, node)
        assert cfg.with_ca_fields({p: _fields(cfg, p) for p in ("talos", "kubernetes")}) == data


@pytest.fixture(scope="module")
def rotated_talosctl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, bytes]]]:
    root = tmp_path_factory.mktemp("talosctl") / "cluster"
    shutil.copytree(TALOSCTL, root)
    before = snapshot(root)
    assert run_cli(root, "plan", "-o", "plan.bin").code == 0
    applied = run_cli(root, "apply", "plan.bin")
    assert applied.code == 0, applied.err
    return root, before


@pytest.mark.parametrize(("name", "ca_lines_changed"), [("controlplane.yaml", 4), ("worker.yaml", 2)])
def test_real_talosctl_configs_change_only_ca_lines(rotated_talosctl, name: str, ca_lines_changed: int) -> None:
    root, before = rotated_talosctl
    old, new = before[name][1].decode(), (root / name).read_text()
    assert old.startswith("version: v1alpha1 # Indicates the schema used to decode the contents.\n")
    assert non_ca_lines(new) == non_ca_lines(old)
    diff = changed_lines(old, new)
    assert len(diff) == 2 * ca_lines_changed  # the crt (and, on a control plane, key) lines of both CAs
    assert len(new) == len(old) or abs(len(new) - len(old)) < 200  # 25,983 bytes stay ~25,983 bytes


def _pems(ca_files) -> list[bytes]:
    return [ca_files.talos_crt, ca_files.kube_crt, ca_files.expired_crt]


WALKS = [(FIXTURES / "nodes" / f"{n}.yaml", False) for n in NODES]
WALKS += [(TALOSCTL / "controlplane.yaml", False), (TALOSCTL / "worker.yaml", False)]
WALKS += [(FIXTURES / "nodes" / "cp-2.yaml", True), (FIXTURES / "nodes" / "worker-2.yaml", True)]  # CRLF files


@pytest.mark.parametrize(
    ("path", "crlf"), WALKS, ids=[f"{p.parent.parent.name}/{p.name}{'-crlf' if c else ''}" for p, c in WALKS]
)
def test_any_sequence_of_ca_edits_touches_only_ca_lines(path: Path, crlf: bool, ca_files) -> None:
    """Random walks of issuer / key / acceptedCAs changes (adding, dropping, reordering, emptying,
    removing the issuer): every result means exactly what was asked and keeps every other line
    (CRLF files get CRLF in new lines too)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    original = path.read_bytes()
    if crlf:
        original = original.replace(b"\n", b"\r\n")
    base = machineconfig.parse(original, path.name)
    live = {p: _fields(base, p) for p in ("talos", "kubernetes")}
    key = {"talos": ca_files.talos_key, "kubernetes": ca_files.kube_key}
    pems = _pems(ca_files)
    step = st.tuples(
        st.sampled_from(("talos", "kubernetes")),
        st.sampled_from(("keep", "new", "none")),
        st.lists(st.sampled_from(range(len(pems) + 1)), unique=True, max_size=4),
    )

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(step, min_size=1, max_size=4))
    def walk(steps: list[tuple[str, str, list[int]]]) -> None:
        cfg = chain = base  # cfg parsed afresh from each result; chain edited on, from each edit's own parse
        for pki_name, issuer_choice, accepted in steps:
            old = live[pki_name]
            if issuer_choice == "keep":
                issuer, issuer_key = old.issuer, old.issuer_key
            elif issuer_choice == "new":
                issuer = pems[0] if pki_name == "talos" else pems[1]
                issuer_key = key[pki_name] if cfg.role == "controlplane" else None
            else:
                issuer, issuer_key = None, None
            if cfg.role == "worker" and pki_name == "kubernetes" and cfg.kube_ca_layout == "multidoc":
                issuer_key = None
            choices = [old.issuer or pems[2], *pems]
            want = CAFields(issuer, issuer_key, tuple(choices[i] for i in accepted if choices[i] != issuer))
            cfg = machineconfig.parse(cfg.with_ca_fields({pki_name: want}), path.name)
            chain = chain.edited({pki_name: want})
            assert chain.data == cfg.data
            got = _fields(cfg, pki_name)  # type: ignore[arg-type]
            if cfg.role == "worker" and cfg.kube_ca_layout == "multidoc" and pki_name == "kubernetes":
                # a worker keeps its whole trust in acceptedCAs, issuer first
                assert [x for x in (got.issuer, *got.accepted) if x] == [x for x in (want.issuer, *want.accepted) if x]
            else:
                assert got == want
            assert non_ca_lines(cfg.data.decode()) == non_ca_lines(original.decode())
            if crlf:
                assert cfg.data.count(b"\n") == cfg.data.count(b"\r\n")

    walk()


def test_secrets_yaml_changes_only_the_rotated_ca_lines(rotated_talosctl) -> None:
    """apply updates certs.os and certs.k8s of the talosctl secrets.yaml in place."""
    root, before = rotated_talosctl
    old, new = before["secrets.yaml"][1].decode(), (root / "secrets.yaml").read_text()
    diff = changed_lines(old, new)
    assert len(diff) == 8 and {d.split(":")[0].strip("+- ") for d in diff} == {"crt", "key"}
    assert [line for line in new.splitlines() if "crt:" not in line and "key:" not in line] == [
        line for line in old.splitlines() if "crt:" not in line and "key:" not in line
    ]
    doc = yaml.safe_load(new)
    assert pki.b64decode_pem(doc["certs"]["os"]["crt"], "s", "certs.os.crt") != pki.b64decode_pem(
        yaml.safe_load(old)["certs"]["os"]["crt"], "s", "certs.os.crt"
    )
    assert doc["certs"]["etcd"] == yaml.safe_load(old)["certs"]["etcd"]

"""Edit only the CA fields of a machine-config document's text, leaving every other byte as it was.

Two layouts (reference/talos.md §1.2): the v1alpha1 document's `machine.ca` / `machine.acceptedCAs`
and `cluster.ca` / `cluster.acceptedCAs` (base64 of the PEM, `- crt: ...` items), and the Talos 1.14
`KubeAPIServerCAConfig` document's `issuingCA: {cert, key}` / `acceptedCAs` (PEM text as `|` blocks).
A field whose value does not change is not touched; an accepted CA already present keeps its exact
text (Talos compares entries byte for byte); a new entry is written in the document's own style
(indentation step, sequence indentation, quoting of the neighbouring value).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from trustplan.talos import yamledit as ye
from trustplan.talos.yamledit import Splice, Unsupported


@dataclass(frozen=True)
class Encoding:
    """How one layout spells its CA values."""

    item_field: str | None  # acceptedCAs items: mapping with this key, or plain scalars when None
    encode: Callable[[bytes], str]  # PEM bytes -> the value as the document holds it
    equal: Callable[[str, str], bool]
    render: Callable[[str, yaml.ScalarNode | None, int], str]  # value, node it replaces, key/dash column


def _b64_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return base64.b64decode(a, validate=True) == base64.b64decode(b, validate=True)
    except (binascii.Error, ValueError):
        return False


def _b64_render(value: str, node: yaml.ScalarNode | None, col: int) -> str:
    if value == "":
        return "''" if node is not None and node.style == "'" else '""'
    return ye.plain_like(node, value)


def legacy_encoding() -> Encoding:
    return Encoding("crt", lambda pem: base64.b64encode(pem).decode("ascii"), _b64_equal, _b64_render)


def multidoc_encoding(block_indent: int) -> Encoding:
    def render(value: str, node: yaml.ScalarNode | None, col: int) -> str:
        return ye.literal(value, col + block_indent)

    return Encoding(None, lambda pem: pem.decode("utf-8"), lambda a, b: a == b, render)


class _Editor:
    """Collects the splices for one document."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root = ye.compose(text)
        self.step = ye.indent_step(text, self.root)
        self.seq_offset = ye.sequence_offset(text, self.root)
        self.splices: list[Splice] = []

    def container(self, key: str | None) -> yaml.MappingNode:
        node = self.root
        if key is not None:
            pair = ye.get(self.root, key)
            if pair is None:
                raise Unsupported(f"no {key} section")
            node = pair[1]
        if not ye.is_block_mapping(node):
            raise Unsupported("not a block mapping")
        assert isinstance(node, yaml.MappingNode)
        return node

    def issuer(
        self, box: yaml.MappingNode, name: str, want: Sequence[tuple[str, str | None]] | None, enc: Encoding
    ) -> None:
        """Set `name: {field: value, ...}` in `box`; a None value drops the field, want=None the key."""
        text, pair = self.text, ye.get(box, name)
        if want is None:
            if pair is not None:
                self.splices.append(ye.delete_key(text, *pair))
            return
        if pair is not None and ye.is_block_mapping(pair[1]):
            ca = pair[1]
            assert isinstance(ca, yaml.MappingNode)
            col = ye.mapping_key_column(text, ca)
            new_lines = ""
            for field, value in want:
                fp = ye.get(ca, field)
                if value is None:
                    if fp is not None:
                        self.splices.append(ye.delete_key(text, *fp))
                elif fp is None:
                    new_lines += f"{' ' * col}{field}: {enc.render(value, None, col)}\n"
                else:
                    old = ye.as_value(fp[1])
                    if old is None or not enc.equal(old, value):
                        node = fp[1] if isinstance(fp[1], yaml.ScalarNode) else None
                        if node is None:
                            raise Unsupported(f"{name}.{field} is not a scalar")
                        self.splices.append(ye.replace_scalar(text, node, enc.render(value, node, col)))
            if new_lines:
                self.splices.append(ye.insert_after(text, ca, new_lines))
            return
        kcol = ye.mapping_key_column(text, box)
        block = f"{' ' * kcol}{name}:\n" + "".join(
            f"{' ' * (kcol + self.step)}{f}: {enc.render(v, None, kcol + self.step)}\n"
            for f, v in want
            if v is not None
        )
        if pair is not None:  # `ca:` / `ca: {}`: replace the entry's lines
            start = ye.line_start(text, pair[0].start_mark.index)
            self.splices.append(Splice(start, ye.node_end(text, pair[1]), block))
        else:
            self.splices.append(ye.insert_after(text, box, block))

    def accepted(self, box: yaml.MappingNode, after: str, want: Sequence[str], enc: Encoding) -> None:
        """Set `acceptedCAs` in `box` to `want` (values as the document holds them)."""
        text, pair = self.text, ye.get(box, "acceptedCAs")
        kcol = ye.mapping_key_column(text, box)
        if pair is not None and ye.is_block_sequence(pair[1]):
            seq = pair[1]
            assert isinstance(seq, yaml.SequenceNode)
            if not want:
                colon = text.index(":", pair[0].end_mark.index) + 1
                if "#" in text[colon : ye.line_end(text, colon)]:  # keep the key line and its comment
                    chunks = ye.item_chunks(text, seq)
                    self.splices += [Splice(colon, colon, " []"), Splice(chunks[0][0], chunks[-1][1], "")]
                else:
                    self.splices.append(ye.delete_key(text, *pair))
                return
            values = [self._item_value(item, enc) for item in seq.value]
            dash = ye.dash_column(text, seq)
            keep: list[int | str] = []
            used: set[int] = set()
            for value in want:
                i = next(
                    (i for i, v in enumerate(values) if i not in used and v is not None and enc.equal(v, value)), None
                )
                if i is None:
                    keep.append(self._item_text(value, dash, enc))
                else:
                    used.add(i)
                    keep.append(i)
            if keep != list(range(len(values))):
                self.splices.append(ye.replace_items(text, seq, keep))
            return
        if not want:
            return  # absent, `acceptedCAs: []` or `acceptedCAs:` already say "none"
        dash = kcol + self.seq_offset
        items = "".join(self._item_text(v, dash, enc) for v in want)
        if pair is not None:
            if not ye.is_empty(pair[1]):
                raise Unsupported("acceptedCAs is a non-empty flow sequence")
            empty = pair[1]
            if empty.start_mark.index == empty.end_mark.index:  # `acceptedCAs:` with no value
                self.splices.append(ye.insert_after(text, pair[0], items))
                return
            colon = text.index(":", pair[0].end_mark.index) + 1
            self.splices.append(Splice(colon, empty.end_mark.index, ""))
            self.splices.append(ye.insert_after(text, empty, items))
            return
        anchor_pair = ye.get(box, after)
        anchor = anchor_pair[1] if anchor_pair is not None else box
        self.splices.append(ye.insert_after(text, anchor, f"{' ' * kcol}acceptedCAs:\n{items}"))

    def _item_value(self, item: yaml.Node, enc: Encoding) -> str | None:
        if enc.item_field is None:
            return ye.as_value(item)
        pair = ye.get(item, enc.item_field)
        return ye.as_value(pair[1]) if pair is not None else None

    def _item_text(self, value: str, dash: int, enc: Encoding) -> str:
        if enc.item_field is None:
            return f"{' ' * dash}- {enc.render(value, None, dash)}\n"
        return f"{' ' * dash}- {enc.item_field}: {enc.render(value, None, dash + 2)}\n"

    def result(self) -> str:
        return ye.apply(self.text, self.splices)


Want = tuple[bytes | None, bytes | None, tuple[bytes, ...]]  # issuer PEM, issuer key PEM, accepted PEMs


def edit_v1alpha1(text: str, changes: dict[str, Want]) -> str:
    """The v1alpha1 document's text with `machine` / `cluster` CA fields set (section -> want)."""
    editor, enc = _Editor(text), legacy_encoding()
    for section, (issuer, key, accepted) in changes.items():
        box = editor.container(section)
        want = None
        if issuer is not None:
            want = [("crt", enc.encode(issuer)), ("key", enc.encode(key) if key else "")]
        editor.issuer(box, "ca", want, enc)
        editor.accepted(box, "ca", [enc.encode(p) for p in accepted], enc)
    return editor.result()


def edit_kube_ca_document(text: str, issuing: tuple[bytes, bytes | None] | None, accepted: Sequence[bytes]) -> str:
    """A KubeAPIServerCAConfig document's text with `issuingCA` (cert, key) and `acceptedCAs` set."""
    editor = _Editor(text)
    enc = multidoc_encoding(ye.block_scalar_indent(text, editor.root, editor.step))
    box = editor.container(None)
    want = None
    if issuing is not None:
        cert, key = issuing
        want = [("cert", enc.encode(cert)), ("key", enc.encode(key) if key else None)]
    editor.issuer(box, "issuingCA", want, enc)
    editor.accepted(box, "issuingCA", [enc.encode(p) for p in accepted], enc)
    return editor.result()


def edit_secrets(text: str, updates: dict[str, tuple[bytes, bytes]]) -> str:
    """A Talos secrets.yaml's text with `certs.<name>` (`os`, `k8s`) set to these cert and key PEMs;
    every other byte (the other CAs, tokens, layout) stays."""
    editor, enc = _Editor(text), legacy_encoding()
    certs = editor.container("certs")
    for name, (crt, key) in updates.items():
        editor.issuer(certs, name, [("crt", enc.encode(crt)), ("key", enc.encode(key))], enc)
    return editor.result()

"""Surgical edits of YAML text at the positions the parser reports: every byte outside an edit stays.

A machine config in a GitOps repository carries comments, examples, its own indentation and quoting;
re-dumping it after a CA change would turn a 4-line change into a rewrite of the file. These helpers
compose one document (libyaml for speed when the text is ASCII, so its character offsets are byte
offsets), and express each change as a `Splice` on the original text: replace one scalar, replace a
block sequence's items (existing items keep their exact text, comments included), insert or delete
one key. Loading user files (limits, duplicate keys) lives elsewhere; this module only edits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from trustplan.system.safeyaml import FastLoader as _FastLoader


class Unsupported(Exception):
    """The text has a shape these helpers do not edit in place (the caller re-encodes instead)."""


@dataclass(frozen=True)
class Splice:
    """Replace text[start:end] with `text`."""

    start: int
    end: int
    text: str


def compose(text: str) -> yaml.Node:
    """The node tree of one YAML document, with character offsets into `text`."""
    loader = _FastLoader if text.isascii() else yaml.SafeLoader
    node = yaml.compose(text, Loader=loader)  # noqa: S506 - the safe loaders only
    if node is None:
        raise Unsupported("empty document")
    return node


def apply(text: str, splices: Sequence[Splice]) -> str:
    """`text` with non-overlapping splices applied; new line breaks follow the text's (CRLF or LF)."""
    crlf = "\r\n" in text
    out, pos = [], 0
    for s in sorted(splices, key=lambda s: (s.start, s.end)):
        if s.start < pos:
            raise Unsupported("overlapping edits")
        out += [text[pos : s.start], re.sub(r"(?<!\r)\n", "\r\n", s.text) if crlf else s.text]
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


def get(mapping: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) pair of `key` in a mapping node."""
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def line_end(text: str, index: int) -> int:
    """The index just past the newline ending the line that holds `index` (or past a line start)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def column(text: str, index: int) -> int:
    return index - line_start(text, index)


def is_block_mapping(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and not node.flow_style and bool(node.value)


def is_block_sequence(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode) and not node.flow_style and bool(node.value)


def is_empty(node: yaml.Node) -> bool:
    """A null value or an empty flow collection (`key:`, `key: ~`, `key: []`, `key: {}`)."""
    if isinstance(node, yaml.ScalarNode):
        return node.tag == "tag:yaml.org,2002:null"
    return isinstance(node, yaml.CollectionNode) and not node.value


def _trailing_breaks(span: str) -> str:
    m = re.search(r"\r?\n[ \t\r\n]*\Z", span)
    return span[m.start() :] if m else ""


def replace_scalar(text: str, node: yaml.Node, rendered: str) -> Splice:
    """Replace a scalar's text (quotes or block header included); the line breaks that end a block
    scalar's span are kept, so the next key stays where it was."""
    if not isinstance(node, yaml.ScalarNode):
        raise Unsupported("not a scalar")
    start, end = node.start_mark.index, node.end_mark.index
    return Splice(start, end, rendered + _trailing_breaks(text[start:end]))


def plain_like(original: yaml.ScalarNode | None, value: str) -> str:
    """A one-line scalar in the quoting style of `original` (plain when there is none or it was a
    block scalar). For values that need no escaping, as base64 text."""
    style = original.style if original is not None else None
    if style == '"':
        return f'"{value}"'
    if style == "'":
        return f"'{value}'"
    return value


def literal(value: str, indent: int) -> str:
    """`value` (ending in a newline) as a `|` block scalar whose lines are indented `indent` spaces."""
    pad = " " * indent
    return "|\n" + "".join(pad + line + "\n" if line else "\n" for line in value.rstrip("\n").split("\n"))[:-1]


def node_end(text: str, node: yaml.Node) -> int:
    """Just past the line holding the last character of `node`'s own text. A block collection's
    end mark is where the next token starts, past any comment lines introducing the next key, and
    a block scalar's span takes the blank lines after it: both are left out."""
    while isinstance(node, yaml.CollectionNode) and node.value and not node.flow_style:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    start, end = node.start_mark.index, node.end_mark.index
    end -= len(_trailing_breaks(text[start:end]))
    return line_end(text, max(start, end - 1) if end > start else end)


def delete_key(text: str, key: yaml.Node, value: yaml.Node) -> Splice:
    """Delete one `key: value` entry of a block mapping, whole lines."""
    start = line_start(text, key.start_mark.index)
    if text[start : key.start_mark.index].strip():
        raise Unsupported("key does not start its line")
    return Splice(start, node_end(text, value), "")


def item_chunks(text: str, seq: yaml.SequenceNode) -> list[tuple[int, int]]:
    """The text span of each item of a block sequence: from the end of the previous item (so comment
    lines before an item travel with it) to the end of the item's last line."""
    spans: list[tuple[int, int]] = []
    for item in seq.value:
        dash = text.rfind("-", 0, item.start_mark.index)
        if dash < 0 or text[dash + 1 : item.start_mark.index].strip():
            raise Unsupported("sequence item without a dash before it")
        begin = spans[-1][1] if spans else line_start(text, dash)
        if text[line_start(text, dash) : dash].strip():
            raise Unsupported("sequence item does not start its line")
        spans.append((begin, node_end(text, item)))
    return spans


def dash_column(text: str, seq: yaml.SequenceNode) -> int:
    first = seq.value[0]
    return column(text, text.rfind("-", 0, first.start_mark.index))


def replace_items(
    text: str,
    seq: yaml.SequenceNode,
    keep: Sequence[int | str],
) -> Splice:
    """Rewrite a block sequence's items: `keep` lists, in order, either the index of an existing item
    (kept with its exact text) or the full text of a new item line(s), ending in a newline."""
    chunks = item_chunks(text, seq)
    parts = [text[chunks[k][0] : chunks[k][1]] if isinstance(k, int) else k for k in keep]
    # the first chunk starts at its own dash line; a kept item moved there keeps its comments
    return Splice(chunks[0][0], chunks[-1][1], "".join(parts))


def insert_after(text: str, value: yaml.Node, lines: str) -> Splice:
    """Insert whole lines after the line where `value`'s own text ends."""
    at = node_end(text, value)
    prefix = "" if at == 0 or text[at - 1] == "\n" else "\n"
    return Splice(at, at, prefix + lines)


def mapping_key_column(text: str, mapping: yaml.MappingNode) -> int:
    return column(text, mapping.value[0][0].start_mark.index)


def indent_step(text: str, root: yaml.Node) -> int:
    """The document's indentation step: the column of the first nested block mapping's keys."""
    if isinstance(root, yaml.MappingNode):
        for _, v in root.value:
            if is_block_mapping(v):
                step = mapping_key_column(text, v) - mapping_key_column(text, root)
                if step > 0:
                    return step
    return 2


def sequence_offset(text: str, root: yaml.Node) -> int:
    """How far the document indents a block sequence's dash past its key (0 for PyYAML's
    `key:\\n- item`, 4 for talosctl's `key:\\n    - item`); from the first block sequence found."""
    found = _find_sequence(root)
    if found is None:
        return 0
    key, seq = found
    return dash_column(text, seq) - column(text, key.start_mark.index)


def _find_sequence(node: yaml.Node) -> tuple[yaml.Node, yaml.SequenceNode] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if is_block_sequence(v):
                return k, v
            found = _find_sequence(v)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found = _find_sequence(v)
            if found:
                return found
    return None


def block_scalar_indent(text: str, root: yaml.Node, default: int) -> int:
    """How far the document indents a `|` block scalar's content past its key or dash."""
    found = _find_literal(root, None)
    if found is None:
        return default
    anchor, scalar = found
    body = line_end(text, scalar.start_mark.index)
    content = len(text[body:]) - len(text[body:].lstrip(" "))
    return max(1, content - column(text, anchor))


def _find_literal(node: yaml.Node, anchor: int | None) -> tuple[int, yaml.ScalarNode] | None:
    if isinstance(node, yaml.ScalarNode):
        return (anchor, node) if node.style == "|" and anchor is not None else None
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            found = _find_literal(v, k.start_mark.index)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found = _find_literal(v, v.start_mark.index - 2)
            if found:
                return found
    return None


def as_value(node: Any) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) else None

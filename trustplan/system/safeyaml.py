"""YAML the user writes, read with limits: no alias bombs, no deep nesting, no duplicate keys.

    parse(text)         one document scanned once: its node tree (positions) and its data
    load(text)          one document's data (or None); raises yaml.YAMLError subclasses on any problem
    load_all(text)      every document of a stream
    compose(text)       the node graph of one document (for line numbers), after the same checks
    check(text)         the limits alone, on the event stream

PyYAML shares aliased nodes, so an alias "bomb" costs nothing to construct, but anything that walks
the result (schema validation, JSON encoding, comparison) expands it exponentially; deep nesting
overflows a recursive composer. A text is refused before anything is built from it when it has more
than MAX_ALIASES aliases, expands through them to more than MAX_NODES values, or nests deeper than
MAX_DEPTH. A key given twice in one mapping is refused too: PyYAML would silently keep the last one
(a second `trust:` replacing the first).

check() enforces the limits on the event stream (libyaml's parser keeps its own stack, it does not
recurse). parse() - what machine configs are read with, the hot path of plan and apply - scans a text
once instead: libyaml composes the tree (it caps nesting itself, and aliases add no nodes, so a text
of at most FAST_BYTES makes a small tree whatever it holds), and one walk of that tree enforces the
limits and builds the data. Whatever that walk leaves to PyYAML (an alias, a merge key, a rare tag, a
duplicate key) or a syntax error sends the text through check() first, so every text gets the same
error, in the same order, as check() followed by PyYAML's constructor.

Every error is a yaml.MarkedYAMLError with `problem` and `problem_mark`, so callers that already
turn YAML errors into "file:line: malformed YAML: problem" messages report these the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

try:  # libyaml: ~15x faster (reference/measured-here.md)
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _Composer(_BaseLoader):
    """libyaml's safe loader (PyYAML's pure-Python one only where libyaml is missing) with a cheaper
    resolver: the composer asks it for the tag of every node, a call into Python each time. These
    loaders have no path resolvers (yaml.add_path_resolver), so the tag of a plain scalar depends on
    its text alone and is remembered, and there is no path to track while descending."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = _base_resolve(self, kind, value, implicit)
                if len(value) <= 64 and len(_PLAIN_TAGS) < 8192:
                    _PLAIN_TAGS[value] = tag
            return tag
        return _base_resolve(self, kind, value, implicit)


_base_resolve: Callable[[Any, type[yaml.Node], Any, Any], str] = _BaseLoader.resolve
#: plain scalar text -> its implicit tag (`true` -> bool, `1` -> int, `a` -> str), for short texts
_PLAIN_TAGS: dict[str, str] = {}

#: libyaml's safe loader (see _Composer), for small documents trustplan reads without the limits
#: below (a node's resource specs, a kubeconfig)
FastLoader = _Composer

#: Aliases (`*name`) allowed in one stream. Talos configs, talosconfigs and trustplan.yaml use none.
MAX_ALIASES = 100
#: Values (scalars, mappings, sequences) once aliases are expanded. A Talos config has ~1,000.
MAX_NODES = 200_000
#: Mappings and sequences nested inside each other. A Talos config nests about 8 deep.
MAX_DEPTH = 64
#: Bytes in one YAML file the user gives trustplan (a Talos machine config is ~30 KB).
MAX_BYTES = 8 * 1024 * 1024


class LimitError(yaml.MarkedYAMLError):
    """The text breaks one of the limits above; `problem` names the limit."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(_Composer):
    """The safe loader, refusing duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str":
                key: Any = key_node.value  # a plain string key: no need to construct it twice
            else:
                key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if duplicate:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (a key may appear once in a mapping)",
                    key_node.start_mark,
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping



#: Texts up to this size are composed before their limits are known (a node takes at least a byte of
#: text, so the tree composing builds stays small); larger ones are scanned for the limits first.
FAST_BYTES = 256 * 1024

_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_SAFE = SafeConstructor()
#: The scalar types the safe loader builds, by tag (each method only reads the node's value).
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "tag:yaml.org,2002:null": _SAFE.construct_yaml_null,
    "tag:yaml.org,2002:bool": _SAFE.construct_yaml_bool,
    "tag:yaml.org,2002:int": _SAFE.construct_yaml_int,
    "tag:yaml.org,2002:float": _SAFE.construct_yaml_float,
    "tag:yaml.org,2002:binary": _SAFE.construct_yaml_binary,
    "tag:yaml.org,2002:timestamp": _SAFE.construct_yaml_timestamp,
}


class _NotPlain(Exception):
    """The tree holds something _build leaves to check() and PyYAML's constructor: an alias, merge
    keys, sets, ordered maps, unknown tags, a collection as a key, a duplicate key."""


def _size(text: bytes | str) -> int:
    return len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)


def _may_alias(text: bytes | str) -> bool:
    """Whether the text can hold an alias: it needs an anchor (`&name`) and an alias (`*name`)."""
    return ("*" in text and "&" in text) if isinstance(text, str) else (b"*" in text and b"&" in text)


@functools.cache
def _nesting_capped() -> bool:
    """Whether libyaml refuses deep nesting on its own (it does since 0.2.5, at 1,000 levels)."""
    if _BaseLoader is not getattr(yaml, "CSafeLoader", None):
        return False  # PyYAML's pure-Python composer recurses without such a cap
    try:
        yaml.compose("[" * 2000 + "]" * 2000, Loader=_BaseLoader)
    except yaml.YAMLError:
        return True
    return False  # pragma: no cover - an older libyaml


def _build(root: yaml.Node, shared: bool) -> Any:
    """The data the safe loader builds from a tree, in one walk that also enforces MAX_NODES and
    MAX_DEPTH node by node in document order (the order check() meets them in, up to the first
    alias). `shared`: the tree may hold aliases (a node met twice), which end the walk."""
    count = 0
    seen: set[int] | None = set() if shared else None

    def build(node: yaml.Node, depth: int) -> Any:
        nonlocal count
        count += 1
        if seen is not None:
            if id(node) in seen:
                raise _NotPlain  # an alias: check() counts what it expands to
            seen.add(id(node))
        cls = node.__class__
        if cls is yaml.ScalarNode:
            if count > MAX_NODES:
                _too_many(node)
            if node.tag == _STR:
                return node.value
            scalar = _SCALARS.get(node.tag)
            if scalar is None:
                raise _NotPlain
            return scalar(node)
        if depth >= MAX_DEPTH:
            _too_deep(node)
        if count > MAX_NODES:
            _too_many(node)
        if cls is yaml.MappingNode and node.tag == _MAP:
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.__class__ is not yaml.ScalarNode:
                    raise _NotPlain  # a collection as a key: unhashable, PyYAML's error
                key = build(key_node, depth + 1)
                if key in out:
                    raise _NotPlain
                out[key] = build(value_node, depth + 1)
            return out
        if cls is yaml.SequenceNode and node.tag == _SEQ:
            return [build(item, depth + 1) for item in node.value]
        raise _NotPlain

    return build(root, 0)


def _too_deep(node: yaml.Node) -> NoReturn:
    raise LimitError(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)


def _too_many(node: yaml.Node) -> NoReturn:
    raise LimitError(
        f"expands to more than {MAX_NODES} values through its aliases (*name); refused as a possible alias bomb",
        node.start_mark,
    )



def check(text: bytes | str, max_bytes: int = MAX_BYTES) -> None:
    """Refuse text over the size, alias or depth limits, before anything is constructed."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise LimitError(f"the file is {size} bytes; the limit for YAML input is {max_bytes} bytes")
    aliases = 0
    nodes = 0  # nodes once every alias is expanded: what a consumer walking the result visits
    sizes: dict[str, int] = {}  # anchor -> expanded nodes under it
    open_: list[tuple[str | None, int]] = []  # the collections we are in: (anchor, nodes at start)
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise LimitError(
                    f"more than {MAX_ALIASES} YAML aliases (*name); refused as a possible alias bomb",
                    event.start_mark,
                )
            if any(anchor == event.anchor for anchor, _ in open_):
                raise LimitError(
                    f"the alias *{event.anchor} is inside the collection it names (a recursive alias); "
                    "trustplan's YAML files hold no cycles",
                    event.start_mark,
                )
            nodes += sizes.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            nodes += 1
            open_.append((event.anchor, nodes - 1))
            if len(open_) > MAX_DEPTH:
                raise LimitError(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            anchor, start = open_.pop()
            if anchor is not None:
                sizes[anchor] = nodes - start
        if nodes > MAX_NODES:
            raise LimitError(
                f"expands to more than {MAX_NODES} values through its aliases (*name); refused as a possible "
                "alias bomb",
                event.start_mark,
            )


@dataclass(frozen=True)
class Parsed:
    """One YAML document scanned once: its node tree (for positions) and the data built from it."""

    #: the composed node tree, character offsets in its marks (None for an empty document, and when
    #: PyYAML's own constructor had to build the data: it rewrites `<<` merge keys in the tree)
    node: yaml.Node | None
    data: Any


def parse(text: bytes | str, max_bytes: int = MAX_BYTES, *, checked: bool = True) -> Parsed:
    """One YAML document, scanned once: composed by libyaml, the limits enforced on that node tree
    and the data built from it. The errors are check()'s and load()'s, in the same order: whenever
    the tree is not enough (a syntax error, an alias, a tag only PyYAML's constructor builds, a
    duplicate key), the text is scanned by check() before the error or PyYAML's constructor.
    `checked=False` is for text trustplan made by replacing scalars in text that parse() accepted:
    the size, alias and depth limits cannot newly fail there, duplicate keys still can."""
    if checked:
        size = _size(text)
        if size > max_bytes:
            raise LimitError(f"the file is {size} bytes; the limit for YAML input is {max_bytes} bytes")
        # Composing before the limits are known is safe when composing is cheap whatever the text:
        # aliases add no nodes, so the size bounds the tree, and libyaml refuses deep nesting
        # itself (its composer recurses). Otherwise the text is scanned first, as load() does.
        if size > FAST_BYTES or not _nesting_capped():
            check(text, max_bytes)
            checked = False
    try:
        node = yaml.compose(text, Loader=_Composer)
    except yaml.YAMLError:
        if checked:
            check(text, max_bytes)  # a limit the scan meets before this error is reported instead
        raise
    if node is None:
        return Parsed(None, None)
    try:
        return Parsed(node, _build(node, shared=_may_alias(text)))
    except _NotPlain:
        if checked:
            check(text, max_bytes)
    return Parsed(None, _Loader("").construct_document(node))


def load(text: bytes | str, max_bytes: int = MAX_BYTES) -> Any:
    """One YAML document, checked; None for an empty one."""
    return parse(text, max_bytes).data


def load_all(text: bytes | str, max_bytes: int = MAX_BYTES) -> list[Any]:
    check(text, max_bytes)
    return list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - a SafeLoader subclass


def compose(text: bytes | str, max_bytes: int = MAX_BYTES) -> yaml.Node | None:
    """The node graph of one document, checked (the composer is recursive: check first)."""
    check(text, max_bytes)
    return yaml.compose(text, Loader=_Composer)


def problem(exc: yaml.YAMLError) -> tuple[str, int | None]:
    """What is wrong, for a message ("malformed YAML: ..." or "YAML refused: ..."), and the line."""
    mark = getattr(exc, "problem_mark", None)
    text = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    prefix = "YAML refused" if isinstance(exc, LimitError) else "malformed YAML"
    return f"{prefix}: {text}", (mark.line + 1 if mark is not None else None)

"""YAML the user writes, read with limits: no alias bombs, no deep nesting, no duplicate keys.

    load(text)          one document (or None); raises yaml.YAMLError subclasses on any problem
    load_all(text)      every document of a stream
    compose(text)       the node graph of one document (for line numbers), after the same checks

PyYAML shares aliased nodes, so an alias "bomb" costs nothing to construct, but anything that walks
the result (schema validation, JSON encoding, comparison) expands it exponentially; deep nesting
overflows the recursive composer. The text is therefore scanned first, event by event (libyaml's
parser keeps its own stack, it does not recurse), and refused before anything is built when it
has more than MAX_ALIASES aliases, expands through them to more than MAX_NODES values, or nests
deeper than MAX_DEPTH. A key given twice in one mapping
is refused too: PyYAML would silently keep the last one (a second `trust:` replacing the first).

Every error is a yaml.MarkedYAMLError with `problem` and `problem_mark`, so callers that already
turn YAML errors into "file:line: malformed YAML: problem" messages report these the same way.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

try:  # libyaml: ~15x faster (reference/measured-here.md)
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

#: libyaml's safe loader (PyYAML's pure-Python one only where libyaml is missing), for small documents
#: trustplan reads without the limits below (a node's resource specs, a kubeconfig)
FastLoader = _BaseLoader

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


class _Loader(_BaseLoader):
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


def load(text: bytes | str, max_bytes: int = MAX_BYTES) -> Any:
    """One YAML document, checked; None for an empty one."""
    check(text, max_bytes)
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_edited(text: bytes | str) -> Any:
    """A document trustplan made by replacing scalars in text that load() accepted: the size, alias
    and depth limits cannot newly fail, so only duplicate keys are checked (a round trip, per write)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_all(text: bytes | str, max_bytes: int = MAX_BYTES) -> list[Any]:
    check(text, max_bytes)
    return list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - a SafeLoader subclass


def compose(text: bytes | str, max_bytes: int = MAX_BYTES) -> yaml.Node | None:
    """The node graph of one document, checked (the composer is recursive: check first)."""
    check(text, max_bytes)
    return yaml.compose(text, Loader=_BaseLoader)


def problem(exc: yaml.YAMLError) -> tuple[str, int | None]:
    """What is wrong, for a message ("malformed YAML: ..." or "YAML refused: ..."), and the line."""
    mark = getattr(exc, "problem_mark", None)
    text = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    prefix = "YAML refused" if isinstance(exc, LimitError) else "malformed YAML"
    return f"{prefix}: {text}", (mark.line + 1 if mark is not None else None)

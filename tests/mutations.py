"""Hypothesis strategies that mutate real inputs: JSON-like documents (a random place replaced,
removed, duplicated or swapped, often with a value taken from elsewhere in the same document, so
that the result still has the right types and shapes) and YAML text (tokens spliced in)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63), st.text(max_size=20),
    st.sampled_from(["", "sha256:", "sha256:" + "0" * 64, "controlplane", "worker", "talos", "kubernetes", "accept",
                     "swap", "remove", "outputs", "gate", "10.5.0.2", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3)),
    max_leaves=6,
)

YAML_TOKENS = st.sampled_from([
    "&a ", "*a", "<<: *a\n", "!!python/object:os.system ", "!!binary ", "{", "}", "[", "]", "- ", ": ", "---\n",
    "...\n", "\n  ", "\t", "'", '"', "|\n", ">-\n", "? ", "%YAML 1.1\n", "#", "\x00", "\ufeff", "~", "null",
    "0x1F", "1e400", ".nan", "2026-01-01", "yes", "version: v1alpha1\n", "trust: {}\n",
])


def _places(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _places(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _places(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, original: Any, max_mutations: int = 3) -> Any:
    """`original` with 1..max_mutations random mutations."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, max_mutations))):
        places = _places(doc)
        path = draw(st.sampled_from(places))
        op = draw(st.sampled_from(["replace-borrowed", "replace-random", "delete", "duplicate", "swap"]))
        if not path:
            if op == "replace-random":
                doc = draw(JSON_VALUES)
            continue
        parent = _get(doc, path[:-1])
        key = path[-1]
        if op == "replace-borrowed":
            parent[key] = copy.deepcopy(_get(doc, draw(st.sampled_from(places))))
        elif op == "replace-random":
            parent[key] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
            other = draw(st.integers(0, len(parent) - 1))
            parent[key], parent[other] = parent[other], parent[key]
        elif op == "swap" and isinstance(parent, dict) and len(parent) > 1:
            other = draw(st.sampled_from(sorted(parent, key=str)))
            parent[key], parent[other] = parent[other], parent[key]
    return doc


@st.composite
def spliced(draw: st.DrawFn, text: str, max_splices: int = 3) -> str:
    """`text` with YAML tokens (or random characters) inserted or lines deleted."""
    for _ in range(draw(st.integers(1, max_splices))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["token", "chars", "cut"]))
        if op == "token":
            text = text[:at] + draw(YAML_TOKENS) + text[at:]
        elif op == "chars":
            text = text[:at] + draw(st.text(max_size=5)) + text[at:]
        else:
            end = min(len(text), at + draw(st.integers(1, 80)))
            text = text[:at] + text[end:]
    return text

"""safeyaml.parse scans a text once and builds what PyYAML's safe loader builds, with every limit and
error the two-pass way gave (check() on the events, then PyYAML's constructor): the same data for any
document, the same message and line for any bad one; and a machine config is composed once when it is
read, and an edit composes the text it edits (for positions) and its result (to check it), nothing more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.constructor import ConstructorError

from trustplan.system import safeyaml
from trustplan.talos import machineconfig
from trustplan.talos.machineconfig import CAFields

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = [*sorted((FIXTURES / "configs" / "nodes").glob("*.yaml")), *(FIXTURES / "talosctl").glob("[cw]*.yaml")]


class _Reference(yaml.CSafeLoader):
    """PyYAML's safe loader (libyaml's parser, PyYAML's resolver and constructor) with the
    duplicate-key rule: what parse() must agree with."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=True) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        for i, key in enumerate(keys):
            if isinstance(key, int | str | float | bool | None) and key in keys[:i]:
                raise ConstructorError(None, None, f"found duplicate key {key!r} (a key may appear once in a mapping)")
        return super().construct_mapping(node, deep=deep)


def reference(text: str) -> tuple[str, Any]:
    """("ok", data) or ("error", problem) the way load() worked before parse(): check(), then load."""
    try:
        safeyaml.check(text)
        return "ok", yaml.load(text, Loader=_Reference)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        return "error", safeyaml.problem(exc)[0]


def parsed(text: str) -> tuple[str, Any]:
    try:
        return "ok", safeyaml.parse(text).data
    except yaml.YAMLError as exc:
        return "error", safeyaml.problem(exc)[0]


# plain scalars whose type depends on their text, the resolver's cases
TRICKY = ["yes", "No", "on", "~", "null", "", "0x1f", "0o17", "017", "1_000", "1:30", "-.inf", ".NaN", "3.5e3",
          "2001-12-14", "2001-12-14t21:59:43.10-05:00", "=", "<<", "+1", "0b101", "true", "1e", "0.", "a: b"]
scalars = st.one_of(
    st.sampled_from(TRICKY), st.text(max_size=12), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.dates(min_value=dt.date(1970, 1, 1)), st.binary(max_size=8),
)
keys = st.one_of(st.sampled_from(TRICKY), st.text(max_size=8), st.integers(-5, 5), st.booleans())
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=25
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents, st.sampled_from([False, True, None]), st.booleans())
def test_any_document_reads_as_pyyaml_reads_it(doc: Any, flow: bool | None, canonical: bool) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, canonical=canonical, allow_unicode=True)
    assert parsed(text) == reference(text)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(keys, documents, min_size=1, max_size=4), st.data())
def test_a_repeated_key_is_refused_as_before(doc: dict[Any, Any], data: st.DataObject) -> None:
    """Any mapping with one of its keys given again (a plain string key, or `1` and `0x1` alike)."""
    text = yaml.safe_dump(doc, default_flow_style=False)
    key = data.draw(st.sampled_from(sorted(doc, key=repr)))
    again = yaml.safe_dump({key: None}, default_flow_style=False)
    outcome = parsed(text + again)
    assert outcome == reference(text + again)
    assert outcome[0] == "error" and "found duplicate key" in outcome[1]


BOMB = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)
]
CASES = {
    "aliases and merge keys": "base: &b {x: 1, y: [a, b]}\nthis:\n  <<: *b\n  y: 2\nthat: *b\n",
    "a recursive anchor": "a: &a [1, *a]\n",
    "sets, ordered maps, pairs, tags": "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\np: !!pairs [{a: 1}]\nx: !!str 1\n",
    "an unknown tag": "x: !custom 1\n",
    "a mapping as a key": "? {a: 1}\n: b\n",
    "a duplicate key deep inside": "a:\n  b: [{c: 1, c: 2}]\n",
    "a duplicate key after a merge": "b: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n  x: 3\n",
    "an alias bomb": "\n".join(BOMB) + "\n",
    "too many aliases": "x: &x 1\ny: [" + ",".join(["*x"] * 101) + "]\n",
    "too many aliases, then a syntax error": "x: &x 1\ny: [" + ",".join(["*x"] * 101) + "]\nz: [\n",
    "nested more than 64 deep": "deep: " + "[" * 100 + "]" * 100 + "\n",
    "nested deeper than libyaml allows": "deep: " + "[" * 50000 + "]" * 50000 + "\n",
    "a duplicate key, then deep nesting": "a: 1\na: 2\nb: " + "[" * 70 + "]" * 70 + "\n",
    "too many values without an alias": "k: [" + ",".join(["1"] * 200_000) + "]\n",
    "the most values allowed": "k: [" + ",".join(["1"] * 199_997) + "]\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "two documents, the second nested too deep": "a: 1\n---\nb: " + "[" * 70 + "]" * 70 + "\n",
    "an undefined alias": "a: *nope\n",
    "a syntax error": "a: b: c\n",
    "an empty document": "# nothing\n",
    "non-ASCII text": "name: café # ünïcode\n",
    "a byte order mark": "\ufeffa: 1\n",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_every_limit_and_error_is_the_one_check_and_load_gave(text: str) -> None:
    assert repr(parsed(text)) == repr(reference(text))  # repr: a recursive list compares by its shape


@pytest.mark.parametrize("text", [
    "k: [" + ", ".join(["1"] * 997) + "]\n",  # 1,000 values: allowed
    "k: [" + ", ".join(["1"] * 998) + "]\n",
    "a: {b: [1, 2]}\nk: [" + ", ".join(["{x: 1}"] * 400) + "]\n",
    "a: &a [1, 2, 3]\nb: [" + ", ".join(["*a"] * 99) + "]\n",
], ids=["at-the-limit", "one-over", "mappings", "through-aliases"])
def test_the_value_count_stops_at_the_same_node(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_NODES, lowered so that a small text reaches it: counted in the walk of the tree as check()
    counts it on the events."""
    monkeypatch.setattr(safeyaml, "MAX_NODES", 1000)

    def outcome(read: Any) -> str:
        try:
            read(text)
        except yaml.YAMLError as exc:
            return str(exc)  # the problem and where: line and column
        return "accepted"

    assert outcome(safeyaml.parse) == outcome(safeyaml.check)
    assert parsed(text) == reference(text)


def test_a_limit_error_names_the_line() -> None:
    text = "ok: 1\n" * 3 + "deep: " + "[" * 65 + "]" * 65 + "\n"
    with pytest.raises(safeyaml.LimitError) as caught:
        safeyaml.parse(text)
    assert safeyaml.problem(caught.value) == ("YAML refused: nested more than 64 levels deep", 4)


def test_aliases_share_one_object_as_pyyaml_builds_them() -> None:
    data = safeyaml.load("a: &x [1, 2]\nb: *x\n")
    assert data == {"a": [1, 2], "b": [1, 2]} and data["a"] is data["b"]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(safeyaml.LimitError, match="the file is 2000 bytes; the limit for YAML input is 1000"):
        safeyaml.parse("a: " + "x" * 1997, max_bytes=1000)


@contextmanager
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every YAML pass over a text: a composition or an event scan (check())."""
    seen: list[str] = []
    compose, parse = yaml.compose, yaml.parse

    def composing(stream: Any, Loader: Any = None) -> Any:  # noqa: N803 - PyYAML's name
        seen.append("compose")
        return compose(stream, Loader=Loader)

    def scanning(stream: Any, Loader: Any = None) -> Any:  # noqa: N803
        seen.append("scan")
        return parse(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "compose", composing)
    monkeypatch.setattr(yaml, "parse", scanning)
    yield seen


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.name}" for p in CONFIGS])
def test_a_config_is_read_in_one_pass_and_each_edit_parses_its_result_once(
    path: Path, ca_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accept, swap, remove: no text is scanned for the limits apart from being composed."""
    data = path.read_bytes()
    documents = len(machineconfig._split_documents(data.decode()))
    new = ca_files.talos_crt
    with scans(monkeypatch) as seen:
        cfg = machineconfig.parse(data, path.name)
        assert seen == ["compose"] * documents
        old = cfg.ca_fields("talos")
        key = ca_files.talos_key if cfg.role == "controlplane" else None
        for fields in (
            CAFields(old.issuer, old.issuer_key, (*old.accepted, new)),
            CAFields(new, key, (old.issuer,) if old.issuer else ()),
            CAFields(new, key, ()),
        ):
            seen.clear()
            edited = cfg.edited({"talos": fields})
            assert seen == ["compose", "compose"], "the text edited and the result, each composed once"
            assert edited.data == machineconfig.parse(cfg.data, path.name).with_ca_fields({"talos": fields})
            cfg = edited
        assert cfg.ca_fields("talos") == CAFields(new, key, ())

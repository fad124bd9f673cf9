"""Property tests: whatever a user (or an attacker) puts in trustplan.yaml, a machine config, a
talosconfig or a plan file (re-digested, so it passes the integrity check), trustplan answers with
an exit code and at most one error message: never a traceback, and nothing written when it refuses.

CI-sized by default (seconds each); TRUSTPLAN_FUZZ_EXAMPLES=2000 runs a longer search.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_example, run_cli, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import mutated, spliced

from trustplan.errors import TrustplanError
from trustplan.formats import planfile

EXAMPLES = int(os.environ.get("TRUSTPLAN_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    deadline=None,
    derandomize=EXAMPLES == 0,  # CI: the same examples every run; a long local search explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# plan-file fields apply does not act on: display only, or checked by other means (expiry)
HARMLESS = {"created", "expires", "tool_version", "provider"}


def examples(ci: int) -> int:
    return EXAMPLES or ci


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example as is, and with a saved plan (and the keystore it wrote), and after an apply."""
    base = tmp_path_factory.mktemp("templates")
    fresh = copy_example(base / "fresh")
    planned = copy_example(base / "planned")
    assert run_cli(planned, "plan", "-o", "plan.bin").code == 0
    applied = copy_example(base / "applied")
    assert run_cli(applied, "apply", "--auto-approve").code == 0
    return {"fresh": fresh, "planned": planned, "applied": applied}


@contextmanager
def scratch(template: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trustplan-fuzz.") as tmp:
        root = Path(tmp) / "cluster"
        shutil.copytree(template, root, symlinks=True)
        yield root


def check(root: Path, *args: str, codes: tuple[int, ...] = (0, 1, 2)) -> int:
    """Run the CLI in-process (an exception escaping main() fails the test with its traceback);
    assert one error line at most, and nothing written when it refused."""
    before = snapshot(root)
    result = run_cli(root, *args)
    assert result.code in codes, result.out + result.err
    assert sum(1 for line in result.err.splitlines() if line.startswith("Error: ")) == (result.code == 1)
    if result.code == 1:
        after = snapshot(root)  # byte-identical: no lock file either (issue 20, finding 12)
        assert after == before, sorted(set(after.items()) ^ set(before.items()))
    return result.code


def _yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# --- trustplan.yaml ------------------------------------------------------------------------------


def _desired_text(templates: dict[str, Path]) -> str:
    return (templates["fresh"] / "trustplan.yaml").read_text()


@given(data=st.data())
@settings(FUZZ, max_examples=examples(40))
def test_any_desired_state_gives_an_answer_not_a_traceback(templates: dict[str, Path], data: st.DataObject) -> None:
    text = _desired_text(templates)
    if data.draw(st.booleans(), label="structural"):
        new = _yaml(data.draw(mutated(yaml.safe_load(text)), label="doc"))
    else:
        new = data.draw(spliced(text), label="text")
    with scratch(templates["fresh"]) as root:
        (root / "trustplan.yaml").write_text(new, encoding="utf-8", errors="surrogatepass")
        check(root, "validate")
        check(root, "plan")


# --- machine configs -----------------------------------------------------------------------------


@given(data=st.data())
@settings(FUZZ, max_examples=examples(40))
def test_any_machine_config_gives_an_answer_not_a_traceback(templates: dict[str, Path], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["nodes/cp-1.yaml", "nodes/worker-1.yaml"]), label="file")
    text = (templates["fresh"] / name).read_text()
    if data.draw(st.booleans(), label="structural"):
        new = _yaml(data.draw(mutated(yaml.safe_load(text)), label="doc"))
    else:
        new = data.draw(spliced(text), label="text")
    with scratch(templates["fresh"]) as root:
        (root / name).write_text(new, encoding="utf-8", errors="surrogatepass")
        check(root, "plan")
        check(root, "status")


# --- talosconfigs --------------------------------------------------------------------------------


@given(data=st.data())
@settings(FUZZ, max_examples=examples(60))
def test_any_talosconfig_loads_or_gives_one_input_error(templates: dict[str, Path], data: st.DataObject) -> None:
    from trustplan.providers.talos.talosconfig import load_talosconfig

    text = (templates["applied"] / "talosconfig").read_text()
    if data.draw(st.booleans(), label="structural"):
        new = _yaml(data.draw(mutated(yaml.safe_load(text)), label="doc"))
    else:
        new = data.draw(spliced(text), label="text")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "talosconfig"
        path.write_text(new, encoding="utf-8", errors="surrogatepass")
        try:
            load_talosconfig(path).credential()
        except TrustplanError as exc:
            assert str(exc).startswith(str(path))


# --- secrets.yaml, age identities, talosconfig endpoints (issue 20) -----------------------------------


@given(data=st.data())
@settings(FUZZ, max_examples=examples(40))
def test_any_secrets_file_gives_an_answer_not_a_traceback(templates: dict[str, Path], data: st.DataObject) -> None:
    """secrets.yaml goes through the same safe loader as every user file, in validate as in plan."""
    text = (templates["fresh"] / "secrets.yaml").read_text()
    if data.draw(st.booleans(), label="structural"):
        new = _yaml(data.draw(mutated(yaml.safe_load(text)), label="doc"))
    else:
        new = data.draw(spliced(text), label="text")
    with scratch(templates["fresh"]) as root:
        (root / "secrets.yaml").write_text(new, encoding="utf-8", errors="surrogatepass")
        check(root, "validate")
        check(root, "plan")


@given(raw=st.one_of(st.binary(max_size=200), st.builds(
    lambda head, junk, tail: head + junk + tail,
    st.sampled_from([b"AGE-SECRET-KEY-1", b"# created\n", b"", b"-----BEGIN OPENSSH PRIVATE KEY-----\n"]),
    st.binary(max_size=40), st.sampled_from([b"", b"\n", b"QQQQ\n"]))))
@settings(FUZZ, max_examples=examples(250))
def test_any_age_identity_file_loads_or_gives_one_keystore_error(raw: bytes) -> None:
    """111 of 250 such files raised UnicodeDecodeError before (issue 20)."""
    from trustplan.errors import InputError, KeystoreError
    from trustplan.formats.keystore_age import AgeSealer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "identity.txt"
        path.write_bytes(raw)
        try:
            AgeSealer([], path, "trustplan.yaml").identities()
        except (KeystoreError, InputError) as exc:
            assert str(exc).startswith(str(path))


@given(endpoint=st.one_of(st.text(max_size=80), st.builds(
    lambda a, b: a + b, st.sampled_from(["xn--", "a.", "[", "https://", "10.0.0.1", ""]), st.text(max_size=70))))
@settings(FUZZ, max_examples=examples(300))
def test_any_talosconfig_endpoint_is_a_usable_host_or_one_input_error(
    templates: dict[str, Path], endpoint: str
) -> None:
    """What load_talosconfig accepts, a connection can be made to: the host encodes for DNS (IDNA) or is
    an IP address (a NUL or a bad label used to fail at connect time with a traceback)."""
    import ipaddress

    from trustplan.providers.talos.talosconfig import load_talosconfig

    doc = yaml.safe_load((templates["applied"] / "talosconfig").read_text())
    for context in doc["contexts"].values():
        context["endpoints"] = [endpoint]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "talosconfig"
        path.write_text(_yaml(doc), encoding="utf-8", errors="surrogatepass")
        try:
            loaded = load_talosconfig(path)
        except TrustplanError as exc:
            assert str(exc).startswith(str(path))
            return
        for e in loaded.endpoints:
            try:
                ipaddress.ip_address(e.host)
            except ValueError:
                e.host.rstrip(".").encode("idna")  # what asyncio's getaddrinfo does with it


# --- plan files ----------------------------------------------------------------------------------


def _plan_doc(templates: dict[str, Path]) -> dict[str, Any]:
    saved = planfile.decode((templates["planned"] / "plan.bin").read_bytes(), "plan.bin")
    doc: dict[str, Any] = json.loads(saved.document)
    return doc


@given(data=st.data())
@settings(FUZZ, max_examples=examples(60))
def test_any_re_digested_plan_is_shown_or_refused(templates: dict[str, Path], data: st.DataObject) -> None:
    doc = data.draw(mutated(_plan_doc(templates)), label="doc")
    with scratch(templates["planned"]) as root:
        try:
            (root / "evil.bin").write_bytes(planfile.encode_document(doc))
        except (TypeError, ValueError):  # not JSON-encodable (e.g. a non-string key): not a plan file
            return
        for fmt in ("text", "markdown", "json"):
            check(root, "show", "evil.bin", "--format", fmt, codes=(0, 1))


@given(data=st.data())
@settings(FUZZ, max_examples=examples(60))
def test_a_re_digested_plan_applies_only_if_it_is_the_plan(templates: dict[str, Path], data: st.DataObject) -> None:
    original = _plan_doc(templates)
    doc = data.draw(mutated(original), label="doc")
    with scratch(templates["planned"]) as root:
        try:
            (root / "evil.bin").write_bytes(planfile.encode_document(doc))
        except (TypeError, ValueError):
            return
        if check(root, "apply", "evil.bin", codes=(0, 1)) == 0:
            changed = {k for k in set(doc) | set(original) if doc.get(k) != original.get(k)}
            assert changed <= HARMLESS, changed


@given(data=st.data())
@settings(FUZZ, max_examples=examples(300))
def test_the_fast_schema_check_agrees_with_the_python_validator(
    templates: dict[str, Path], data: st.DataObject
) -> None:
    """schemas.is_valid (jsonschema-rs) lets a document through without the Python validator: on
    broken plans, states and desired states both must give the same verdict."""
    import json

    from trustplan import schemas

    name = data.draw(st.sampled_from(["plan", "state", "desired"]), label="schema")
    if name == "plan":
        original: Any = _plan_doc(templates)
    elif name == "state":
        original = json.loads((templates["applied"] / "trustplan.state.json").read_text())
    else:
        original = yaml.safe_load((templates["fresh"] / "trustplan.yaml").read_text())
    doc = data.draw(mutated(original), label="doc")
    assert schemas.is_valid(name, doc) == schemas.validator(name).is_valid(doc)

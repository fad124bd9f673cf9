"""JSON Schemas shipped with trustplan: desired state, plan document, state document.

    is_valid(name, doc)   the fast check: jsonschema-rs (compiled), ~1 ms for a 500-node plan
    validator(name)       the Python jsonschema validator: the errors, worded for a user

Callers check with is_valid() and ask validator() only for a document that fails, so the common,
valid case neither imports nor runs the Python validator (~0.1 s to import, ~2 ms per node of a
plan document). Both read the same schema; a test holds them to the same verdict on broken documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema


@cache
def load(name: str) -> dict[str, Any]:
    """Load `<name>.schema.json` from this package."""
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for `<name>.schema.json`, built once (checking the schema itself is the slow part)."""
    import jsonschema

    return jsonschema.Draft202012Validator(load(name))


def is_valid(name: str, doc: Any) -> bool:
    """Whether `doc` matches `<name>.schema.json`. False also for what the fast check cannot read
    (a YAML date, a non-string key, nesting too deep): the Python validator then has the last word."""
    try:
        return _fast(name)(doc)
    except (ValueError, TypeError, RecursionError):
        return False


@cache
def _fast(name: str) -> Callable[[Any], bool]:
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - a platform without its wheel: the Python validator
        return validator(name).is_valid
    check: Callable[[Any], bool] = jsonschema_rs.Draft202012Validator(load(name)).is_valid
    return check

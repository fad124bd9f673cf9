"""JSON Schemas shipped with trustplan: desired state, plan document, state document."""

from __future__ import annotations

import json
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

"""The state document: public data only (certificates and fingerprints), safe to commit.

{
  "version": 1, "lineage": "<uuid>", "serial": 3, "cluster": "demo",
  "authorities": {"sha256:..": {"name", "pki", "subject", "algorithm", "not_before", "not_after", "certificate"}},
  "nodes": {"10.5.0.2": {"role", "config_digest", "talos": {"issuer", "accepted"}, "kubernetes": {...}}},
  "history": [{"serial", "plan_digest", "started", "finished", "status", "steps": [...]}]
}
"""

from __future__ import annotations

import json
from typing import Any

from trustplan import schemas
from trustplan.errors import StateError

StateDocument = dict[str, Any]


def empty_state(cluster: str) -> StateDocument:
    return {
        "version": 1,
        "lineage": None,
        "serial": 0,
        "cluster": cluster,
        "authorities": {},
        "nodes": {},
        "history": [],
    }


def parse(data: bytes, source: str) -> StateDocument:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"{source}: state file is not valid JSON ({exc})") from None
    except RecursionError:
        raise StateError(f"{source}: state file is nested too deeply to be a trustplan state") from None
    result: StateDocument = doc
    if schemas.is_valid("state", doc):
        return result
    import jsonschema  # ~0.1 s: only to word the error of an invalid document

    try:
        schemas.validator("state").validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise StateError(f"{source}: {where}: {exc.message} (schemas/state.schema.json)") from None
    except RecursionError:
        raise StateError(f"{source}: state file is nested too deeply to be a trustplan state") from None
    return result


def dump(doc: StateDocument) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

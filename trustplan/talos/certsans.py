"""Add one name to a machine config's machine.certSANs, surgically (every other byte kept).

A Talos worker asks a control plane's trustd for its apid certificate, and with it its client-trust
bundle, when its certificate inputs change (reference/talos.md §2.4); machine.certSANs is one of
them, and a SAN the node answers to anyway does no harm. trustplan's recertify step (issue 20,
finding 11) uses this to make a worker whose bundle lags its config ask trustd again.

    with_cert_san(data, value) -> bytes        raises Unsupported when the text has another shape
"""

from __future__ import annotations

import json

import yaml

from trustplan.talos import yamledit
from trustplan.talos.yamledit import Splice, Unsupported


def cert_sans(data: bytes) -> list[str]:
    """machine.certSANs of the v1alpha1 document."""
    for doc in yaml.safe_load_all(data.decode()):
        if isinstance(doc, dict) and isinstance(doc.get("machine"), dict):
            return [str(v) for v in doc["machine"].get("certSANs") or []]
    return []


def with_cert_san(data: bytes, value: str) -> bytes:
    """`data` with `value` appended to machine.certSANs (the key added when absent)."""
    text = data.decode()
    offset = 0
    for part in text.split("\n---")[:]:
        if "machine:" in part:
            break
        offset += len(part) + len("\n---")
    else:
        raise Unsupported("no v1alpha1 document with a machine section")
    doc = text[offset:offset + len(part)]
    root = yamledit.compose(doc)
    found = yamledit.get(root, "machine")
    if found is None or not yamledit.is_block_mapping(found[1]):
        raise Unsupported("machine is not a block mapping")
    machine = found[1]
    assert isinstance(machine, yaml.MappingNode)
    sans = yamledit.get(machine, "certSANs")
    item = json.dumps(value)
    if sans is None:
        col = yamledit.mapping_key_column(doc, machine)
        last = machine.value[0][1]
        splice = yamledit.insert_after(doc, last, " " * col + f"certSANs: [{item}]\n")
    elif isinstance(sans[1], yaml.SequenceNode) and sans[1].flow_style:
        items = [json.dumps(str(v.value)) for v in sans[1].value if isinstance(v, yaml.ScalarNode)]
        start, end = sans[1].start_mark.index, sans[1].end_mark.index
        splice = Splice(start, end, "[" + ", ".join([*items, item]) + "]")
    elif isinstance(sans[1], yaml.SequenceNode) and sans[1].value:
        col = yamledit.dash_column(doc, sans[1])
        splice = yamledit.insert_after(doc, sans[1].value[-1], " " * col + f"- {item}\n")
    else:
        raise Unsupported("machine.certSANs has a shape this edit does not handle")
    edited = yamledit.apply(doc, [splice])
    return (text[:offset] + edited + text[offset + len(doc):]).encode()

"""The status report's Markdown reads no clock: expiry is counted from the `now` it is given."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trustplan.render.status import markdown

REPORT: dict[str, Any] = {
    "cluster": "demo",
    "serial": 3,
    "authorities": [
        {"fingerprint": "sha256:" + "a" * 64, "name": "talos-2026", "pki": "talos", "subject": "O=talos",
         "algorithm": "ed25519", "not_after": "2027-01-31", "issuing_on": ["10.5.0.2"], "accepted_on": []},
    ],
    "nodes": [{"address": "10.5.0.2", "role": "controlplane", "config_digest": "sha256:" + "b" * 64,
               "cas": {"sha256:" + "a" * 64: "issuing+key"}}],
    "drift": [],
}


def test_expiry_is_counted_from_the_given_time() -> None:
    soon = markdown(REPORT, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    assert "| **2027-01-31 (in 61 days)** |" in soon
    later = markdown(REPORT, dt.datetime(2025, 12, 1, tzinfo=dt.UTC))
    assert "| 2027-01-31 (in 426 days) |" in later
    gone = markdown(REPORT, dt.datetime(2027, 2, 1, tzinfo=dt.UTC))
    assert "| **2027-01-31 (expired)** |" in gone
    assert "| talos-2026 | talos | all 1 nodes | none |" in soon

"""The one timestamp format of trustplan's documents (the plan, the state, a lock's holder):
RFC 3339 in UTC with whole seconds, `2026-01-31T12:00:00Z`. Pure: converts, never reads the clock."""

from __future__ import annotations

import datetime as dt

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_time(t: dt.datetime) -> str:
    """`t` (aware) as UTC text; sub-second parts are dropped."""
    return t.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> dt.datetime:
    """The aware UTC time `text` (in TIME_FORMAT) names; ValueError for any other text."""
    return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC)

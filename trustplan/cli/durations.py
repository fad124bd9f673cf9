"""Durations on the command line: `plan --expires-in 72h`, `--lock-timeout 30s`."""

from __future__ import annotations

import datetime as dt

#: The longest duration trustplan accepts (plan expiry, lock timeout): a year.
MAX_DURATION = dt.timedelta(days=366)


def parse_duration(text: str, maximum: dt.timedelta = MAX_DURATION) -> dt.timedelta:
    """`72h`, `30m`, `3d`, `90s` -> timedelta, at most `maximum`; raises ValueError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isascii() or not text[:-1].isdigit() \
            or int(text[:-1]) <= 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 72h, 30m, 7d)")
    digits = text[:-1].lstrip("0")
    if len(digits) > 12 or int(digits) * units[text[-1]] > maximum.total_seconds():
        raise ValueError(f"duration {text!r} is too long (at most {maximum.days}d)")
    return dt.timedelta(seconds=int(digits) * units[text[-1]])

"""Whether a process still runs, for the files that name the process that owns them (the
simulator's sim.json, the credential folders of a trustplan run)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while `pid` runs: it exists (someone else's counts too) and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True

"""The interop suite: the real talosctl (scripts/peers/talosctl.sh builds it) against trustplan.

Every test here is marked `interop` and deselected from the default run; `make interop` builds
talosctl if it is missing, exports TALOSCTL and runs them. A missing binary fails the tests: it
never skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
VERSION = "v1.12.1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def talosctl_path() -> Path:
    """The talosctl binary: $TALOSCTL, else the cached build of scripts/peers/talosctl.sh."""
    path = Path(os.environ.get("TALOSCTL") or CACHE / f"talosctl-{VERSION}")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"talosctl not found at {path}: run `make interop` (it builds it with scripts/peers/talosctl.sh)")
    return path

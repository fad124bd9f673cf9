"""Every interop case that takes `talosctl_path` runs once per talosctl release (interop_tools.VERSIONS),
or against $TALOSCTL alone when it is set; `talosctl_version` names the release of that run."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_tools import talosctl_binary, talosctl_versions


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "talosctl_version" in metafunc.fixturenames:
        versions = talosctl_versions()
        metafunc.parametrize("talosctl_version", versions, ids=[f"talosctl-{v}" for v in versions])


@pytest.fixture
def talosctl_path(talosctl_version: str) -> Path:
    return talosctl_binary(talosctl_version)

"""The engine asks a provider what it can do (providers.base.Capabilities), never which provider it
is: no comparison with a provider's name, no isinstance()/type() test of a provider and no getattr()
probing of a provider anywhere in the package. `make_provider` maps the desired state to a provider with a `match`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = [ROOT / d for d in ("trustplan", "planner", "providers", "state")]  # all of trustplan.*
BY_NAME = re.compile(r"\bprovider\s*[!=]=")
PROBING = re.compile(r"\b(getattr|hasattr)\(\s*(self\.|applier\.)?provider\b")
#: isinstance(provider, TalosProvider), isinstance(self.provider, (Files, Memory)), type(provider) is ...
BY_CLASS = re.compile(
    r"\bisinstance\(\s*[\w.]*provider\b|\bisinstance\([^)]*\w+Provider\b|\btype\(\s*[\w.]*provider\s*\)"
)


def offences(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in (BY_NAME, PROBING, BY_CLASS))]


@pytest.mark.parametrize(
    "line",
    [
        'if desired.provider == "talos":',
        'if self.desired.provider != "files":',
        'members = getattr(provider, "members", None)',
        'if hasattr(self.provider, "kubelet_restart"):',
        "if isinstance(provider, TalosProvider):",
        "if not isinstance(self.provider, (FilesProvider, MemoryProvider)):",
        "talos = isinstance(p, TalosProvider)",
        "if type(provider) is MemoryProvider:",
    ],
)
def test_the_guard_catches_a_provider_special_case(line: str) -> None:
    assert offences(line) == [line]


def test_no_module_special_cases_a_provider() -> None:
    found = [f"{path.relative_to(ROOT)}: {line}"
             for folder in PACKAGE for path in sorted(folder.rglob("*.py")) for line in offences(path.read_text())]
    assert found == []
    assert offences("caps = provider.capabilities") == []
    assert offences("if isinstance(exc, ProviderError):") == []

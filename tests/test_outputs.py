"""The kubeconfig apply writes: like `talosctl kubeconfig`, mode 0600, merged on request."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from trustplan.errors import InputError
from trustplan.formats.outputs import write_kubeconfig
from trustplan.talos.clientconfig import kubeconfig_document
from trustplan.talos.machineconfig import dump_yaml, load_yaml


def new_doc(server: str = "https://10.5.0.2:6443") -> dict:  # type: ignore[type-arg]
    return kubeconfig_document("prod", server, b"CA-BUNDLE", b"CRT", b"KEY")


OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "dev", "cluster": {"server": "https://dev:6443"}},
                 {"name": "prod", "cluster": {"server": "https://stale:6443"}}],
    "users": [{"name": "me@dev", "user": {"token": "t"}}, {"name": "admin@prod", "user": {"token": "old"}}],
    "contexts": [{"name": "me@dev", "context": {"cluster": "dev", "user": "me@dev"}},
                 {"name": "admin@prod", "context": {"cluster": "prod", "user": "admin@prod"}}],
    "current-context": "me@dev",
    "preferences": {"colors": True},
}


def test_written_fresh_with_mode_0600_and_the_ca_bundle(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, new_doc(), merge=True)  # nothing to merge into: written as is
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = load_yaml(path.read_bytes())
    assert doc == new_doc()
    ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(ca) == b"CA-BUNDLE"


def test_merge_replaces_our_entries_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(dump_yaml(OTHER))
    path.chmod(0o644)
    write_kubeconfig(path, new_doc(), merge=True)
    doc = load_yaml(path.read_bytes())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [c["name"] for c in doc["clusters"]] == ["dev", "prod"]
    assert doc["clusters"][1] == new_doc()["clusters"][0]
    assert [u["name"] for u in doc["users"]] == ["me@dev", "admin@prod"]
    assert doc["users"][0] == OTHER["users"][0] and "client-certificate-data" in doc["users"][1]["user"]
    assert [c["name"] for c in doc["contexts"]] == ["me@dev", "admin@prod"]
    assert doc["current-context"] == "admin@prod"
    assert doc["preferences"] == {"colors": True}


def test_without_merge_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(dump_yaml(OTHER))
    write_kubeconfig(path, new_doc(), merge=False)
    assert load_yaml(path.read_bytes()) == new_doc()


@pytest.mark.parametrize("text", ["clusters: [a\n", "- just\n- a list\n", "clusters: {a: 1}\n"])
def test_merge_into_something_that_is_not_a_kubeconfig_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(InputError, match="cannot merge"):
        write_kubeconfig(path, new_doc(), merge=True)
    assert path.read_text() == text

"""One home for kubeconfigs (talos/clientconfig.py): what kubeconfig_document builds, kube_context
finds again; the context trustplan uses is the named one, else admin@<cluster>, else the current one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from trustplan.errors import InputError
from trustplan.talos.clientconfig import kube_context, kubeconfig_document, read_client_config


def _two_clusters() -> dict:  # type: ignore[type-arg]
    ours = kubeconfig_document("prod", "https://10.5.0.2:6443", b"CA", b"CRT", b"KEY")
    other = {"name": "other", "context": {"cluster": "other", "user": "someone"}}
    ours["contexts"].append(other)
    ours["clusters"].append({"name": "other", "cluster": {"server": "https://other:6443"}})
    ours["current-context"] = "other"
    return ours


def test_what_is_built_is_found_again(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_document("prod", "https://10.5.0.2:6443", b"CA", b"CRT", b"KEY")))
    used = kube_context(read_client_config(path), cluster="prod")
    assert used is not None and used.name == "admin@prod"
    assert used.cluster["server"] == "https://10.5.0.2:6443" and "client-certificate-data" in used.user


def test_named_then_admin_then_current() -> None:
    doc = _two_clusters()
    assert kube_context(doc, cluster="prod").name == "admin@prod"  # type: ignore[union-attr]
    assert kube_context(doc, cluster="staging").name == "other"  # type: ignore[union-attr]
    assert kube_context(doc).name == "other"  # type: ignore[union-attr]
    assert kube_context(doc, "admin@prod").cluster["server"] == "https://10.5.0.2:6443"  # type: ignore[union-attr]
    assert kube_context(doc, "other").user == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "doc",
    [None, [], "text", {}, {"contexts": [{"name": "x"}]}, {"contexts": "x"},
     {"current-context": "a", "contexts": [{"name": "a", "context": {"cluster": "gone"}}], "clusters": []}],
)
def test_no_such_context_is_none(doc: object) -> None:
    assert kube_context(doc) is None


def test_a_kubeconfig_is_read_with_the_limits(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="only regular files are read"):
        read_client_config(fifo)
    deep = tmp_path / "deep"
    deep.write_text("a: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(yaml.YAMLError):
        read_client_config(deep)

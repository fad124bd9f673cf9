"""The state backend's kubeconfig is a user file like any other: read through trustplan.system (regular
files only, size, alias and depth limits), its CA bundle embedded or in a file beside it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml

from trustplan.engine.backend_guard import backend_ca_fingerprints
from trustplan.errors import InputError, StateError
from trustplan.talos import certgen, pki


def _kubeconfig(path: Path, cluster: dict[str, str]) -> Path:
    doc = {
        "current-context": "mgmt",
        "contexts": [{"name": "mgmt", "context": {"cluster": "mgmt", "user": "admin"}}],
        "clusters": [{"name": "mgmt", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_ca_bundle_is_read_embedded_or_from_its_file(tmp_path: Path) -> None:
    ca, _ = certgen.generate_ca("kubernetes", pki.utcnow())
    pem = pki.cert_to_pem(ca)
    embedded = _kubeconfig(tmp_path / "a.yaml", {"certificate-authority-data": base64.b64encode(pem).decode()})
    assert backend_ca_fingerprints(embedded, None) == {pki.fingerprint(ca)}
    (tmp_path / "ca.crt").write_bytes(pem)
    beside = _kubeconfig(tmp_path / "b.yaml", {"certificate-authority": "ca.crt"})
    assert backend_ca_fingerprints(beside, "mgmt") == {pki.fingerprint(ca)}


def test_an_alias_bomb_is_refused_by_the_yaml_limits(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "config"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(StateError) as exc:
        backend_ca_fingerprints(bomb, None)
    assert str(exc.value).startswith(f"{bomb}: cannot read the state backend's kubeconfig (")
    assert "YAML" in str(exc.value) or "alias" in str(exc.value)


def test_a_fifo_or_a_missing_ca_file_is_one_error_naming_the_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StateError, match="only regular files are read"):
        backend_ca_fingerprints(fifo, None)  # never blocks on the FIFO
    missing = _kubeconfig(tmp_path / "c.yaml", {"certificate-authority": "gone.crt"})
    with pytest.raises(InputError) as exc:
        backend_ca_fingerprints(missing, None)
    assert str(exc.value).startswith(f"{missing}: ") and "gone.crt not found" in str(exc.value)

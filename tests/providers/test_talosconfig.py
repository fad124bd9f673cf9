"""talosconfig reading and writing (docs/talos-model.md: talosconfig)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml
from trustplan.providers.talos.talosconfig import (
    Endpoint,
    load_talosconfig,
    parse_endpoint,
)

from trustplan.errors import InputError
from trustplan.formats.outputs import write_talosconfig
from trustplan.talos import certgen, pki


def _material() -> tuple[bytes, bytes, bytes]:
    now = pki.utcnow()
    ca, ca_key = certgen.generate_ca("talos", now)
    cert, key = certgen.issue_client_cert(ca, ca_key, "os:admin", now)
    return pki.cert_to_pem(ca), pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key)


def test_write_then_load(tmp_path: Path) -> None:
    ca, crt, key = _material()
    path = write_talosconfig(
        tmp_path / "talosconfig",
        context="prod",
        endpoints=["10.0.0.2", "10.0.0.3:50001"],
        ca_pem=ca,
        crt_pem=crt,
        key_pem=key,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["context"] == "prod"
    # Ed25519 keys are written the way Talos writes them
    assert base64.b64decode(doc["contexts"]["prod"]["key"]).startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    cfg = load_talosconfig(path)
    assert cfg.context == "prod"
    assert cfg.endpoints == (Endpoint("10.0.0.2", 50000), Endpoint("10.0.0.3", 50001))
    assert (cfg.ca_pem, cfg.crt_pem) == (ca, crt)
    cred = cfg.credential()
    assert cred.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert cred.issuer == pki.fingerprint(pki.load_cert_pem(ca, "ca"))
    assert cred.trusted == (cred.issuer,)


def test_endpoints() -> None:
    assert parse_endpoint("10.5.0.2") == Endpoint("10.5.0.2", 50000)
    assert parse_endpoint("cp.example.com:443") == Endpoint("cp.example.com", 443)
    assert parse_endpoint("[fd00::1]:50000") == Endpoint("fd00::1", 50000)
    assert parse_endpoint("fd00::1") == Endpoint("fd00::1", 50000)
    assert parse_endpoint("https://10.5.0.2") == Endpoint("10.5.0.2", 50000)


def test_errors_name_file_and_path(tmp_path: Path) -> None:
    ca, crt, key = _material()
    path = write_talosconfig(tmp_path / "tc", context="a", endpoints=["10.0.0.2"], ca_pem=ca, crt_pem=crt, key_pem=key)
    with pytest.raises(InputError, match=r"context 'b' not found"):
        load_talosconfig(path, "b")
    doc = yaml.safe_load(path.read_text())
    del doc["contexts"]["a"]["crt"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"contexts\.a\.crt: missing 'crt'") as err:
        load_talosconfig(path)
    assert str(path) in str(err.value)
    assert "PRIVATE" not in str(err.value)

"""The simulator's own config reader (trustplan_sim.oracle) against trustplan's
(trustplan.talos.machineconfig): two readers written apart must agree on what every config trusts.

The configs: `talosctl gen config` output of v1.12.1 and v1.14.1 (tests/fixtures/talosctl-gen-config),
the simulator's own generated ones in both layouts, and each of them with two more accepted CAs per
PKI added by plain YAML editing (neither reader's writer is used). A bug in how trustplan reads a
config (e.g. dropping an accepted CA) makes this test fail, where before the simulator repeated it.
The oracle's validation messages are Talos's own (docs/talos-model.md: validation);
tests/interop/test_oracle_vs_talosctl.py checks its verdicts against the real `talosctl validate`.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
import yaml
from trustplan_sim import configgen, oracle

from trustplan.talos import certgen, machineconfig, pki

GEN = Path(__file__).resolve().parents[1] / "fixtures" / "talosctl-gen-config"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _extra_cas() -> list[bytes]:
    return [pki.cert_to_pem(certgen.generate_ca(name, NOW)[0]) for name in ("talos", "kubernetes")]


EXTRA = _extra_cas()


def _sources() -> dict[str, bytes]:
    out = {}
    for version in ("v1.12.1", "v1.14.1"):
        for role in ("controlplane", "worker"):
            out[f"gen-{version}-{role}"] = (GEN / version / f"{role}.yaml").read_bytes()
    secrets = configgen.ClusterSecrets.generate(NOW)
    for layout in ("legacy", "multidoc"):
        for role in ("controlplane", "worker"):
            out[f"sim-{layout}-{role}"] = configgen.generate_config(
                secrets, cluster_name="c", endpoint="https://10.5.0.2:6443", role=role,  # type: ignore[arg-type]
                hostname="n", address="10.5.0.2", kube_ca_layout=layout,  # type: ignore[arg-type]
            )  # fmt: skip
    return out


def with_more_accepted(data: bytes) -> bytes:
    """The config with EXTRA appended to the accepted CAs of both PKIs, by plain YAML editing."""
    docs = [d for d in yaml.safe_load_all(data) if d is not None]
    for doc in docs:
        if doc.get("version") == "v1alpha1":
            machine = doc["machine"]
            machine["acceptedCAs"] = [*(machine.get("acceptedCAs") or []), *({"crt": base64.b64encode(p).decode()}
                                                                              for p in EXTRA)]
            cluster = doc.get("cluster") or {}
            if "ca" in cluster:
                cluster["acceptedCAs"] = [*(cluster.get("acceptedCAs") or []),
                                          *({"crt": base64.b64encode(p).decode()} for p in EXTRA)]
        elif doc.get("kind") == "KubeAPIServerCAConfig":
            doc["acceptedCAs"] = [*(doc.get("acceptedCAs") or []), *(p.decode() for p in EXTRA)]
    return yaml.safe_dump_all(docs, sort_keys=False).encode()


SOURCES = _sources()
CASES = {**SOURCES, **{f"{k}+2-accepted": with_more_accepted(v) for k, v in SOURCES.items()}}


def _trustplan_view(data: bytes, pki_name: str) -> tuple[frozenset[bytes], bool]:
    fields = machineconfig.parse(data, "config").ca_fields(pki_name)  # type: ignore[arg-type]
    trust = frozenset([*fields.accepted, *([fields.issuer] if fields.issuer else [])])
    return trust, fields.issuer_key is not None


def _oracle_view(data: bytes, pki_name: str) -> tuple[frozenset[bytes], bool]:
    cfg = oracle.read(data)
    return frozenset(cfg.trust(pki_name)), cfg.ca_fields(pki_name).issuer_key is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("pki_name", ["talos", "kubernetes"])
def test_trustplan_and_the_simulator_read_the_same_trust(name: str, pki_name: str) -> None:
    data = CASES[name]
    theirs = _oracle_view(data, pki_name)
    assert theirs[0], "every config trusts some CA"
    if name.endswith("+2-accepted"):
        assert set(EXTRA) <= theirs[0]
    assert _trustplan_view(data, pki_name) == theirs
    assert oracle.validate(oracle.read(data)) == []


def test_the_oracle_refuses_what_talos_refuses() -> None:
    cp = SOURCES["gen-v1.14.1-controlplane"]
    worker = SOURCES["gen-v1.12.1-worker"]
    docs = list(yaml.safe_load_all(cp))
    docs[0]["machine"]["ca"]["key"] = ""
    assert oracle.validate(oracle.read(yaml.safe_dump_all(docs).encode())) == [
        "issuing CA key is required for controlplane nodes (.machine.ca.key)"
    ]
    docs = list(yaml.safe_load_all(cp))
    docs[0]["cluster"]["ca"] = {"crt": docs[0]["machine"]["ca"]["crt"], "key": ""}
    assert oracle.validate(oracle.read(yaml.safe_dump_all(docs).encode())) == [
        "kube-apiserver CA is already set in v1alpha1 config (.cluster.ca)"
    ]
    docs = list(yaml.safe_load_all(worker))
    docs[0]["machine"]["ca"]["key"] = docs[0]["cluster"]["ca"]["crt"]
    assert oracle.validate(oracle.read(yaml.safe_dump_all(docs).encode())) == [
        "issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)"
    ]
    with pytest.raises(oracle.ConfigError, match="illegal base64"):
        oracle.read(worker.replace(b"crt: LS0t", b"crt: L*S0t", 1))

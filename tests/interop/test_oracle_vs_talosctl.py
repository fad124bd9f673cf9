"""The simulator's oracle (trustplan_sim.oracle) against the real `talosctl validate`: on the
configs `talosctl gen config` wrote (each release's own) and on each of them broken one way that a
CA rotation could break it, the oracle refuses exactly what talosctl refuses. The oracle is what the
simulator checks every ApplyConfiguration with, so this is what makes it a judge of trustplan.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from interop_tools import run
from test_validate import GEN_CONFIG
from trustplan_sim import oracle

pytestmark = pytest.mark.interop

Docs = list[dict[str, Any]]


def _v1(docs: Docs) -> dict[str, Any]:
    return next(d for d in docs if d.get("version") == "v1alpha1")


def _kube_doc(docs: Docs) -> dict[str, Any] | None:
    return next((d for d in docs if d.get("kind") == "KubeAPIServerCAConfig"), None)


def _kube_ca_crt(docs: Docs) -> str:
    doc = _kube_doc(docs)
    if doc is None:
        return str(_v1(docs)["cluster"]["ca"]["crt"])
    pem = doc["issuingCA"]["cert"] if doc.get("issuingCA") else doc["acceptedCAs"][0]
    return base64.b64encode(pem.encode()).decode()


def _no_machine_ca_key(docs: Docs) -> None:
    _v1(docs)["machine"]["ca"]["key"] = ""


def _machine_ca_key_from_cp(docs: Docs) -> None:
    _v1(docs)["machine"]["ca"]["key"] = _v1(docs)["machine"]["ca"]["crt"]  # any non-empty value


def _no_talos_trust(docs: Docs) -> None:
    _v1(docs)["machine"].pop("ca")
    _v1(docs)["machine"].pop("acceptedCAs", None)


def _only_accepted_talos_ca(docs: Docs) -> None:
    machine = _v1(docs)["machine"]
    machine["acceptedCAs"] = [{"crt": machine["ca"]["crt"]}]
    machine["ca"] = {"crt": "", "key": ""}


def _extra_accepted_talos_ca(docs: Docs) -> None:
    machine = _v1(docs)["machine"]
    machine["acceptedCAs"] = [{"crt": machine["ca"]["crt"]}]


def _cluster_ca_key_on_worker(docs: Docs) -> None:
    _v1(docs).setdefault("cluster", {})["ca"] = {"crt": _kube_ca_crt(docs), "key": _kube_ca_crt(docs)}


def _cluster_ca_beside_document(docs: Docs) -> None:
    _v1(docs).setdefault("cluster", {})["ca"] = {"crt": _kube_ca_crt(docs), "key": ""}


def _issuing_ca_without_key(docs: Docs) -> None:
    doc = _kube_doc(docs)
    assert doc is not None
    doc["issuingCA"]["key"] = ""


def _accepted_ca_not_pem(docs: Docs) -> None:
    doc = _kube_doc(docs)
    assert doc is not None
    doc["acceptedCAs"] = [*(doc.get("acceptedCAs") or []), "not a certificate"]


Mutation = Callable[[Docs], None]
#: (name, roles it applies to, layouts it applies to, the mutation)
MUTATIONS: list[tuple[str, set[str], set[str], Mutation | None]] = [
    ("as-generated", {"controlplane", "worker"}, {"legacy", "multidoc"}, None),
    ("no-machine-ca-key", {"controlplane"}, {"legacy", "multidoc"}, _no_machine_ca_key),
    ("machine-ca-key-on-worker", {"worker"}, {"legacy", "multidoc"}, _machine_ca_key_from_cp),
    ("no-talos-trust", {"controlplane", "worker"}, {"legacy", "multidoc"}, _no_talos_trust),
    ("only-accepted-talos-ca", {"worker"}, {"legacy", "multidoc"}, _only_accepted_talos_ca),
    ("extra-accepted-talos-ca", {"controlplane", "worker"}, {"legacy", "multidoc"}, _extra_accepted_talos_ca),
    ("cluster-ca-key-on-worker", {"worker"}, {"legacy"}, _cluster_ca_key_on_worker),
    ("cluster-ca-beside-document", {"controlplane", "worker"}, {"multidoc"}, _cluster_ca_beside_document),
    ("issuing-ca-without-key", {"controlplane"}, {"multidoc"}, _issuing_ca_without_key),
    ("accepted-ca-not-pem", {"controlplane", "worker"}, {"multidoc"}, _accepted_ca_not_pem),
]


def test_the_oracle_refuses_what_talosctl_validate_refuses(
    tmp_path: Path, talosctl_version: str, talosctl_path: Path
) -> None:
    source = GEN_CONFIG / talosctl_version
    layout = "multidoc" if talosctl_version == "v1.14.1" else "legacy"
    cases: list[tuple[str, Path, bytes]] = []
    for role in ("controlplane", "worker"):
        original = (source / f"{role}.yaml").read_bytes()
        for name, roles, layouts, mutate in MUTATIONS:
            if role not in roles or layout not in layouts:
                continue
            data = original
            if mutate is not None:
                docs = [d for d in yaml.safe_load_all(original) if d is not None]
                mutate(docs)
                data = yaml.safe_dump_all(docs, sort_keys=False).encode()
            path = tmp_path / f"{role}-{name}.yaml"
            path.write_bytes(data)
            cases.append((f"{role}/{name}", path, data))

    async def verdicts() -> list[tuple[str, bool, str]]:
        out = []
        for label, path, _ in cases:
            result = await run(talosctl_path, "validate", "--config", path, "--mode", "metal", timeout=60)
            out.append((label, result.code == 0, result.out + result.err))
        return out

    disagree = []
    talos = asyncio.run(verdicts())
    for (label, _, data), (_, talos_ok, talos_says) in zip(cases, talos, strict=True):
        try:
            errors = oracle.validate(oracle.read(data))
        except oracle.ConfigError as exc:
            errors = [str(exc)]
        if (errors == []) != talos_ok:
            disagree.append(f"{label}: oracle {errors or 'accepts'}; talosctl: {talos_says.strip()}")
    assert len(cases) >= 10
    assert disagree == [], "\n".join(disagree)
    assert sum(ok for _, ok, _ in talos) >= 3 and sum(not ok for _, ok, _ in talos) >= 3  # both verdicts seen

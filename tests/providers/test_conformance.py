"""The Provider contract, run against every provider: files (configs on disk), memory (configs in a
dict, the fast tests' provider) and talos (the Talos API, against the simulator). What the engine
relies on must hold for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan.providers.base import NodeRef, Provider, TLSIdentity
from trustplan.providers.files import FilesProvider
from trustplan.providers.memory import MemoryProvider
from trustplan.providers.talos.provider import TalosProvider
from trustplan_sim import configgen
from trustplan_sim.cluster import SimCluster
from trustplan_sim.configgen import ClusterSecrets

from trustplan.errors import GateFailedError, ProviderError
from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.machineconfig import CAFields


@dataclass
class Subject:
    provider: Provider
    controlplane: NodeRef
    worker: NodeRef
    secrets: ClusterSecrets


Contract = Callable[[Subject], Awaitable[None]]


def credential(ca: configgen.CAPair, trusted: list[configgen.CAPair]) -> TLSIdentity:
    cert, key = certgen.issue_client_cert(ca.cert, ca.key, "os:admin", pki.utcnow())
    return TLSIdentity(
        pki="talos",
        issuer=pki.fingerprint(ca.cert),
        trusted=tuple(pki.fingerprint(t.cert) for t in trusted),
        cert_pem=pki.cert_to_pem(cert),
        key_pem=pki.key_to_pkcs8_pem(key),
        ca_bundle_pem=b"".join(t.crt_pem for t in trusted),
    )


def two_nodes(secrets: ClusterSecrets) -> dict[str, bytes]:
    """A control plane and a worker's machine configs, by address."""
    return {
        address: configgen.generate_config(secrets, cluster_name="c", endpoint="https://10.9.0.2:6443",
                                           role=role, hostname=name, address=address)  # type: ignore[arg-type]
        for name, role, address in (("cp-1", "controlplane", "10.9.0.2"), ("worker-1", "worker", "10.9.0.3"))
    }


def run_files(contract: Contract, tmp_path: Path) -> None:
    secrets = ClusterSecrets.generate(pki.utcnow())
    configs = {}
    for address, data in two_nodes(secrets).items():
        path = tmp_path / f"{address}.yaml"
        path.write_bytes(data)
        configs[address] = path
    provider = FilesProvider(configs)
    subject = Subject(provider, NodeRef("10.9.0.2", "controlplane"), NodeRef("10.9.0.3", "worker"), secrets)
    asyncio.run(contract(subject))


def run_memory(contract: Contract, tmp_path: Path) -> None:
    secrets = ClusterSecrets.generate(pki.utcnow())
    provider = MemoryProvider(two_nodes(secrets))
    subject = Subject(provider, NodeRef("10.9.0.2", "controlplane"), NodeRef("10.9.0.3", "worker"), secrets)
    asyncio.run(contract(subject))


def run_talos(contract: Contract, tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.node_refs()
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs(), verify_timeout=1.0,
                                 retry_timeout=1.0) as provider:
            await contract(Subject(provider, cp, worker, cluster.secrets))

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=1, workers=1)


RUNNERS = {"files": run_files, "memory": run_memory, "talos": run_talos}


def with_accepted(data: bytes, ca: configgen.CAPair) -> bytes:
    cfg = machineconfig.parse(data, "test")
    f = cfg.ca_fields("talos")
    return cfg.with_ca_fields({"talos": CAFields(f.issuer, f.issuer_key, (*f.accepted, ca.crt_pem))})


async def reads_exact_bytes_and_their_digest(s: Subject) -> None:
    for node in (s.controlplane, s.worker):
        got = await s.provider.read(node, None)
        assert got.digest == machineconfig.digest(got.data)
        assert machineconfig.parse(got.data, "x").role == node.role


async def dry_run_validates_and_changes_nothing(s: Subject) -> None:
    before = await s.provider.read(s.worker, None)
    new_ca = configgen.CAPair(*certgen.generate_ca("talos", pki.utcnow()))
    await s.provider.write(s.worker, with_accepted(before.data, new_ca), credential=None, dry_run=True)
    assert (await s.provider.read(s.worker, None)).data == before.data


async def write_then_read_gives_the_same_bytes(s: Subject) -> None:
    before = await s.provider.read(s.controlplane, None)
    new_ca = configgen.CAPair(*certgen.generate_ca("talos", pki.utcnow()))
    data = with_accepted(before.data, new_ca)
    await s.provider.write(s.controlplane, data, credential=None)
    assert (await s.provider.read(s.controlplane, None)).data == data


async def refuses_a_config_that_breaks_talos_validation(s: Subject) -> None:
    before = await s.provider.read(s.worker, None)
    cfg = machineconfig.parse(before.data, "x")
    f = cfg.ca_fields("talos")
    bad = cfg.with_ca_fields({"talos": CAFields(f.issuer, s.secrets.os.key_pem, f.accepted)})  # a worker with a key
    with pytest.raises(ProviderError, match="not allowed on non-controlplane"):
        await s.provider.write(s.worker, bad, credential=None, dry_run=True)
    assert (await s.provider.read(s.worker, None)).data == before.data


async def verify_passes_for_a_trusted_credential(s: Subject) -> None:
    cred = credential(s.secrets.os, [s.secrets.os])
    for node in (s.controlplane, s.worker):
        assert await s.provider.verify(node, cred)


async def verify_fails_for_an_unknown_ca(s: Subject) -> None:
    stranger = configgen.CAPair(*certgen.generate_ca("talos", pki.utcnow()))
    with pytest.raises(GateFailedError):
        await s.provider.verify(s.controlplane, credential(stranger, [s.secrets.os, stranger]))


async def verify_fails_when_the_client_does_not_trust_the_server(s: Subject) -> None:
    other = configgen.CAPair(*certgen.generate_ca("talos", pki.utcnow()))
    with pytest.raises(GateFailedError):
        await s.provider.verify(s.worker, credential(s.secrets.os, [other]))


async def declared_abilities_work(s: Subject) -> None:
    """What a provider declares in its capabilities it can do: a member list names both nodes; a
    client-trust probe says the worker accepts the cluster's CA and refuses a stranger's."""
    caps = s.provider.capabilities
    if caps.members is not None:
        listed = {(address, role) for address, role, _ in await caps.members.members(None)}
        assert {(s.controlplane.address, "controlplane"), (s.worker.address, "worker")} <= listed
    if caps.client_trust is not None:
        stranger = configgen.CAPair(*certgen.generate_ca("talos", pki.utcnow()))
        answers = await caps.client_trust.probe_client_trust(
            s.worker, [credential(s.secrets.os, [s.secrets.os]), credential(stranger, [s.secrets.os])]
        )
        assert answers == [True, False]
    if not caps.needs_credential:  # a provider that takes no credential has no API to watch or list
        assert caps.kubelet is None and caps.members is None and caps.client_trust is None


CONTRACTS = [
    declared_abilities_work,
    reads_exact_bytes_and_their_digest,
    dry_run_validates_and_changes_nothing,
    write_then_read_gives_the_same_bytes,
    refuses_a_config_that_breaks_talos_validation,
    verify_passes_for_a_trusted_credential,
    verify_fails_for_an_unknown_ca,
    verify_fails_when_the_client_does_not_trust_the_server,
]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_provider_contract(kind: str, contract: Contract, tmp_path: Path) -> None:
    RUNNERS[kind](contract, tmp_path)

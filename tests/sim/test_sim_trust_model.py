"""The simulator follows Talos's trust model
(docs/talos-model.md: Talos API trust, worker trust through trustd) over real mutual TLS.

These tests talk to nodes with plain grpclib channels (not TalosProvider) so that each check is
about the simulator, and use TalosProvider for the rotation sequence.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from simharness import run_with_cluster
from trustplan.providers.base import NodeRef, TLSIdentity
from trustplan.providers.talos.proto import cosi_state_grpc, cosi_state_pb2, machine_grpc, machine_pb2
from trustplan.providers.talos.provider import TalosProvider
from trustplan.providers.talos.talosconfig import make_credential
from trustplan.providers.talos.tls import client_context
from trustplan_sim import configgen
from trustplan_sim.cluster import SimCluster

from trustplan.errors import GateFailedError
from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.machineconfig import CAFields

TALOS = configgen.TALOS_VERSION

REFUSED = (StreamTerminatedError, ProtocolError, ssl.SSLError, ConnectionError)


def _client(ca_cert: x509.Certificate, ca_key: pki.PrivateKey, role: str = "os:admin") -> tuple[bytes, bytes]:
    cert, key = certgen.issue_client_cert(ca_cert, ca_key, role, pki.utcnow())
    return pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key)


def _channel(address: str, cert: bytes, key: bytes, trust: bytes) -> Channel:
    return Channel(address, 50000, ssl=client_context(cert, key, trust))


async def _version(channel: Channel, node: str | None = None) -> str:
    metadata = {"node": node} if node else None
    try:
        reply = await machine_grpc.MachineServiceStub(channel).Version(Empty(), metadata=metadata, timeout=5)
    finally:
        channel.close()
    return reply.messages[0].version.tag


def test_files_written(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        doc = json.loads((tmp_path / "sim.json").read_text())
        assert doc["pid"] == os.getpid()
        assert [n["name"] for n in doc["nodes"]] == ["cp-1", "cp-2", "worker-1"]
        assert doc["nodes"][0] == {
            "name": "cp-1",
            "role": "controlplane",
            "address": cluster.nodes[0].address,
            "port": 50000,
        }
        for name in ("talosconfig", "secrets.yaml"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert "worker: [" + cluster.workers[0].address + "]" in (tmp_path / "trustplan.yaml").read_text()

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)
    assert not (tmp_path / "sim.json").exists()  # removed on shutdown


def test_unknown_ca_and_bad_eku_are_refused_at_handshake(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        os_ca = cluster.secrets.os
        cp = cluster.controlplanes[0].address
        assert await _version(_channel(cp, *_client(os_ca.cert, os_ca.key), os_ca.crt_pem)) == TALOS
        other, other_key = certgen.generate_ca("talos", pki.utcnow())
        with pytest.raises(REFUSED):
            await _version(_channel(cp, *_client(other, other_key), os_ca.crt_pem))
        # EKU [serverAuth, clientAuth] is not "exactly clientAuth": apid refuses it
        now = pki.utcnow()
        key = pki.ed25519.Ed25519PrivateKey.generate()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "os:admin")]))
            .issuer_name(os_ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(os_ca.key, None)
        )
        with pytest.raises(REFUSED):
            await _version(_channel(cp, pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key), os_ca.crt_pem))

    run_with_cluster(scenario, tmp_path, workers=0)


def test_roles(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        os_ca = cluster.secrets.os
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        reader = _client(os_ca.cert, os_ca.key, "os:reader")
        assert await _version(_channel(cp.address, *reader, os_ca.crt_pem), worker.address) == TALOS
        channel = _channel(cp.address, *reader, os_ca.crt_pem)
        try:
            with pytest.raises(GRPCError) as err:
                await machine_grpc.MachineServiceStub(channel).ApplyConfiguration(
                    machine_pb2.ApplyConfigurationRequest(data=worker.config, mode=2),
                    metadata={"node": worker.address},
                )
            assert err.value.status is Status.PERMISSION_DENIED
            with pytest.raises(GRPCError) as err:
                await cosi_state_grpc.StateStub(channel).Get(
                    cosi_state_pb2.GetRequest(namespace="config", type="MachineConfigs.config.talos.dev", id="v1alpha1")
                )
            assert err.value.status is Status.PERMISSION_DENIED
        finally:
            channel.close()

    run_with_cluster(scenario, tmp_path)


def test_workers_do_not_proxy(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        os_ca = cluster.secrets.os
        w1, w2 = cluster.workers
        admin = _client(os_ca.cert, os_ca.key)
        assert await _version(_channel(w1.address, *admin, os_ca.crt_pem)) == TALOS  # direct: fine
        with pytest.raises(GRPCError) as err:
            await _version(_channel(w1.address, *admin, os_ca.crt_pem), w2.address)
        assert err.value.status is Status.PERMISSION_DENIED and "no request forwarding" in str(err.value.message)

    run_with_cluster(scenario, tmp_path, workers=2)


def _edit(data: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    cfg = machineconfig.parse(data, "node")
    return cfg.with_ca_fields({"talos": change(cfg.ca_fields("talos"), cfg.role)})


async def _patch_all(provider: TalosProvider, nodes: list[NodeRef], cred: TLSIdentity | None, change) -> None:  # type: ignore[no-untyped-def]
    for node in nodes:  # control planes first
        live = await provider.read(node, cred)
        await provider.write(node, _edit(live.data, change), credential=cred)


def test_accept_swap_remove(tmp_path: Path) -> None:
    """The expand -> switch -> contract sequence, with the trust Talos would show at each step."""

    async def scenario(cluster: SimCluster) -> None:
        old = cluster.secrets.os
        new_cert, new_key = certgen.generate_ca("talos", pki.utcnow())
        old_pem, new_pem = old.crt_pem, pki.cert_to_pem(new_cert)
        nodes = cluster.node_refs()
        old_only = make_credential(*_client(old.cert, old.key), old_pem)
        new_both = make_credential(*_client(new_cert, new_key), old_pem + new_pem)
        new_only = make_credential(new_both.cert_pem, new_both.key_pem, new_pem)
        old_both = make_credential(old_only.cert_pem, old_only.key_pem, old_pem + new_pem)

        async def reaches(cred: TLSIdentity, timeout: float = 5) -> bool:
            """Version on every node over fresh connections (an open one would outlive a swap)."""
            async with TalosProvider(cluster.talosconfig, None, nodes, verify_timeout=timeout) as fresh:
                try:
                    for node in nodes:
                        await fresh.verify(node, cred)
                except GateFailedError:
                    return False
            return True

        async with TalosProvider(cluster.talosconfig, None, nodes) as provider:
            assert await reaches(old_only) and not await reaches(new_both, 0.3)
            # 1. accept NEW everywhere
            await _patch_all(
                provider, nodes, None, lambda f, _r: CAFields(f.issuer, f.issuer_key, (*f.accepted, new_pem))
            )
            assert await reaches(new_both) and await reaches(old_only)
            # 2. swap: NEW issues (control planes keep the key, workers get the cert only), OLD accepted
            await _patch_all(
                provider,
                nodes,
                new_both,
                lambda f, r: CAFields(new_pem, pki.key_to_pem(new_key) if r == "controlplane" else None, (old_pem,)),
            )
            assert await reaches(new_both) and await reaches(new_only)
            assert not await reaches(old_only, 0.3)  # server certs now come from NEW
            assert await reaches(old_both)  # ... but OLD client certs are still accepted
            # 3. remove OLD: it is revoked
            await _patch_all(provider, nodes, new_both, lambda f, _r: CAFields(f.issuer, f.issuer_key, ()))
            assert await reaches(new_only)
            assert not await reaches(old_both, 0.3)
            for node in cluster.nodes:
                assert node.client_trust_pem == new_pem

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=2)


def test_worker_trust_follows_its_control_plane(tmp_path: Path) -> None:
    """After a control plane accepts a CA, a worker trusts it only once its own config changes."""

    async def scenario(cluster: SimCluster) -> None:
        new_cert, _ = certgen.generate_ca("talos", pki.utcnow())
        new_pem = pki.cert_to_pem(new_cert)
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        cp_ref, worker_ref = cluster.node_refs()
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs()) as provider:
            accept = lambda f, _r: CAFields(f.issuer, f.issuer_key, (*f.accepted, new_pem))  # noqa: E731
            await provider.write(cp_ref, _edit(cp.config, accept))
            assert new_pem in cp.client_trust_pem and new_pem not in worker.client_trust_pem
            await provider.write(worker_ref, worker.config.replace(b"worker-1\n", b"worker-1\n", 1) + b"\n")
            assert new_pem in worker.client_trust_pem  # fresh "CSR" to the control plane's trustd
            assert worker.trustd_error is None

    run_with_cluster(scenario, tmp_path)


def test_proxy_connections_after_a_control_plane_pki_change(tmp_path: Path) -> None:
    """apid keeps an open proxy connection while its own PKI is unchanged, and flushes them all when
    it changes: a target that no longer accepts the proxy cert is then unreachable through it, and
    one that still accepts it stays reachable."""

    async def scenario(cluster: SimCluster) -> None:
        old = cluster.secrets.os
        new_cert, new_key = certgen.generate_ca("talos", pki.utcnow())
        new_pem = pki.cert_to_pem(new_cert)
        cp1, cp2 = cluster.controlplanes
        worker, other = cluster.workers
        cp1_ref, cp2_ref, worker_ref, _ = cluster.node_refs()
        admin = _client(old.cert, old.key)

        def through_cp1() -> Channel:  # the call names its target in `node` metadata
            return _channel(cp1.address, *admin, old.crt_pem + new_pem)

        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs()) as provider:
            for target in (worker, other):  # cp1 -> both workers is open
                assert await _version(through_cp1(), target.address) == TALOS
            # cp2 switches to NEW alone; the worker then gets its cert and trust from cp2's trustd
            new_only = lambda f, r: CAFields(  # noqa: E731
                new_pem, pki.key_to_pem(new_key) if r == "controlplane" else None, ()
            )
            await provider.write(cp2_ref, _edit(cp2.config, new_only))
            await provider.write(worker_ref, _edit(worker.config, new_only))
            assert worker.client_trust_pem == new_pem
            # the open connection outlives the worker's change, as in Talos
            assert await _version(through_cp1(), worker.address) == TALOS
            # cp1's own PKI changes (it accepts NEW; same issuer, same proxy cert): its connections
            # are flushed, and a new handshake to the worker fails, since the worker refuses OLD
            accept = lambda f, _r: CAFields(f.issuer, f.issuer_key, (*f.accepted, new_pem))  # noqa: E731
            await provider.write(cp1_ref, _edit(cp1.config, accept))
            with pytest.raises(GRPCError) as refused:
                await _version(through_cp1(), worker.address)
            assert refused.value.status is Status.UNAVAILABLE
            with pytest.raises(GRPCError):  # so does cp2, which trusts NEW alone
                await _version(through_cp1(), cp2.address)
            # the other worker still trusts OLD both ways: reachable
            assert await _version(through_cp1(), other.address) == TALOS
            # cp1 switches to NEW (OLD accepted): a new proxy cert, from NEW. The other worker, which
            # accepts OLD alone, refuses it although its connection was open; the first worker
            # (NEW alone) now accepts cp1's proxy cert
            swap = lambda f, _r: CAFields(new_pem, pki.key_to_pem(new_key), (old.crt_pem,))  # noqa: E731
            await provider.write(cp1_ref, _edit(cp1.config, swap))
            with pytest.raises(GRPCError) as refused:
                await _version(through_cp1(), other.address)
            assert refused.value.status is Status.UNAVAILABLE
            assert await _version(through_cp1(), worker.address) == TALOS

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=2)

"""TalosProvider against the simulator: real gRPC over real mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from simharness import run_with_cluster
from trustplan.providers.base import TLSIdentity
from trustplan.providers.talos.proto import machine_grpc
from trustplan.providers.talos.provider import TalosProvider
from trustplan.providers.talos.talosconfig import load_talosconfig, make_credential
from trustplan_sim import configgen
from trustplan_sim.cluster import SimCluster
from waiting import until

from trustplan.errors import GateFailedError, NodeUnreachableError, ProviderError
from trustplan.talos import certgen, machineconfig, pki


def _provider(cluster: SimCluster, **kw: float) -> TalosProvider:
    return TalosProvider(cluster.talosconfig, None, cluster.node_refs(), **kw)


def test_read_write_verify(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with _provider(cluster) as provider:
            for ref, node in zip(cluster.node_refs(), cluster.nodes, strict=True):
                assert await provider.verify(ref) == configgen.TALOS_VERSION
                live = await provider.read(ref)
                assert live.data == node.config  # exact bytes, through the control plane's proxy
                assert live.digest == machineconfig.digest(node.config)
            worker = cluster.workers[0]
            ref = cluster.node_refs()[-1]
            edited = worker.config.replace(b"hostname: worker-1", b"hostname: worker-one")
            out = await provider.write(ref, edited, dry_run=True)
            assert out.startswith("Dry run summary") and "+    hostname: worker-one" in out
            assert worker.config != edited
            assert "without a reboot" in await provider.write(ref, edited)
            assert (await provider.read(ref)).data == edited

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)


def test_nodes_are_spread_over_the_endpoints_each_keeping_its_own(tmp_path: Path) -> None:
    """As talosctl balances over its endpoints: node i goes through endpoint i mod 3, every time."""

    async def scenario(cluster: SimCluster) -> None:
        refs = cluster.node_refs()
        async with _provider(cluster) as provider:
            assert len(provider.endpoints) == 3
            used: list[str] = []
            slot_for = provider._pool.unary

            def recording(endpoint: Any, *args: Any) -> Any:
                used.append(endpoint.host)
                return slot_for(endpoint, *args)

            provider._pool.unary = recording  # type: ignore[method-assign]
            for _ in range(2):
                for ref in refs:
                    await provider.read(ref)
        hosts = [e.host for e in provider.endpoints]
        assert used == [hosts[i % 3] for i in range(len(refs))] * 2

    run_with_cluster(scenario, tmp_path, controlplanes=3, workers=3)


def test_invalid_config_is_refused_with_the_reason(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        copy = machineconfig.parse(worker.config, "worker")
        with_key = copy.with_ca_fields({"talos": machineconfig.parse(cp.config, cp.name).ca_fields("talos")})
        async with _provider(cluster) as provider:
            with pytest.raises(ProviderError, match=r"(?s)INVALID_ARGUMENT: .*key is not allowed on non-controlplane"):
                await provider.write(cluster.node_refs()[1], with_key, dry_run=True)

    run_with_cluster(scenario, tmp_path)


def test_unreachable_node_is_named(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        await cluster.workers[0].stop()
        ref = cluster.node_refs()[1]
        async with _provider(cluster, retry_timeout=0.5) as provider:
            with pytest.raises(NodeUnreachableError, match=rf"node {ref.address}: .*unreachable.*connection refused"):
                await provider.read(ref)

    run_with_cluster(scenario, tmp_path)


def test_injected_apply_failure_is_not_retried(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        node = cluster.workers[0]
        node.faults.apply_error, node.faults.apply_error_times = "disk on fire", 1
        async with _provider(cluster) as provider:
            with pytest.raises(ProviderError, match="INTERNAL: disk on fire"):
                await provider.write(cluster.node_refs()[1], node.config)
            assert await provider.write(cluster.node_refs()[1], node.config)

    run_with_cluster(scenario, tmp_path)


def _untrusted_credential(cluster: SimCluster) -> TLSIdentity:
    """An admin credential from a CA the nodes do not trust (the client still trusts their servers)."""
    now = pki.utcnow()
    other, other_key = certgen.generate_ca("talos", now)
    cert, key = certgen.issue_client_cert(other, other_key, "os:admin", now)
    bundle = cluster.secrets.os.crt_pem + pki.cert_to_pem(other)
    return make_credential(pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key), bundle)


def test_untrusted_credential_fails_the_gate(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cred = _untrusted_credential(cluster)
        async with _provider(cluster, verify_timeout=0.5) as provider:
            with pytest.raises(GateFailedError, match="TLS handshake refused"):
                await provider.verify(cluster.node_refs()[0], cred)

    run_with_cluster(scenario, tmp_path, workers=0)


def test_verify_many_asks_every_node_in_one_call(tmp_path: Path) -> None:
    """verify_many (apid's `nodes` fan-out) answers per node: a tag, or the error verify() gives."""

    async def scenario(cluster: SimCluster) -> None:
        refs = cluster.node_refs()
        async with _provider(cluster, verify_timeout=0.5) as provider:
            assert await provider.verify_many(refs) == [configgen.TALOS_VERSION] * len(refs)
            await cluster.workers[1].stop()
            results = await provider.verify_many(refs)
            assert results[:-1] == [configgen.TALOS_VERSION] * (len(refs) - 1)
            assert isinstance(results[-1], GateFailedError)
            assert str(results[-1]).startswith(f"node {refs[-1].address}: Version with the client cert issued by")
            assert "connection refused" in str(results[-1])
        async with _provider(cluster, verify_timeout=30) as provider:
            calls = 0
            slot_for = provider._pool.unary

            def counting(*args: Any) -> Any:  # each fanned-out call takes a stream slot first
                nonlocal calls
                calls += 1
                return slot_for(*args)

            provider._pool.unary = counting  # type: ignore[method-assign]
            task = asyncio.ensure_future(provider.verify_many(refs[-2:]))
            await until(lambda: calls >= 2, "verify_many asks the stopped worker again")
            assert not task.done()  # still asking the stopped worker
            await cluster.workers[1].start()  # back within the deadline: a retry finds it
            assert await task == [configgen.TALOS_VERSION] * 2

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=2)


def test_verify_many_with_an_untrusted_credential_fails_every_node(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cred = _untrusted_credential(cluster)
        refs = cluster.node_refs()
        async with _provider(cluster, verify_timeout=0.5) as provider:
            results = await provider.verify_many(refs, cred)
        assert [type(r) for r in results] == [GateFailedError] * len(refs)
        for ref, result in zip(refs, results, strict=True):
            assert str(result).startswith(f"node {ref.address}:") and "TLS handshake refused" in str(result)

    run_with_cluster(scenario, tmp_path, workers=1)


def test_plain_grpclib_client_can_call_version(tmp_path: Path) -> None:
    """A client built from the stdlib and grpclib alone (no trustplan transport code) works."""

    async def scenario(cluster: SimCluster) -> None:
        tc = load_talosconfig(cluster.talosconfig)
        (tmp_path / "ca.pem").write_bytes(tc.ca_pem)
        (tmp_path / "client.pem").write_bytes(tc.crt_pem + pki.key_to_pkcs8_pem(pki.load_key_pem(tc.key_pem, "k")))
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        ctx.load_cert_chain(str(tmp_path / "client.pem"))
        ctx.set_alpn_protocols(["h2"])
        for node in cluster.nodes:
            endpoint = cluster.controlplanes[0].address
            channel = Channel(endpoint, 50000, ssl=ctx)
            try:
                reply = await machine_grpc.MachineServiceStub(channel).Version(
                    Empty(), metadata={"node": node.address}, timeout=5
                )
            finally:
                channel.close()
            assert reply.messages[0].version.tag == configgen.TALOS_VERSION
            assert reply.messages[0].metadata.hostname == node.name

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=2)


def test_openssl_s_client_handshake(tmp_path: Path) -> None:
    """OpenSSL's own client completes the mTLS handshake and negotiates h2 with a node."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")

    async def scenario(cluster: SimCluster) -> None:
        tc = load_talosconfig(cluster.talosconfig)
        (tmp_path / "ca.pem").write_bytes(tc.ca_pem)
        (tmp_path / "crt.pem").write_bytes(tc.crt_pem)
        (tmp_path / "key.pem").write_bytes(pki.key_to_pkcs8_pem(pki.load_key_pem(tc.key_pem, "k")))
        address = cluster.controlplanes[0].address
        cmd = [
            "openssl",
            "s_client",
            "-connect",
            f"{address}:50000",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-cert",
            str(tmp_path / "crt.pem"),
            "-key",
            str(tmp_path / "key.pem"),
            "-alpn",
            "h2",
            "-verify_ip",
            address,
            "-verify_return_error",
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        text = out.decode(errors="replace")
        assert "Verify return code: 0 (ok)" in text, text
        assert "ALPN protocol: h2" in text, text

    run_with_cluster(scenario, tmp_path, workers=0)


@pytest.mark.timeout(120)  # a bound on a hang, not a measurement: the read must not retry for an hour
def test_refused_tls_at_read_gives_up_after_the_tls_window(tmp_path: Path) -> None:
    """A read with a credential the endpoint refuses is a TLS refusal (so that the caller can fall back
    to another credential), given up on after tls_retry_timeout though retry_timeout is an hour.
    When the give-up happens is tests/providers/test_retry.py's subject, on a fake clock."""

    async def scenario(cluster: SimCluster) -> None:
        now = pki.utcnow()
        other, other_key = certgen.generate_ca("talos", now)
        cert, key = certgen.issue_client_cert(other, other_key, "os:admin", now)
        cred = make_credential(pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key), cluster.secrets.os.crt_pem)
        async with _provider(cluster, retry_timeout=3600, tls_retry_timeout=0.5) as provider:
            with pytest.raises(ProviderError, match="TLS handshake refused") as err:
                await provider.read(cluster.node_refs()[0], cred)
            assert not isinstance(err.value, NodeUnreachableError)
            assert f"node {cluster.node_refs()[0].address}: cannot read the machine config" in str(err.value)

    run_with_cluster(scenario, tmp_path, workers=0)


def test_node_dying_mid_apply(tmp_path: Path) -> None:
    """The node stores the config and dies before answering: the caller sees it unreachable."""

    async def scenario(cluster: SimCluster) -> None:
        node = cluster.workers[0]
        node.faults.die_on_apply = True
        new = node.config + b"\n"
        async with _provider(cluster, retry_timeout=0.5) as provider:
            with pytest.raises(NodeUnreachableError, match=node.address):
                await provider.write(cluster.node_refs()[1], new)
        assert node.config == new and not node.running

    run_with_cluster(scenario, tmp_path)


class _EndedStream:
    """A Watch stream that has ended (the server closed it) after `events`."""

    def __init__(self, *events: object, block: bool = False) -> None:
        self.events = list(events)
        self.block = block

    async def recv_message(self) -> object:
        from trustplan.providers.talos.proto import cosi_state_pb2

        if self.events:
            return cosi_state_pb2.WatchResponse(event=[self.events.pop(0)])
        if self.block:
            await asyncio.Event().wait()
        return None


def _kubelet_event(running: bool, healthy: bool) -> object:
    from trustplan.providers.talos.proto import cosi_resource_pb2, cosi_state_pb2

    spec = cosi_resource_pb2.Spec(yaml_spec=f"running: {str(running).lower()}\nhealthy: {str(healthy).lower()}\n")
    return cosi_state_pb2.Event(event_type=cosi_state_pb2.UPDATED, resource=cosi_resource_pb2.Resource(spec=spec))


def test_a_kubelet_that_never_comes_back_is_a_timeout_even_if_the_watch_ends() -> None:
    """Issue 8: a watch that ends early is opened again; a kubelet that never returns is reported
    as a timeout, not as "watch ended"."""
    from trustplan.providers.talos.kubelet import KubeletWatch, WatchEvents

    async def reopen() -> WatchEvents:
        return WatchEvents(_EndedStream(_kubelet_event(False, False), block=True))

    watch = KubeletWatch("10.5.0.3", WatchEvents(_EndedStream()), 0.6, reopen)
    with pytest.raises(ProviderError, match=r"did not come back within 0.6 s .*: timeout"):
        asyncio.run(watch.wait())


def test_a_kubelet_back_when_the_watch_is_reopened_counts_as_restarted() -> None:
    from trustplan.providers.talos.kubelet import KubeletWatch, WatchEvents

    async def reopen() -> WatchEvents:
        return WatchEvents(_EndedStream(_kubelet_event(True, True), block=True))

    watch = KubeletWatch("10.5.0.3", WatchEvents(_EndedStream(_kubelet_event(False, False))), 5.0, reopen)
    asyncio.run(watch.wait())  # returns: down, the watch ended, then healthy on the new watch

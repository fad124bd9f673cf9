"""The simulated Kubernetes API (`sim up --k8s`): mTLS, nodes, restarts on a Kubernetes CA change.

Requests use plain `ssl` + `http.client` (and the `kubernetes` client once) in a worker thread,
since the simulator runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from simharness import TRUSTPLAN, SimProcess, run_with_cluster
from trustplan.providers.talos.proto import (
    cosi_state_grpc,
    cosi_state_pb2,
    machine_grpc,
    machine_pb2,
    resource_v1alpha1_pb2,
)
from trustplan.providers.talos.talosconfig import load_talosconfig
from trustplan.providers.talos.tls import client_context
from trustplan_sim import configgen
from trustplan_sim.cluster import SimCluster
from trustplan_sim.node import SimNode
from waiting import until

from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.machineconfig import CAFields

KUBELET = {"namespace": "runtime", "type": "Services.v1alpha1.talos.dev"}
FAST: dict[str, Any] = {"k8s": True, "apiserver_restart_ms": 300, "kubelet_rejoin_ms": 200}
REFUSED = (ssl.SSLError, ConnectionError, http.client.HTTPException)


class Creds:
    """A client identity for HTTPS requests: CA bundle, client cert and key, as files."""

    def __init__(self, dir: Path, name: str, ca: bytes, crt: bytes, key: bytes) -> None:
        dir.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.crt, self.key = dir / f"{name}.crt", dir / f"{name}.key"
        self.crt.write_bytes(crt)
        self.key.write_bytes(key)
        self.key.chmod(0o600)

    @classmethod
    def from_kubeconfig(cls, path: Path, dir: Path, name: str = "admin") -> Creds:
        doc = machineconfig.load_yaml(path.read_bytes())
        ca = pki.b64decode_pem(doc["clusters"][0]["cluster"]["certificate-authority-data"], str(path), "ca")
        user = doc["users"][0]["user"]
        crt = pki.b64decode_pem(user["client-certificate-data"], str(path), "crt")
        key = pki.b64decode_pem(user["client-key-data"], str(path), "key")
        return cls(dir, name, ca, crt, key)

    @classmethod
    def issued(
        cls,
        dir: Path,
        name: str,
        ca_cert: x509.Certificate,
        ca_key: pki.PrivateKey,
        trust: bytes,
        group: str = "system:masters",
    ) -> Creds:
        cert, key = certgen.issue_client_cert(ca_cert, ca_key, group, pki.utcnow(), common_name=name)
        return cls(dir, name, trust, pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key))

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.decode())
        ctx.load_cert_chain(self.crt, self.key)
        return ctx


def _get_sync(address: str, port: int, path: str, creds: Creds) -> tuple[int, Any, x509.Certificate]:
    conn = http.client.HTTPSConnection(address, port, context=creds.context(), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        ctype = response.getheader("Content-Type", "")
        document = json.loads(body) if "json" in ctype else body.decode()
        return response.status, document, x509.load_der_x509_certificate(der)
    finally:
        conn.close()


async def get(node: SimNode, path: str, creds: Creds) -> tuple[int, Any, x509.Certificate]:
    """GET https://<node>:<k8s port><path> with these credentials (in a thread)."""
    return await asyncio.to_thread(_get_sync, node.address, node.cluster.k8s_port, path, creds)


def ready(nodes: dict[str, Any]) -> dict[str, str]:
    """hostname -> status of the Ready condition, from a NodeList."""
    return {
        n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        for n in nodes["items"]
    }


def _admin_channel(cluster: SimCluster) -> Channel:
    tc = load_talosconfig(cluster.talosconfig)
    return Channel(cluster.controlplanes[0].address, 50000, ssl=client_context(tc.crt_pem, tc.key_pem, tc.ca_pem))


async def apply(cluster: SimCluster, node: SimNode, data: bytes) -> None:
    """ApplyConfiguration (NO_REBOOT) through the first control plane's proxy, as a client would."""
    channel = _admin_channel(cluster)
    try:
        await machine_grpc.MachineServiceStub(channel).ApplyConfiguration(
            machine_pb2.ApplyConfigurationRequest(data=data, mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT),
            metadata={"node": node.address},
            timeout=10,
        )
    finally:
        channel.close()


def swapped(node: SimNode, new_cert: x509.Certificate, new_key: pki.PrivateKey) -> bytes:
    """The node's config with the Kubernetes CA swapped to `new` (old kept in accepted), by hand."""
    old = machineconfig.parse(node.config, node.name).ca_fields("kubernetes")
    assert old.issuer is not None
    key = pki.key_to_pem(new_key) if node.role == "controlplane" else None
    fields = CAFields(issuer=pki.cert_to_pem(new_cert), issuer_key=key, accepted=(old.issuer,))
    return machineconfig.parse(node.config, node.name).with_ca_fields({"kubernetes": fields})


def test_nodes_version_readyz_and_files(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        kubeconfig = tmp_path / "kubeconfig"
        assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
        doc = machineconfig.load_yaml(kubeconfig.read_bytes())
        assert doc["clusters"][0]["cluster"]["server"] == f"https://{cluster.controlplanes[0].address}:6443"
        sim = json.loads((tmp_path / "sim.json").read_text())
        assert [n.get("k8s") for n in sim["nodes"]] == [
            {"address": cluster.nodes[0].address, "port": 6443},
            {"address": cluster.nodes[1].address, "port": 6443},
            None,
        ]
        desired = (tmp_path / "trustplan.yaml").read_text()
        assert "kubernetes: {issuer: k8s-new" in desired and "kubeconfig: kubeconfig" in desired
        creds = Creds.from_kubeconfig(kubeconfig, tmp_path / "creds")
        for cp in cluster.controlplanes:
            code, nodes, server_cert = await get(cp, "/api/v1/nodes", creds)
            assert code == 200 and nodes["kind"] == "NodeList"
            assert ready(nodes) == {"cp-1": "True", "cp-2": "True", "worker-1": "True"}
            addresses = [n["status"]["addresses"][0] for n in nodes["items"]]
            assert addresses == [{"type": "InternalIP", "address": n.address} for n in cluster.nodes]
            assert pki.verify_issued_by(server_cert, cluster.secrets.k8s.cert)
            assert isinstance(server_cert.public_key(), type(cluster.secrets.k8s.cert.public_key()))
        code, version, _ = await get(cluster.controlplanes[1], "/version", creds)
        assert code == 200 and version["gitVersion"] == configgen.KUBERNETES_VERSION and version["major"] == "1"
        assert (await get(cluster.controlplanes[0], "/readyz", creds))[:2] == (200, "ok")
        code, missing, _ = await get(cluster.controlplanes[0], "/api/v1/pods", creds)
        assert code == 404 and missing["kind"] == "Status"

        def with_kubernetes_client() -> dict[str, str]:
            from kubernetes import client, config

            api = config.new_client_from_config_dict(machineconfig.load_yaml(kubeconfig.read_bytes()))
            try:
                items = client.CoreV1Api(api).list_node().items
                return {n.metadata.name: n.status.conditions[0].status for n in items}
            finally:
                api.close()

        assert await asyncio.to_thread(with_kubernetes_client) == {"cp-1": "True", "cp-2": "True", "worker-1": "True"}

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1, k8s=True)


def test_unknown_ca_refused_and_rbac(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp = cluster.controlplanes[0]
        k8s = cluster.secrets.k8s
        other, other_key = certgen.generate_ca("kubernetes", pki.utcnow())
        stranger = Creds.issued(tmp_path, "stranger", other, other_key, k8s.crt_pem)
        with pytest.raises(REFUSED):
            await get(cp, "/version", stranger)
        # a client that trusts only another CA refuses the server
        doubter = Creds.issued(tmp_path, "doubter", k8s.cert, k8s.key, pki.cert_to_pem(other))
        with pytest.raises(ssl.SSLCertVerificationError):
            await get(cp, "/version", doubter)
        viewer = Creds.issued(tmp_path, "viewer", k8s.cert, k8s.key, k8s.crt_pem, group="viewers")
        assert (await get(cp, "/version", viewer))[0] == 200
        code, status, _ = await get(cp, "/api/v1/nodes", viewer)
        assert code == 403 and status["reason"] == "Forbidden" and '"viewer"' in status["message"]
        # the Talos CA is no Kubernetes CA
        wrong_pki = Creds.issued(tmp_path, "talos-admin", cluster.secrets.os.cert, cluster.secrets.os.key, k8s.crt_pem)
        with pytest.raises(REFUSED):
            await get(cp, "/version", wrong_pki)

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=0, k8s=True)


async def _watch_kubelet(channel: Channel, node: SimNode, events: list[tuple[int, bool, bool]]) -> None:
    """Collect (event type, running, healthy) of the node's kubelet through the proxy until cancelled."""
    stub = cosi_state_grpc.StateStub(channel)
    async with stub.Watch.open(metadata={"node": node.address}) as watch:
        await watch.send_message(cosi_state_pb2.WatchRequest(**KUBELET, id="kubelet"), end=True)
        async for reply in watch:
            for event in reply.event:
                spec = resource_v1alpha1_pb2.ServiceSpec.FromString(event.resource.spec.proto_spec)
                events.append((event.event_type, spec.running, spec.healthy))


def test_kube_ca_swap_restarts_apiserver_and_kubelet(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp1, cp2 = cluster.controlplanes
        admin = Creds.from_kubeconfig(tmp_path / "kubeconfig", tmp_path / "creds")
        new, new_key = certgen.generate_ca("kubernetes", pki.utcnow())
        channel = _admin_channel(cluster)
        events: list[tuple[int, bool, bool]] = []
        watcher = asyncio.create_task(_watch_kubelet(channel, cp2, events))
        try:
            await until(lambda: events, "the watch saw the kubelet")
            assert events == [(cosi_state_pb2.CREATED, True, True)]
            restarts = cp2.apiserver.restarts if cp2.apiserver else 0
            # the restarts this change begins last until the test has looked (no race with a timer)
            cluster.apiserver_restart_ms = cluster.kubelet_rejoin_ms = 3_600_000
            await apply(cluster, cp2, swapped(cp2, new, new_key))
            with pytest.raises(ConnectionRefusedError):
                await get(cp2, "/readyz", admin)
            code, nodes, _ = await get(cp1, "/api/v1/nodes", admin)
            assert code == 200 and ready(nodes)["cp-2"] == "False" and ready(nodes)["cp-1"] == "True"
            # the kubelet resource is gone meanwhile (COSI Get through the proxy: NotFound)
            with pytest.raises(GRPCError) as missing:
                await cosi_state_grpc.StateStub(channel).Get(
                    cosi_state_pb2.GetRequest(**KUBELET, id="kubelet"), metadata={"node": cp2.address}, timeout=5
                )
            assert missing.value.status is Status.NOT_FOUND
            # the restart times pass: the API server comes back, the kubelet rejoins
            cluster.apiserver_restart_ms = cluster.kubelet_rejoin_ms = 100
            assert cp2.apiserver is not None
            await cp2.apiserver.start()
            cp2.kubelet.halt()
            cp2.kubelet.resume()

            async def serving_new() -> bool:
                new_admin = Creds.issued(tmp_path, "new-admin", new, new_key, pki.cert_to_pem(new))
                try:
                    return (await get(cp2, "/readyz", new_admin))[0] == 200
                except ConnectionRefusedError:
                    return False

            await until(serving_new, "cp-2's API server serves a cert of the new CA")
            assert (cp2.apiserver.restarts if cp2.apiserver else 0) == restarts + 1  # down, then back: once
            await until(lambda: len(events) >= 3, "the kubelet came back")
            assert events == [
                (cosi_state_pb2.CREATED, True, True),
                (cosi_state_pb2.DESTROYED, True, True),  # COSI's Destroyed carries the last state
                (cosi_state_pb2.CREATED, True, True),
            ]
            code, nodes, _ = await get(cp1, "/api/v1/nodes", admin)
            assert set(ready(nodes).values()) == {"True"}
            # cp-2 now serves a cert from the new CA, and still accepts the old admin (old is accepted)
            both = admin.ca + pki.cert_to_pem(new)
            old_admin = Creds(tmp_path, "old-admin", both, admin.crt.read_bytes(), admin.key.read_bytes())
            code, _, server_cert = await get(cp2, "/version", old_admin)
            assert code == 200 and pki.verify_issued_by(server_cert, new)
            # cp-1 has not accepted the new CA: a new admin cert is refused there
            new_admin = Creds.issued(tmp_path, "new-admin-2", new, new_key, admin.ca + pki.cert_to_pem(new))
            with pytest.raises(REFUSED):
                await get(cp1, "/version", new_admin)
            # a config change that leaves the Kubernetes CA alone restarts nothing
            before = (cp2.apiserver.restarts if cp2.apiserver else 0, cp2.kubelet.restarts)
            await apply(cluster, cp2, cp2.config + b"\n")
            assert (cp2.apiserver.restarts if cp2.apiserver else 0, cp2.kubelet.restarts) == before
            assert (await get(cp2, "/readyz", new_admin))[0] == 200
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=0, **FAST)


def test_kubelet_stuck_and_unhealthy_first(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp = cluster.controlplanes[0]
        stuck, slow = cluster.workers
        stuck.faults.kubelet_stuck = True
        slow.faults.kubelet_unhealthy_first = True
        admin = Creds.from_kubeconfig(tmp_path / "kubeconfig", tmp_path / "creds")
        new, new_key = certgen.generate_ca("kubernetes", pki.utcnow())
        channel = _admin_channel(cluster)
        events: list[tuple[int, bool, bool]] = []
        watcher = asyncio.create_task(_watch_kubelet(channel, slow, events))
        try:
            await until(lambda: events, "the watch saw the kubelet")
            for worker in (stuck, slow):
                await apply(cluster, worker, swapped(worker, new, new_key))
            await until(lambda: len(events) >= 4, "the slow kubelet became healthy")
            assert events == [
                (cosi_state_pb2.CREATED, True, True),
                (cosi_state_pb2.DESTROYED, True, True),
                (cosi_state_pb2.CREATED, True, False),
                (cosi_state_pb2.UPDATED, True, True),
            ]
            await until(lambda: stuck.kubelet.waiting, "the stuck kubelet gave up rejoining")
            code, nodes, _ = await get(cp, "/api/v1/nodes", admin)
            assert ready(nodes) == {"cp-1": "True", "worker-1": "False", "worker-2": "True"}
            assert stuck.kubelet.state is None and "stuck" in (stuck.kubelet.waiting or "")
            # a fresh Watch of a stopped service starts with DESTROYED (COSI's tombstone)
            stuck_events: list[tuple[int, bool, bool]] = []
            other = asyncio.create_task(_watch_kubelet(channel, stuck, stuck_events))
            await until(lambda: stuck_events, "the watch of the stuck kubelet saw its tombstone")
            other.cancel()
            await asyncio.gather(other, return_exceptions=True)
            assert stuck_events == [(cosi_state_pb2.DESTROYED, False, False)]
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            channel.close()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=2, **FAST)


def test_multidoc_layout(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        cp, worker = cluster.controlplanes[0], cluster.workers[0]
        for node in cluster.nodes:
            assert machineconfig.parse(node.config, node.name).kube_ca_layout == "multidoc"
            assert "ca" not in node.parsed.v1alpha1["cluster"]
            assert b"kind: KubeAPIServerCAConfig" in node.config
        assert b"issuingCA:" not in worker.config
        admin = Creds.from_kubeconfig(tmp_path / "kubeconfig", tmp_path / "creds")
        code, nodes, server_cert = await get(cp, "/api/v1/nodes", admin)
        assert code == 200 and ready(nodes) == {"cp-1": "True", "worker-1": "True"}
        assert pki.verify_issued_by(server_cert, cluster.secrets.k8s.cert)
        # accept a new CA on the control plane: the API restarts and accepts certs from it
        new, new_key = certgen.generate_ca("kubernetes", pki.utcnow())
        fields = machineconfig.parse(cp.config, cp.name).ca_fields("kubernetes")
        accepted = CAFields(fields.issuer, fields.issuer_key, (*fields.accepted, pki.cert_to_pem(new)))
        cluster.apiserver_restart_ms = 3_600_000  # down until the test has looked
        await apply(cluster, cp, machineconfig.parse(cp.config, cp.name).with_ca_fields({"kubernetes": accepted}))
        with pytest.raises(ConnectionRefusedError):
            await get(cp, "/readyz", admin)
        assert cp.apiserver is not None
        await cp.apiserver.start()  # the restart time has passed
        new_admin = Creds.issued(tmp_path, "new-admin", new, new_key, admin.ca)

        async def nodes_with_new_admin() -> bool:
            try:
                code, nodes, _ = await get(cp, "/api/v1/nodes", new_admin)
            except ConnectionRefusedError:
                return False
            return code == 200 and set(ready(nodes).values()) == {"True"}

        await until(nodes_with_new_admin, "the API server accepts an admin of the new CA")
        # the worker's kubelet restarts when its acceptedCAs change
        await apply(cluster, worker, swapped(worker, new, new_key))
        assert worker.kubelet.state is None
        await until(lambda: worker.kubelet.ready, "the worker's kubelet rejoined")

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1, config_layout="multidoc", **FAST)


def test_sim_up_k8s_cli(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    with SimProcess(sim_dir, controlplanes=1, workers=1, k8s=True, config_layout="multidoc",
                    apiserver_restart_ms=100) as sim:
        doc = sim.doc
        cp = doc["nodes"][0]
        assert cp["k8s"] == {"address": cp["address"], "port": 6443} and "k8s" not in doc["nodes"][1]
        assert doc["config_layout"] == "multidoc"
        assert f"kubeconfig: {sim_dir / 'kubeconfig'}   config layout: multidoc" in sim.stderr
        assert stat.S_IMODE((sim_dir / "kubeconfig").stat().st_mode) == 0o600
        creds = Creds.from_kubeconfig(sim_dir / "kubeconfig", tmp_path / "creds")
        code, nodes, _ = _get_sync(cp["address"], 6443, "/api/v1/nodes", creds)
        assert code == 200 and set(ready(nodes).values()) == {"True"} and len(nodes["items"]) == 2
        down = subprocess.run([*TRUSTPLAN, "sim", "down", "--dir", str(sim_dir)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert down.returncode == 0, down.stderr
        assert sim.stop() == 0


def test_kubelet_service_get_and_list_without_k8s(tmp_path: Path) -> None:
    """Every node has a kubelet service resource, also without --k8s (readable by os:reader)."""

    async def scenario(cluster: SimCluster) -> None:
        worker = cluster.workers[0]
        channel = _admin_channel(cluster)
        stub = cosi_state_grpc.StateStub(channel)
        try:
            got = await stub.Get(
                cosi_state_pb2.GetRequest(**KUBELET, id="kubelet"), metadata={"node": worker.address}, timeout=5
            )
            assert got.resource.metadata.id == "kubelet" and got.resource.metadata.namespace == "runtime"
            assert got.resource.spec.yaml_spec == "running: true\nhealthy: true\nunknown: false\n"
            listed = await stub.List(cosi_state_pb2.ListRequest(**KUBELET), metadata={"node": worker.address})
            assert [r.resource.metadata.id for r in listed] == ["kubelet"]
            with pytest.raises(GRPCError) as missing:
                await stub.Get(cosi_state_pb2.GetRequest(**KUBELET, id="etcd"), timeout=5)
            assert missing.value.status is Status.NOT_FOUND
            await machine_grpc.MachineServiceStub(channel).Version(Empty(), timeout=5)
        finally:
            channel.close()
        assert cluster.nodes[0].apiserver is None and not (tmp_path / "kubeconfig").exists()

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=1)

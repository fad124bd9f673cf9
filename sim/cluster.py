"""A simulated Talos cluster: N control planes and M workers on loopback addresses, port 50000.

    async with run_cluster(3, 2, Path("demo")) as cluster:
        ...   # DIR/talosconfig, DIR/secrets.yaml, DIR/trustplan.yaml, DIR/sim.json are written

    async with run_cluster(3, 2, Path("demo"), k8s=True, config_layout="multidoc") as cluster:
        ...   # also a kube-apiserver on each control plane (port 6443) and DIR/kubeconfig

Node k listens on the (k+2)th address of the subnet (control planes first), so the talosconfig holds
plain IPs like a real one. Machine configs are generated from one ClusterSecrets the way
`talosctl gen config` would, with the Kubernetes API CA in `cluster.ca` (config_layout="legacy") or
in a KubeAPIServerCAConfig document (config_layout="multidoc", Talos 1.14).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from trustplan.providers.base import NodeRef
from trustplan.providers.talos.talosconfig import write_talosconfig
from trustplan_sim import configgen
from trustplan_sim.kube import KUBE_PORT
from trustplan_sim.node import SimNode
from trustplan_sim.realk8s import RealK8s

from trustplan.errors import TrustplanError
from trustplan.system.atomic import replace_with_backup
from trustplan.system.safeio import ensure_dir
from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.clientconfig import kubeconfig_document

K8sMode = Literal["sim", "real"]
CLUSTER_NAME = "sim"
CONTEXT = "sim"
DEFAULT_SUBNET = "127.20.0.0/24"
PORT = 50000


class SimCluster:
    """The simulated cluster: its nodes, its secrets, and the files it wrote into `dir`."""

    def __init__(
        self,
        controlplanes: int,
        workers: int,
        dir: Path | str,
        subnet: str = DEFAULT_SUBNET,
        latency_ms: float = 0,
        port: int = PORT,
        *,
        k8s: bool = False,
        k8s_port: int = KUBE_PORT,
        apiserver_restart_ms: float = 2000,
        kubelet_rejoin_ms: float = 1000,
        config_layout: machineconfig.KubeCALayout = "legacy",
        k8s_mode: K8sMode = "sim",
        kube_apiserver: str | None = None,
        etcd: str | None = None,
    ) -> None:
        if controlplanes < 1:
            raise ValueError("a cluster needs at least one control plane")
        if workers < 0:
            raise ValueError("workers cannot be negative")
        network = ipaddress.ip_network(subnet, strict=False)
        if network.num_addresses < controlplanes + workers + 3:
            raise ValueError(f"subnet {subnet} is too small for {controlplanes + workers} nodes")
        if not network.is_loopback:
            raise ValueError(f"subnet {subnet} is not a loopback network (use 127.x.y.0/24)")
        if config_layout not in ("legacy", "multidoc"):
            raise ValueError(f"unknown config layout {config_layout!r} (legacy or multidoc)")
        if apiserver_restart_ms < 0 or kubelet_rejoin_ms < 0:
            raise ValueError("restart and rejoin times cannot be negative")
        self.dir = Path(dir)
        self.latency = latency_ms / 1000.0
        #: waits out `latency` once per client call (tests replace it to see where latency is added)
        self.delay: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.port = port
        #: serve a Kubernetes API on every control plane (and write DIR/kubeconfig)
        self.k8s = k8s
        self.k8s_port = k8s_port
        self.apiserver_restart_ms = apiserver_restart_ms
        self.kubelet_rejoin_ms = kubelet_rejoin_ms
        self.config_layout: machineconfig.KubeCALayout = config_layout
        if k8s_mode not in ("sim", "real"):
            raise ValueError(f"unknown Kubernetes mode {k8s_mode!r} (sim or real)")
        #: with k8s_mode="real": real etcd members and kube-apiservers (trustplan_sim.realk8s)
        self.real: RealK8s | None = None
        if k8s and k8s_mode == "real":
            self.real = RealK8s(self.dir / "k8s-real", kube_apiserver, etcd)
        #: the one Talos version every node reports (Version, Members), matching its configs
        self.talos_version = configgen.talos_version(config_layout)
        self.created = dt.datetime.now(dt.UTC)
        #: set once every node listens; before that, trustd needs no running control plane
        self.started = False
        #: set when stop() begins (a stopped node's kubelet then reports nothing)
        self.stopping = False
        self.secrets = configgen.ClusterSecrets.generate(pki.utcnow())
        base = network.network_address
        self.nodes: list[SimNode] = []
        self._by_key: dict[str, SimNode] = {}
        self._controlplanes: list[SimNode] = []  # in order; roles never change
        plan = [("controlplane", f"cp-{i + 1}") for i in range(controlplanes)]
        plan += [("worker", f"worker-{i + 1}") for i in range(workers)]
        endpoint = f"https://{base + 2}:6443"
        for k, (role, name) in enumerate(plan):
            address = str(base + 2 + k)
            config = configgen.generate_config(
                self.secrets,
                cluster_name=CLUSTER_NAME,
                endpoint=endpoint,
                role=role,  # type: ignore[arg-type]
                hostname=name,
                address=address,
                kube_ca_layout=config_layout,
            )
            node = SimNode(self, name, role, address, port, config)
            self.nodes.append(node)
            self._by_key[name] = self._by_key[address] = node
            if role == "controlplane":
                self._controlplanes.append(node)

    # --- lookup ---------------------------------------------------------------------------

    @property
    def controlplanes(self) -> list[SimNode]:
        """The control planes, in order (each worker's trustd asks them at every config change:
        listed as the nodes are made, not re-filtered from every node each time)."""
        return list(self._controlplanes)

    @property
    def workers(self) -> list[SimNode]:
        return [n for n in self.nodes if n.role == "worker"]

    def node(self, key: str) -> SimNode:
        """A node by name (`cp-1`, `worker-2`) or address."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"no simulated node {key!r}") from None

    async def stop_node(self, key: str) -> None:
        """Make a node unreachable: stop its listener and drop its open connections."""
        await self.node(key).stop()

    async def start_node(self, key: str) -> None:
        """Bring a stopped node back (same config, certs and trust)."""
        await self.node(key).start()

    def port_of(self, address: str) -> int:
        node = self._by_key.get(address)
        return node.port if node is not None else PORT

    def node_refs(self) -> list[NodeRef]:
        """The nodes as the desired state lists them."""
        return [NodeRef(n.address, n.role, n.port) for n in self.nodes]  # type: ignore[arg-type]

    @property
    def talosconfig(self) -> Path:
        return self.dir / "talosconfig"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def endpoints(self) -> list[str]:
        return [n.address for n in self.controlplanes]

    @property
    def k8s_server(self) -> str:
        """The Kubernetes API URL clients use: the first control plane (the config's endpoint)."""
        return f"https://{self.controlplanes[0].address}:{self.k8s_port}"

    def k8s_resource_version(self) -> int:
        """A resourceVersion for NodeLists: grows with every config change and kubelet restart."""
        return sum(n.version + n.kubelet.restarts for n in self.nodes)

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Issue certs (control planes first: workers get theirs from a control plane's trustd),
        start every listener, then write the files; sim.json last."""
        for node in self.controlplanes:
            node.reload_pki()
        for node in self.workers:
            node.reload_pki()
        if self.real is not None:
            await self.real.start_etcd(self.controlplanes)
        await asyncio.gather(*(node.start() for node in self.nodes))
        self.started = True
        if self.real is not None:
            await asyncio.gather(*(_register(node) for node in self.nodes))
        ensure_dir(self.dir)  # 0700 whatever the umask: it holds secrets.yaml
        self.write_talosconfig(self.talosconfig)
        if self.k8s:
            self.write_kubeconfig(self.kubeconfig)
        _write(self.dir / "secrets.yaml", self.secrets.to_yaml(), mode=0o600)
        _write(self.dir / "trustplan.yaml", desired_state_yaml(self).encode())
        _write(self.dir / "sim.json", (json.dumps(self.describe(), indent=2) + "\n").encode())

    async def stop(self) -> None:
        """Stop every node (and its kubelet and API server) and remove sim.json."""
        self.stopping = True
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        for node in self.nodes:
            node.kubelet.close()
        if self.real is not None:
            await self.real.stop(self.controlplanes)
        with suppress(FileNotFoundError):
            (self.dir / "sim.json").unlink()

    def describe(self) -> dict[str, Any]:
        """The sim.json document."""
        nodes: list[dict[str, Any]] = []
        for n in self.nodes:
            entry: dict[str, Any] = {"name": n.name, "role": n.role, "address": n.address, "port": n.port}
            if n.apiserver is not None:
                entry["k8s"] = {"address": n.address, "port": n.apiserver.port}
            nodes.append(entry)
        doc: dict[str, Any] = {"pid": os.getpid(), "nodes": nodes}
        if self.k8s:
            doc["kubeconfig"] = str(self.kubeconfig)
            doc["config_layout"] = self.config_layout
            doc["k8s_mode"] = "real" if self.real is not None else "sim"
        return doc

    def write_kubeconfig(self, path: Path, group: str = "system:masters", user: str = "admin") -> Path:
        """A kubeconfig (mode 0600) like `talosctl kubeconfig`: a fresh client cert (Subject
        O=`group`, CN=`user`, ECDSA P-256) from the cluster's Kubernetes CA; the server is the first
        control plane; the CA data is that CA."""
        k8s = self.secrets.k8s
        cert, key = certgen.issue_client_cert(k8s.cert, k8s.key, group, pki.utcnow(), common_name=user)
        document = kubeconfig_document(
            CLUSTER_NAME, self.k8s_server, k8s.crt_pem, pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key)
        )
        replace_with_backup(path, machineconfig.dump_yaml(document).encode())
        return path

    def write_talosconfig(self, path: Path, role: str = "os:admin") -> Path:
        """A talosconfig with a fresh client cert (Subject O=`role`) from the cluster's OS CA."""
        cert, key = certgen.issue_client_cert(self.secrets.os.cert, self.secrets.os.key, role, pki.utcnow())
        return write_talosconfig(
            path,
            context=CONTEXT,
            endpoints=self.endpoints,
            ca_pem=self.secrets.os.crt_pem,
            crt_pem=pki.cert_to_pem(cert),
            key_pem=pki.key_to_pem(key),
        )


def desired_state_yaml(cluster: SimCluster) -> str:
    """DIR/trustplan.yaml: rotate the Talos API CA of this cluster, and with k8s also the Kubernetes
    API CA (paths relative to DIR)."""
    cps = ", ".join(n.address for n in cluster.controlplanes)
    workers = ", ".join(n.address for n in cluster.workers)
    if cluster.k8s:
        what = "the Talos API CA and the Kubernetes API CA to newly generated ones"
        authorities = "  talos-new: {generate: {algorithm: ed25519}}\n  k8s-new: {generate: {algorithm: ecdsa-p256}}\n"
        trust = "  talos: {issuer: talos-new, accepted: []}\n  kubernetes: {issuer: k8s-new, accepted: []}\n"
        outputs = "{talosconfig: talosconfig, kubeconfig: kubeconfig}"
    else:
        what = "the Talos API CA to a newly generated one"
        authorities = "  talos-new: {generate: {algorithm: ed25519}}\n"
        trust = "  talos: {issuer: talos-new, accepted: []}\n"
        outputs = "{talosconfig: talosconfig}"
    return f"""\
# Desired CA state of the simulated cluster: rotate {what}.
version: v1alpha1
cluster:
  name: {CLUSTER_NAME}
  talosconfig: talosconfig
  nodes:
    controlplane: [{cps}]
    worker: [{workers}]
authorities:
{authorities}trust:
{trust}keystore: .trustplan/keys
secrets: secrets.yaml
state: trustplan.state.json
outputs: {outputs}
rollout: {{controlplane: {{parallelism: 1}}, worker: {{parallelism: 10}}, verify: {{timeout: 60}}}}
"""


async def _register(node: SimNode, timeout: float = 60) -> None:
    """A real-mode kubelet's first registration (its Node created, Ready), retried until `timeout`."""
    assert node.cluster.real is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while (reason := await node.cluster.real.kubelet_join(node)) is not None:
        if asyncio.get_running_loop().time() > deadline:
            raise TrustplanError(reason)
        await asyncio.sleep(0.2)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@asynccontextmanager
async def run_cluster(
    controlplanes: int,
    workers: int,
    dir: Path | str,
    subnet: str = DEFAULT_SUBNET,
    latency_ms: float = 0,
    *,
    k8s: bool = False,
    k8s_port: int = KUBE_PORT,
    apiserver_restart_ms: float = 2000,
    kubelet_rejoin_ms: float = 1000,
    config_layout: machineconfig.KubeCALayout = "legacy",
    k8s_mode: K8sMode = "sim",
    kube_apiserver: str | None = None,
    etcd: str | None = None,
) -> AsyncIterator[SimCluster]:
    """Start a simulated cluster, yield it, and stop it (removing DIR/sim.json) on exit.

    With `k8s=True` every control plane also serves a Kubernetes API on port `k8s_port`, restarting
    for `apiserver_restart_ms` when its Kubernetes CA changes; a node's kubelet comes back
    `kubelet_rejoin_ms` after its Kubernetes CA changes. `config_layout="multidoc"` keeps the
    Kubernetes CA in a KubeAPIServerCAConfig document. `k8s_mode="real"` runs a real etcd member and
    kube-apiserver on each control plane instead (binaries: `kube_apiserver`, `etcd` or found;
    docs/real-kubernetes.md)."""
    cluster = SimCluster(
        controlplanes,
        workers,
        dir,
        subnet=subnet,
        latency_ms=latency_ms,
        k8s=k8s,
        k8s_port=k8s_port,
        apiserver_restart_ms=apiserver_restart_ms,
        kubelet_rejoin_ms=kubelet_rejoin_ms,
        config_layout=config_layout,
        k8s_mode=k8s_mode,
        kube_apiserver=kube_apiserver,
        etcd=etcd,
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()

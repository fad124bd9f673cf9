"""A simulated Talos cluster: N control planes and M workers on loopback addresses, port 50000.

    async with run_cluster(Path("demo"), SimOptions(controlplanes=3, workers=2)) as cluster:
        ...   # DIR/talosconfig, DIR/secrets.yaml, DIR/trustplan.yaml, DIR/sim.json are written

    async with run_cluster("demo", SimOptions(3, 2, k8s=True, config_layout="multidoc")) as cluster:
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
from typing import Any

from trustplan.providers.base import NodeRef
from trustplan_sim import configgen, fromdir, talosctl_check
from trustplan_sim.node import SimNode
from trustplan_sim.options import PORT, KubeCALayout, SimOptions
from trustplan_sim.realk8s import RealK8s

from trustplan.errors import TrustplanError
from trustplan.system.atomic import replace_with_backup
from trustplan.system.safeio import ensure_dir
from trustplan.talos import certgen, pki
from trustplan.talos.clientconfig import kubeconfig_document, talosconfig_yaml

CLUSTER_NAME = "sim"
CONTEXT = "sim"


class SimCluster:
    """The simulated cluster: its nodes, its secrets, and the files it wrote into `dir`."""

    def __init__(self, dir: Path | str, options: SimOptions | None = None) -> None:
        o = options if options is not None else SimOptions()
        self.options = o
        templates = fromdir.load(Path(o.from_dir)) if o.from_dir is not None else None
        #: the real `talosctl validate` as a second judge of every ApplyConfiguration (talosctl_check.py)
        self.talosctl_validator = talosctl_check.configured(o.talosctl)
        #: the cluster's name: `sim`, or the one `talosctl gen config` was given (--from)
        self.cluster_name = templates.cluster_name if templates is not None else CLUSTER_NAME
        #: the layout of the configs talosctl generated wins over the option
        config_layout = templates.layout if templates is not None else o.config_layout
        self.dir = Path(dir)
        self.latency = o.latency_ms / 1000.0
        #: waits out `latency` once per client call (tests replace it to see where latency is added)
        self.delay: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.port = o.port
        #: serve a Kubernetes API on every control plane (and write DIR/kubeconfig)
        self.k8s = o.k8s
        self.k8s_port = o.k8s_port
        self.apiserver_restart_ms = o.apiserver_restart_ms
        self.kubelet_rejoin_ms = o.kubelet_rejoin_ms
        self.config_layout: KubeCALayout = config_layout
        #: with k8s_mode="real": real etcd members and kube-apiservers (trustplan_sim.realk8s)
        self.real: RealK8s | None = None
        if o.k8s and o.k8s_mode == "real":
            self.real = RealK8s(self.dir / "k8s-real", o.kube_apiserver, o.etcd)
        #: the one Talos version every node reports (Version, Members), matching its configs
        self.talos_version = configgen.talos_version(config_layout)
        self.created = dt.datetime.now(dt.UTC)
        #: set once every node listens; before that, trustd needs no running control plane
        self.started = False
        #: set when stop() begins (a stopped node's kubelet then reports nothing)
        self.stopping = False
        self.secrets: configgen.ClusterSecrets | fromdir.FromSecrets = (
            templates.secrets if templates is not None else configgen.ClusterSecrets.generate(pki.utcnow())
        )
        base = ipaddress.ip_network(o.subnet, strict=False).network_address
        self.nodes: list[SimNode] = []
        self._by_key: dict[str, SimNode] = {}
        self._controlplanes: list[SimNode] = []  # in order; roles never change
        plan = [("controlplane", f"cp-{i + 1}") for i in range(o.controlplanes)]
        plan += [("worker", f"worker-{i + 1}") for i in range(o.workers)]
        endpoint = f"https://{base + 2}:6443"
        for k, (role, name) in enumerate(plan):
            address = str(base + 2 + k)
            if templates is not None:
                template = templates.controlplane if role == "controlplane" else templates.worker
                config = fromdir.node_config(template, hostname=name, address=address, endpoint=endpoint)
            else:
                assert isinstance(self.secrets, configgen.ClusterSecrets)
                config = configgen.generate_config(
                    self.secrets,
                    cluster_name=CLUSTER_NAME,
                    endpoint=endpoint,
                    role=role,  # type: ignore[arg-type]
                    hostname=name,
                    address=address,
                    kube_ca_layout=config_layout,
                )
            node = SimNode(self, name, role, address, o.port, config)
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
        secrets_yaml = self.secrets.to_yaml()
        if secrets_yaml is not None:  # --from a directory without secrets.yaml: none to write
            _write(self.dir / "secrets.yaml", secrets_yaml, mode=0o600)
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
            self.cluster_name, self.k8s_server, k8s.crt_pem, pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key)
        )
        replace_with_backup(path, configgen.dump_yaml(document).encode())
        return path

    def write_talosconfig(self, path: Path, role: str = "os:admin") -> Path:
        """A talosconfig with a fresh client cert (Subject O=`role`) from the cluster's OS CA."""
        cert, key = certgen.issue_client_cert(self.secrets.os.cert, self.secrets.os.key, role, pki.utcnow())
        crt, key_pem = pki.cert_to_pem(cert), pki.key_to_pem(key)
        replace_with_backup(path, talosconfig_yaml(CONTEXT, self.endpoints, self.secrets.os.crt_pem, crt, key_pem))
        return path


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
    secrets = "secrets: secrets.yaml\n" if cluster.secrets.to_yaml() is not None else ""
    return f"""\
# Desired CA state of the simulated cluster: rotate {what}.
version: v1alpha1
cluster:
  name: {cluster.cluster_name}
  talosconfig: talosconfig
  nodes:
    controlplane: [{cps}]
    worker: [{workers}]
authorities:
{authorities}trust:
{trust}keystore: .trustplan/keys
{secrets}state: trustplan.state.json
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
async def run_cluster(dir: Path | str, options: SimOptions | None = None) -> AsyncIterator[SimCluster]:
    """Start a simulated cluster in DIR (options: SimOptions), yield it, and stop it (removing
    DIR/sim.json) on exit."""
    cluster = SimCluster(dir, options)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()

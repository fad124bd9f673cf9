"""A real kube-apiserver behind each simulated control plane (`trustplan sim up --k8s real`).

Configured from that node's machine config the way Talos v1.14.1 configures the static pod
(docs/real-kubernetes.md; Talos: internal/app/machined/pkg/controllers/secrets/root.go reads the
config, k8s/render_secrets_static_pod.go writes the files, k8s/control_plane_final.go sets the flags):

- ca.crt (--client-ca-file): the Kubernetes issuing CA + accepted CAs (cluster.ca + acceptedCAs, or
  KubeAPIServerCAConfig);
- apiserver.crt/.key: issued by the Kubernetes issuing CA, CN kube-apiserver, O kube-master, the
  node's SANs;
- aggregator-ca.crt (--requestheader-client-ca-file): aggregator issuing CA + accepted CAs
  (cluster.aggregatorCA, or KubeAggregatorCAConfig); front-proxy-client.crt/.key: issued by it;
- service-account.key: the issuer key; service-account.pub: its public key + the accepted public
  keys (cluster.serviceAccount.key, or KubeServiceAccountConfig);
- etcd-client-ca.crt: cluster.etcd.ca.crt verbatim; etcd-client.crt/.key: issued by it, clientAuth
  (trustplan_sim.etcd);
- encryptionconfig.yaml: KubeEtcdEncryptionConfig's config, or cluster.secretboxEncryptionSecret.

`RealAPIServer` has the interface of the imitation (trustplan_sim.kube.KubeAPIServer) that SimNode
and the kubelets use: start(), stop(), restart(), serving, issuer_fingerprint, address, port, error.
A change of any input above restarts it, as Talos restarts the static pod (`inputs_changed()`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trustplan_sim import etcd, realkubelet
from trustplan_sim.k8sinputs import VERSION, APIServerInputs, b64_pem, find_apiserver, public_pem, read_inputs

from trustplan.errors import TrustplanError
from trustplan.talos import pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

log = logging.getLogger("trustplan.sim.real")

__all__ = ["VERSION", "RealAPIServer", "RealK8s", "find_apiserver"]

READY_TIMEOUT = 180.0


def _lf(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


class RealAPIServer:
    """The real kube-apiserver of one control plane, on (node address, cluster.k8s_port)."""

    def __init__(self, node: SimNode, binary: str, workdir: Path) -> None:
        self.node = node
        self.port = node.cluster.k8s_port
        self.binary = binary
        self.dir = workdir
        self.made_from: APIServerInputs | None = None
        self.issuer_fingerprint: str | None = None
        self.restarts = 0
        #: seconds from stop to /readyz for each restart, and for the first start
        self.restart_seconds: list[float] = []
        self.start_seconds: float | None = None
        self.error: str | None = None
        self.dynamic_certs: dict[str, tuple[bytes, bytes]] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._ready and self.proc is not None and self.proc.returncode is None

    def path(self, name: str) -> Path:
        return self.dir / "secrets" / name

    def inputs_changed(self) -> bool:
        """Whether the node's config changed anything this API server is made from."""
        try:
            return read_inputs(self.node) != self.made_from
        except TrustplanError:
            return True

    def write_files(self) -> None:
        """Render the static pod's secrets from the node's current config (as Talos does)."""
        inputs = read_inputs(self.node)
        name = self.node.name
        k8s_ca = etcd.first_ca(inputs.k8s_issuer, inputs.k8s_issuer_key, f"{name}: Kubernetes issuing CA")
        serving = etcd.issue_leaf(k8s_ca, common_name="kube-apiserver", organization="kube-master",
                                  dns=inputs.dns, ips=inputs.ips)
        agg_ca = etcd.first_ca(inputs.aggregator_issuer, inputs.aggregator_key, f"{name}: aggregator CA")
        front_proxy = etcd.issue_leaf(agg_ca, common_name="front-proxy-client", server=False)
        member = self.node.etcd
        assert member is not None, "a real kube-apiserver runs beside a real etcd member"
        files = {
            "ca.crt": inputs.client_ca,
            "apiserver.crt": serving[0], "apiserver.key": serving[1],
            "aggregator-ca.crt": inputs.aggregator_ca,
            "front-proxy-client.crt": front_proxy[0], "front-proxy-client.key": front_proxy[1],
            "service-account.key": inputs.sa_key,
            "service-account.pub": b"".join(_lf(k) for k in (public_pem(inputs.sa_key, name), *inputs.sa_accepted)),
            "etcd-client-ca.crt": inputs.etcd_ca,
            "etcd-client.crt": member.apiserver_client[0],
            "etcd-client.key": member.apiserver_client[1],
            "encryptionconfig.yaml": inputs.encryption.encode(),
            "issuing-ca.crt": inputs.k8s_issuer,  # for this simulator's readiness probe only
        }
        for file, data in files.items():
            etcd.write_secret(self.path(file), data)
        #: what Talos serves as secrets/KubernetesDynamicCerts (trustplan_sim.resources): the pairs
        #: this API server runs with, issued when its inputs changed (KubernetesDynamicCertsController)
        self.dynamic_certs = {"apiServer": serving, "frontProxy": front_proxy}
        self.made_from = inputs
        self.issuer_fingerprint = pki.fingerprint(k8s_ca[0])

    def args(self) -> list[str]:
        """control_plane_final.go's flags that apply here (no audit, admission config, kubelets)."""
        p, inputs = self.path, self.made_from
        assert inputs is not None and self.node.etcd is not None
        return [
            self.binary, f"--bind-address={self.address}", f"--advertise-address={self.address}",
            f"--secure-port={self.port}", "--allow-privileged=true",
            f"--client-ca-file={p('ca.crt')}",
            f"--tls-cert-file={p('apiserver.crt')}", f"--tls-private-key-file={p('apiserver.key')}",
            "--tls-min-version=VersionTLS13",
            f"--requestheader-client-ca-file={p('aggregator-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={p('front-proxy-client.crt')}",
            f"--proxy-client-key-file={p('front-proxy-client.key')}",
            "--enable-bootstrap-token-auth=true", "--enable-admission-plugins=NodeRestriction",
            f"--encryption-provider-config={p('encryptionconfig.yaml')}", "--profiling=false",
            f"--etcd-cafile={p('etcd-client-ca.crt')}", f"--etcd-certfile={p('etcd-client.crt')}",
            f"--etcd-keyfile={p('etcd-client.key')}", f"--etcd-servers={self.node.etcd.client_url}",
            f"--service-account-issuer={inputs.issuer_url}",
            f"--service-account-key-file={p('service-account.pub')}",
            f"--service-account-signing-key-file={p('service-account.key')}",
            "--service-cluster-ip-range=10.96.0.0/12", "--authorization-mode=Node,RBAC",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--cert-dir={self.dir / 'cert-dir'}",
            # the kubernetes Service's endpoints would be loopback addresses, which the API refuses
            "--endpoint-reconciler-type=none",
        ]

    def ready(self) -> bool:
        """/readyz answers 200 to an anonymous client that verifies the serving cert by the issuing CA."""
        return etcd.https_ok(f"{self.server}/readyz", self.path("issuing-ca.crt"))

    async def start(self) -> None:
        """Render the files, spawn kube-apiserver, return once /readyz answers (no-op when running)."""
        if self.proc is not None and self.proc.returncode is None:
            return
        started = time.monotonic()
        try:
            self.write_files()
            await self._spawn_and_wait()
        except TrustplanError as exc:
            self.error = f"{self.node.name}: kube-apiserver did not start: {exc}"
            log.warning("%s", self.error)
            raise
        if self.start_seconds is None:
            self.start_seconds = time.monotonic() - started
            log.info("%s: kube-apiserver ready in %.1fs", self.node.name, self.start_seconds)

    async def _spawn_and_wait(self) -> None:
        self._ready = False
        self.proc = proc = await etcd.spawn(self.args(), self.dir / "kube-apiserver.log")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not proc:  # stopped meanwhile (the node went down again)
                return
            if proc.returncode is not None:
                raise etcd.PeerError(f"{self.node.name}: kube-apiserver exited with {proc.returncode}; "
                                     f"see {self.dir / 'kube-apiserver.log'}")
            if await asyncio.to_thread(self.ready):
                self._ready, self.error = True, None
                return
            await asyncio.sleep(0.2)
        raise etcd.PeerError(f"{self.node.name}: kube-apiserver not ready after {READY_TIMEOUT:g}s; "
                             f"see {self.dir / 'kube-apiserver.log'}")

    async def stop(self) -> None:
        """Stop the process (SIGTERM; SIGKILL after 20 s)."""
        self._cancel()
        self._ready = False
        proc, self.proc = self.proc, None
        await etcd.terminate(proc)

    def restart(self) -> None:
        """Restart now with the node's current config, as Talos replaces the static pod; returns at
        once (a task stops, renders, starts and waits for /readyz; `restart_seconds` records it)."""
        self.restarts += 1
        self._ready = False
        self._cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)  # now, as the kubelet kills the old pod: no call reaches it
        self._task = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        started = time.monotonic()
        try:
            proc, self.proc = self.proc, None
            await etcd.terminate(proc)
            if not self.node.running:
                return  # the node is down; start() brings the API server back with it
            member = self.node.etcd
            if member is not None and member.proc is None:
                return  # its etcd member is restarting; that restart starts this API server again
            self.write_files()
            await self._spawn_and_wait()
            took = time.monotonic() - started
            self.restart_seconds.append(took)
            log.info("%s: kube-apiserver restarted in %.1fs", self.node.name, took)
        except (TrustplanError, OSError) as exc:
            self.error = f"{self.node.name}: kube-apiserver did not come back: {exc}"
            log.warning("%s", self.error)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()


class RealK8s:
    """The real parts of one simulated cluster: binaries, a work directory (DIR/k8s-real: each
    control plane's etcd data, PKI files and logs; 0700), one etcd member and one kube-apiserver per
    control plane. Other modules extend it through `etcd_inputs()` and `on_config_change()`."""

    def __init__(self, dir: Path, apiserver: str | None = None, etcd_binary: str | None = None) -> None:
        found_api, found_etcd = find_apiserver(apiserver), etcd.find_etcd(etcd_binary)
        if found_api is None or not os.access(found_api, os.X_OK):
            raise TrustplanError(
                f"kube-apiserver {VERSION} not found" + (f" at {found_api}" if found_api else ""),
                hint="build it once with scripts/peers/kube-apiserver.sh (~12 min), or pass --kube-apiserver PATH",
            )
        if found_etcd is None or not os.access(found_etcd, os.X_OK):
            raise TrustplanError("etcd not found" + (f" at {found_etcd}" if found_etcd else ""),
                                 hint="apt-get install etcd-server, or pass --etcd PATH")
        self.dir = dir
        self.apiserver_binary, self.etcd_binary = found_api, found_etcd
        self._tasks: set[asyncio.Task[None]] = set()

    def member(self, node: SimNode) -> etcd.EtcdMember:
        return etcd.EtcdMember(node.name, node.hostname, node.address, self.dir / node.name / "etcd",
                               self.etcd_binary)

    def apiserver(self, node: SimNode) -> RealAPIServer:
        return RealAPIServer(node, self.apiserver_binary, self.dir / node.name / "kube-apiserver")

    @staticmethod
    def etcd_inputs(node: SimNode) -> tuple[bytes, bytes]:
        """cluster.etcd.ca (crt verbatim, key) of a control plane's config."""
        ca = ((node.parsed.v1alpha1.get("cluster") or {}).get("etcd") or {}).get("ca") or {}
        src = f"{node.name}: machine config"
        return b64_pem(ca.get("crt"), src, "cluster.etcd.ca.crt"), b64_pem(ca.get("key"), src, "cluster.etcd.ca.key")

    async def start_etcd(self, controlplanes: list[SimNode]) -> None:
        """Write every member's PKI, start them all (a new cluster), wait until each is healthy."""
        if self.dir.exists():
            shutil.rmtree(self.dir)  # a new cluster: no data of an earlier run
        self.dir.mkdir(parents=True, mode=0o700)
        members = [m for m in (cp.etcd for cp in controlplanes) if m is not None]
        for cp in controlplanes:
            if cp.etcd is not None:
                cp.etcd.write_pki(*self.etcd_inputs(cp))
        initial = etcd.initial_cluster(members)
        for member in members:
            await member.start(initial)
        await asyncio.gather(*(m.wait_healthy() for m in members))

    async def stop(self, controlplanes: list[SimNode]) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(cp.apiserver.stop() for cp in controlplanes
                               if isinstance(cp.apiserver, RealAPIServer)), return_exceptions=True)
        await asyncio.gather(*(cp.etcd.stop() for cp in controlplanes if cp.etcd is not None),
                             return_exceptions=True)

    def on_config_change(self, node: SimNode, kube_ca_changed: bool) -> None:
        """After an applied config: new etcd PKI files when its inputs changed (etcd is not restarted,
        as on Talos) and a restart of the API server, whose etcd client cert comes from that CA; else
        the API server when any of its inputs changed. Returns at once; tasks do the restarts."""
        api = node.apiserver if isinstance(node.apiserver, RealAPIServer) else None
        member = node.etcd
        if member is not None:
            try:
                inputs = self.etcd_inputs(node)
            except TrustplanError as exc:
                log.warning("%s: etcd keeps running on its old PKI: %s", node.name, exc)
                inputs = None
            if inputs is not None and (*inputs, node.hostname, node.address) != member.made_from:
                # As Talos: new PKI files, etcd keeps running (it loads leaves per handshake, its CA
                # file only at start: a Reboot restarts it, trustplan_sim.etcdapi); the static pod's
                # secrets version changed, so kube-apiserver restarts.
                member.write_pki(*inputs)
                log.info("%s: etcd CA changed: new etcd PKI files, restarting kube-apiserver", node.name)
                if api is not None:
                    api.restart()
                return
        if api is not None and (kube_ca_changed or api.inputs_changed()):
            log.info("%s: kube-apiserver inputs changed: restarting it", node.name)
            api.restart()

    @staticmethod
    async def kubelet_join(node: SimNode) -> str | None:
        """The node's kubelet registers its Node and posts Ready (trustplan_sim.realkubelet)."""
        return await realkubelet.join(node)

    @staticmethod
    async def kubelet_not_ready(node: SimNode, message: str) -> None:
        await realkubelet.report_not_ready(node, message)

"""What a simulated cluster is made of: one frozen SimOptions that SimCluster, run_cluster, the test
harness (tests/simharness.py) and `trustplan sim up` all pass along. Light on purpose (no crypto,
no asyncio): the CLI builds one before it imports the simulator."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

K8sMode = Literal["sim", "real"]
#: where the Kubernetes CA is: the v1alpha1 document (legacy) or the Talos 1.14 documents (multidoc)
KubeCALayout = Literal["legacy", "multidoc"]
DEFAULT_SUBNET = "127.20.0.0/24"
PORT = 50000
KUBE_PORT = 6443


@dataclass(frozen=True)
class SimOptions:
    """`controlplanes` and `workers` nodes on `subnet` (loopback; node k gets its (k+2)th address),
    the Talos API on `port`, `latency_ms` added to every client call.

    With `k8s` every control plane also serves a Kubernetes API on `k8s_port`, down for
    `apiserver_restart_ms` when its Kubernetes CA changes; a node's kubelet comes back
    `kubelet_rejoin_ms` after its Kubernetes CA changes. `config_layout="multidoc"` keeps the
    Kubernetes CA in a KubeAPIServerCAConfig document (Talos 1.14). `k8s_mode="real"` runs a real etcd
    member and kube-apiserver on each control plane instead (binaries: `kube_apiserver`, `etcd`, or
    found; docs/real-kubernetes.md). `from_dir` makes every node's config from the `talosctl gen
    config` output in that directory (fromdir.py; its layout wins over config_layout). `talosctl`
    (else $TRUSTPLAN_SIM_TALOSCTL) judges every ApplyConfiguration a second time (talosctl_check.py).

    Invalid values raise ValueError naming the option."""

    controlplanes: int = 1
    workers: int = 0
    subnet: str = DEFAULT_SUBNET
    latency_ms: float = 0
    port: int = PORT
    k8s: bool = False
    k8s_port: int = KUBE_PORT
    apiserver_restart_ms: float = 2000
    kubelet_rejoin_ms: float = 1000
    config_layout: KubeCALayout = "legacy"
    k8s_mode: K8sMode = "sim"
    kube_apiserver: str | None = None
    etcd: str | None = None
    from_dir: Path | str | None = None
    talosctl: Path | str | None = None

    def __post_init__(self) -> None:
        if self.controlplanes < 1:
            raise ValueError("a cluster needs at least one control plane")
        if self.workers < 0:
            raise ValueError("workers cannot be negative")
        network = ipaddress.ip_network(self.subnet, strict=False)
        if network.num_addresses < self.controlplanes + self.workers + 3:
            raise ValueError(f"subnet {self.subnet} is too small for {self.controlplanes + self.workers} nodes")
        if not network.is_loopback:
            raise ValueError(f"subnet {self.subnet} is not a loopback network (use 127.x.y.0/24)")
        if self.config_layout not in ("legacy", "multidoc"):
            raise ValueError(f"unknown config layout {self.config_layout!r} (legacy or multidoc)")
        if self.apiserver_restart_ms < 0 or self.kubelet_rejoin_ms < 0:
            raise ValueError("restart and rejoin times cannot be negative")
        if self.k8s_mode not in ("sim", "real"):
            raise ValueError(f"unknown Kubernetes mode {self.k8s_mode!r} (sim or real)")

"""Machine configs and secrets for whole clusters, shaped like `talosctl gen secrets` and
`talosctl gen config` output: what the simulator boots from, and what examples/ and the test
fixtures are made of. trustplan itself never generates a config; it edits the CA fields of existing
ones (trustplan.talos.machineconfig). The simulator reads configs with its own oracle (oracle.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from trustplan_sim.options import KubeCALayout

from trustplan.system import yamlout
from trustplan.talos import certgen, pki

KUBE_CA_DOC_KIND = "KubeAPIServerCAConfig"
KUBE_AGGREGATOR_DOC_KIND = "KubeAggregatorCAConfig"


#: YAML as Talos writes it (trustplan.system.yamlout), plain and with PEM text as literal blocks
dump_yaml = yamlout.dump
dump_yaml_literal = yamlout.dump_literal


#: the Talos release whose `talosctl gen config` output generate_config imitates, and its Kubernetes
TALOS_VERSION = "v1.12.1"
KUBERNETES_VERSION = "v1.35.0"
#: the first Talos release with the KubeAPIServerCAConfig document (kube_ca_layout="multidoc")
MULTIDOC_TALOS_VERSION = "v1.14.0"


@dataclass
class CAPair:
    cert: Any
    key: Any

    @property
    def crt_pem(self) -> bytes:
        return pki.cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return pki.key_to_pem(self.key)

    def encoded(self, with_key: bool = True) -> dict[str, str]:
        return {
            "crt": pki.b64encode_pem(self.crt_pem),
            "key": pki.b64encode_pem(self.key_pem) if with_key else "",
        }


@dataclass
class ClusterSecrets:
    """What `talosctl gen secrets` makes; the CAs trustplan rotates are `os` and `k8s`."""

    os: CAPair
    k8s: CAPair
    etcd: CAPair
    aggregator: CAPair
    service_account_key: Any
    cluster_id: str
    cluster_secret: str
    bootstrap_token: str
    secretbox_secret: str
    trustd_token: str

    @classmethod
    def generate(cls, now: dt.datetime) -> ClusterSecrets:
        def pair(kind: str) -> CAPair:
            if kind == "os":
                return CAPair(*certgen.generate_ca("talos", now))
            if kind == "k8s":
                return CAPair(*certgen.generate_ca("kubernetes", now))
            cert, key = certgen.generate_ca("kubernetes", now)  # same shape (P-256) for etcd and aggregator
            return CAPair(cert, key)

        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(
            os=pair("os"),
            k8s=pair("k8s"),
            etcd=pair("etcd"),
            aggregator=pair("aggregator"),
            # Talos uses RSA-4096 here for contracts > 1.6; ECDSA P-256 (its older choice) is much
            # faster to generate and nothing in a CA rotation touches this key.
            service_account_key=ec.generate_private_key(ec.SECP256R1()),
            cluster_id=base64.b64encode(os.urandom(32)).decode(),
            cluster_secret=base64.b64encode(os.urandom(32)).decode(),
            bootstrap_token=f"{secrets.token_hex(3)}.{secrets.token_hex(8)}",
            secretbox_secret=base64.b64encode(os.urandom(32)).decode(),
            trustd_token=f"{secrets.token_hex(3)}.{secrets.token_hex(8)}",
        )

    def to_yaml(self) -> bytes:
        doc = {
            "cluster": {"id": self.cluster_id, "secret": self.cluster_secret},
            "secrets": {"bootstraptoken": self.bootstrap_token, "secretboxencryptionsecret": self.secretbox_secret},
            "trustdinfo": {"token": self.trustd_token},
            "certs": {
                "etcd": self.etcd.encoded(),
                "k8s": self.k8s.encoded(),
                "k8saggregator": self.aggregator.encoded(),
                "k8sserviceaccount": {"key": pki.b64encode_pem(pki.key_to_pem(self.service_account_key))},
                "os": self.os.encoded(),
            },
        }
        return dump_yaml(doc).encode()


def talos_version(kube_ca_layout: KubeCALayout) -> str:
    """The Talos release a config in this layout belongs to (the multidoc layout is 1.14+)."""
    return MULTIDOC_TALOS_VERSION if kube_ca_layout == "multidoc" else TALOS_VERSION


def generate_config(
    secrets_: ClusterSecrets,
    *,
    cluster_name: str,
    endpoint: str,
    role: Literal["controlplane", "worker", "init"],
    hostname: str,
    address: str,
    kube_ca_layout: KubeCALayout = "legacy",
) -> bytes:
    """A machine config for one node, shaped like `talosctl gen config` output.

    `kube_ca_layout="multidoc"` puts the Kubernetes API CA in a KubeAPIServerCAConfig document
    (Talos 1.14; control planes: `issuingCA` with key; workers: the CA in `acceptedCAs`) instead of
    `cluster.ca`, and a control plane's aggregator CA in a KubeAggregatorCAConfig document."""
    cp = role != "worker"
    machine: dict[str, Any] = {
        "type": role,
        "token": secrets_.trustd_token,
        "ca": secrets_.os.encoded(with_key=cp),
        "certSANs": [],
        "kubelet": {
            "image": f"ghcr.io/siderolabs/kubelet:{KUBERNETES_VERSION}",
            "defaultRuntimeSeccompProfileEnabled": True,
            "disableManifestsDirectory": True,
        },
        "network": {
            "hostname": hostname,
            "interfaces": [{"interface": "eth0", "addresses": [f"{address}/24"], "dhcp": False}],
        },
        "install": {
            "disk": "/dev/sda",
            "image": f"ghcr.io/siderolabs/installer:{talos_version(kube_ca_layout)}",
            "wipe": False,
        },
        "features": {
            "rbac": True,
            "stableHostname": True,
            "apidCheckExtKeyUsage": True,
            "diskQuotaSupport": True,
            "kubePrism": {"enabled": True, "port": 7445},
            "hostDNS": {"enabled": True, "forwardKubeDNSToHost": True},
        },
    }
    if cp:
        machine["nodeLabels"] = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    cluster: dict[str, Any] = {
        "id": secrets_.cluster_id,
        "secret": secrets_.cluster_secret,
        "controlPlane": {"endpoint": endpoint},
        "clusterName": cluster_name,
        "network": {
            "dnsDomain": "cluster.local",
            "podSubnets": ["10.244.0.0/16"],
            "serviceSubnets": ["10.96.0.0/12"],
        },
        "token": secrets_.bootstrap_token,
    }
    if cp:
        cluster["secretboxEncryptionSecret"] = secrets_.secretbox_secret
    multidoc = kube_ca_layout == "multidoc"
    if not multidoc:
        cluster["ca"] = secrets_.k8s.encoded(with_key=cp)
    if cp and not multidoc:
        cluster["aggregatorCA"] = secrets_.aggregator.encoded()
    if cp:
        cluster["serviceAccount"] = {"key": pki.b64encode_pem(pki.key_to_pem(secrets_.service_account_key))}
        cluster["apiServer"] = {
            "image": f"registry.k8s.io/kube-apiserver:{KUBERNETES_VERSION}",
            "certSANs": [address],
            "disablePodSecurityPolicy": True,
            "admissionControl": [
                {
                    "name": "PodSecurity",
                    "configuration": {
                        "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
                        "kind": "PodSecurityConfiguration",
                        "defaults": {
                            "audit": "restricted",
                            "audit-version": "latest",
                            "enforce": "baseline",
                            "enforce-version": "latest",
                            "warn": "restricted",
                            "warn-version": "latest",
                        },
                        "exemptions": {"namespaces": ["kube-system"], "runtimeClasses": [], "usernames": []},
                    },
                }
            ],
            "auditPolicy": {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]},
        }
        cluster["controllerManager"] = {"image": f"registry.k8s.io/kube-controller-manager:{KUBERNETES_VERSION}"}
        cluster["proxy"] = {"image": f"registry.k8s.io/kube-proxy:{KUBERNETES_VERSION}"}
        cluster["scheduler"] = {"image": f"registry.k8s.io/kube-scheduler:{KUBERNETES_VERSION}"}
    else:
        cluster["proxy"] = {"image": f"registry.k8s.io/kube-proxy:{KUBERNETES_VERSION}"}
    cluster["discovery"] = {"enabled": True, "registries": {"kubernetes": {"disabled": True}, "service": {}}}
    if cp:
        cluster["etcd"] = {"ca": secrets_.etcd.encoded()}
    cluster["extraManifests"] = []
    cluster["inlineManifests"] = []
    doc = {"version": "v1alpha1", "debug": False, "persist": True, "machine": machine, "cluster": cluster}
    text = dump_yaml(doc)
    if multidoc:
        kube: dict[str, Any] = {"apiVersion": "v1alpha1", "kind": KUBE_CA_DOC_KIND}
        if cp:
            kube["issuingCA"] = {"cert": secrets_.k8s.crt_pem.decode(), "key": secrets_.k8s.key_pem.decode()}
        else:
            kube["acceptedCAs"] = [secrets_.k8s.crt_pem.decode()]
        text += "---\n" + dump_yaml_literal(kube)
        if cp:
            aggregator = {
                "apiVersion": "v1alpha1",
                "kind": KUBE_AGGREGATOR_DOC_KIND,
                "issuingCA": {
                    "cert": secrets_.aggregator.crt_pem.decode(),
                    "key": secrets_.aggregator.key_pem.decode(),
                },
            }
            text += "---\n" + dump_yaml_literal(aggregator)
    return text.encode()

"""What a simulated control plane's real kube-apiserver is made from, read from its machine config
as Talos v1.14.1 reads it (internal/app/machined/pkg/controllers/secrets/root.go; the files and flags
are in trustplan_sim.realk8s). Legacy fields (cluster.ca, cluster.aggregatorCA, cluster.serviceAccount,
cluster.secretboxEncryptionSecret) and the Talos 1.14 documents (KubeAPIServerCAConfig,
KubeAggregatorCAConfig, KubeServiceAccountConfig, KubeEtcdEncryptionConfig) are both read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import serialization
from trustplan_sim import etcd, oracle
from trustplan_sim.kube import SERVICE_DNS, SERVICE_IP

from trustplan.errors import TrustplanError
from trustplan.talos import pki

if TYPE_CHECKING:
    from trustplan_sim.node import SimNode

VERSION = "v1.34.4"


def find_apiserver(explicit: str | None = None) -> str | None:
    """`explicit`, else $TRUSTPLAN_KUBE_APISERVER, else the peers cache's kube-apiserver-v1.34.4."""
    if explicit:
        return explicit
    env = os.environ.get("TRUSTPLAN_KUBE_APISERVER")
    if env:
        return env
    path = etcd.peers_cache() / f"kube-apiserver-{VERSION}"
    return str(path) if path.is_file() else None


def b64_pem(value: object, source: str, path: str) -> bytes:
    return pki.b64decode_pem(value, source, path)


def _pem(value: object) -> bytes:
    return str(value).encode() if value else b""


@dataclass(frozen=True)
class APIServerInputs:
    """Everything a control plane's kube-apiserver is made from, read from its machine config."""

    k8s_issuer: bytes
    k8s_issuer_key: bytes
    k8s_accepted: tuple[bytes, ...]
    aggregator_issuer: bytes
    aggregator_key: bytes
    aggregator_accepted: tuple[bytes, ...]
    sa_key: bytes
    sa_accepted: tuple[bytes, ...]
    issuer_url: str
    etcd_ca: bytes
    etcd_key: bytes
    encryption: str
    ips: tuple[str, ...]
    dns: tuple[str, ...]

    @property
    def client_ca(self) -> bytes:
        return pki.pem_bundle([self.k8s_issuer, *self.k8s_accepted])

    @property
    def aggregator_ca(self) -> bytes:
        return pki.pem_bundle([self.aggregator_issuer, *self.aggregator_accepted])


def _doc(cfg: oracle.NodeConfig, kind: str) -> dict[str, Any] | None:
    for doc in cfg.documents:
        if isinstance(doc, dict) and doc.get("kind") == kind:
            return doc
    return None


def read_inputs(node: SimNode) -> APIServerInputs:
    """The kube-apiserver inputs of a control plane's config (TrustplanError when one is missing)."""
    cfg, src = node.parsed, f"{node.name}: machine config"
    cluster = cfg.v1alpha1.get("cluster") or {}
    k8s = cfg.ca_fields("kubernetes")
    if not k8s.issuer or not k8s.issuer_key:
        raise TrustplanError(f"{node.name}: no Kubernetes issuing CA with a key; kube-apiserver cannot start")
    agg_doc = _doc(cfg, "KubeAggregatorCAConfig")
    if agg_doc is not None:
        issuing = agg_doc.get("issuingCA") or {}
        agg = (_pem(issuing.get("cert")), _pem(issuing.get("key")),
               tuple(_pem(c) for c in agg_doc.get("acceptedCAs") or []))
    else:
        legacy = cluster.get("aggregatorCA") or {}
        agg = (b64_pem(legacy.get("crt"), src, "cluster.aggregatorCA.crt"),
               b64_pem(legacy.get("key"), src, "cluster.aggregatorCA.key"), ())
    sa_doc = _doc(cfg, "KubeServiceAccountConfig")
    endpoint = str((cluster.get("controlPlane") or {}).get("endpoint") or f"https://{node.address}:6443")
    if sa_doc is not None:
        sa_key = _pem((sa_doc.get("issuer") or {}).get("privateKey"))
        sa_accepted = tuple(_pem(k) for k in (sa_doc.get("accepted") or {}).get("publicKeys") or [])
        issuer_url = str((sa_doc.get("issuer") or {}).get("issuerURL") or endpoint)
    else:
        sa_key = b64_pem((cluster.get("serviceAccount") or {}).get("key"), src, "cluster.serviceAccount.key")
        sa_accepted, issuer_url = (), endpoint
    etcd_ca = (cluster.get("etcd") or {}).get("ca") or {}
    enc_doc = _doc(cfg, "KubeEtcdEncryptionConfig")
    if enc_doc is not None:
        # Talos sets the TypeMeta itself (k8stemplates.APIServerEncryptionConfig): the document's
        # config (as talosctl gen config writes it) has neither kind nor apiVersion
        typed = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration"}
        encryption = _dump({**typed, **(enc_doc.get("config") or {})})
    else:
        encryption = _encryption_config(str(cluster.get("secretboxEncryptionSecret") or ""),
                                        str(cluster.get("aescbcEncryptionSecret") or ""))
    ips, dns = _sans(node, cluster, endpoint)
    return APIServerInputs(
        k8s.issuer, k8s.issuer_key, k8s.accepted, *agg, sa_key, sa_accepted, issuer_url,
        b64_pem(etcd_ca.get("crt"), src, "cluster.etcd.ca.crt"),
        b64_pem(etcd_ca.get("key"), src, "cluster.etcd.ca.key"),
        encryption, ips, dns,
    )


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _encryption_config(secretbox: str, aescbc: str) -> str:
    """k8stemplates.APIServerEncryptionConfig for the legacy fields: secretbox key2, aescbc key1, identity."""
    providers: list[dict[str, Any]] = []
    if secretbox:
        providers.append({"secretbox": {"keys": [{"name": "key2", "secret": secretbox}]}})
    if aescbc:
        providers.append({"aescbc": {"keys": [{"name": "key1", "secret": aescbc}]}})
    providers.append({"identity": {}})
    return _dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
        "resources": [{"resources": ["secrets"], "providers": providers}],
    })


def _sans(node: SimNode, cluster: dict[str, Any], endpoint: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The serving cert's names (secrets/kubernetes_cert_sans.go): endpoint host, certSANs, the
    node's address and hostname, localhost, the kubernetes service names and IP."""
    ips = [node.address, "127.0.0.1", SERVICE_IP]
    dns = [*SERVICE_DNS, node.hostname]
    cert_sans = (cluster.get("apiServer") or {}).get("certSANs") or []
    extra = [urlsplit(endpoint).hostname or ""] + [str(s) for s in cert_sans]
    for name in filter(None, extra):
        try:
            ip_address(name)
        except ValueError:
            dns.append(name)
        else:
            ips.append(name)
    return tuple(dict.fromkeys(ips)), tuple(dict.fromkeys(dns))


def public_pem(private_pem: bytes, source: str) -> bytes:
    key = pki.load_key_pem(private_pem, source)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

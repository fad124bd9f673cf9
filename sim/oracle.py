"""The simulator's own reading and validation of a Talos machine config: an oracle independent of
trustplan's (trustplan.talos.machineconfig and .validation are never imported here, nor anywhere in
the simulator), so that a mistake in trustplan's reading of a config is not repeated by the cluster
that judges it.

Reading follows Talos v1.14.1 (docs/talos-model.md: where each credential lives):
- `machinery/config/container/container.go`: a multi-document stream; the `version: v1alpha1`
  document plus `apiVersion`/`kind` documents, a document winning over the v1alpha1 fields;
- `github.com/siderolabs/crypto/x509` YAML marshaling: v1alpha1 `crt`/`key` are base64 of the PEM
  (a value that is not base64 fails decoding, as Talos's `failed to parse config`);
- `machinery/config/types/k8s/apiserver_ca.go`: `KubeAPIServerCAConfig` `issuingCA {cert, key}`
  and `acceptedCAs`, plain PEM;
- `machinery/config/types/network/hostname.go`, `k8s/cluster.go`: hostname, cluster name, endpoint.

Validation (`validate`) re-implements the rules of docs/talos-model.md "Validation", from
`machinery/config/types/v1alpha1/v1alpha1_validation.go`, `k8s/apiserver_ca.go` and
`meta/certificate_key.go`, with Talos's own messages. One rule is stricter than Talos: an accepted
Talos or Kubernetes CA that is base64 but no certificate is refused here (Talos takes it, and its
apid then fails to build its CA pool), because the simulator has to load it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from cryptography import x509

from trustplan.system import safeyaml  # YAML with size, alias and depth limits (not a config reader)

KUBE_CA_KIND = "KubeAPIServerCAConfig"
PKIName = Literal["talos", "kubernetes"]


class ConfigError(ValueError):
    """A config the simulator cannot decode (Talos: `failed to parse config`)."""


@dataclass(frozen=True)
class CAs:
    """One PKI's CA fields in one config, as PEM bytes."""

    issuer: bytes | None  # the issuing CA's certificate (machine.ca.crt, issuingCA.cert)
    issuer_key: bytes | None  # its key, None when absent or empty
    accepted: tuple[bytes, ...]  # the accepted CAs, in order, issuer not included


def _load_documents(data: bytes) -> list[dict[str, Any]]:
    try:
        docs = [d for d in safeyaml.load_all(data.decode("utf-8")) if d is not None]
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not a YAML document stream: {exc}") from None
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConfigError(f"document {i + 1} is not a mapping")
    return docs


def _map(value: object, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return value


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list")
    return value


def _b64(value: object, path: str) -> bytes | None:
    """A v1alpha1 `crt`/`key`: base64 of the PEM; "" or absent is no value."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{path}: illegal base64 data") from None


def _plain(value: object, path: str) -> bytes | None:
    """A 1.14 document's `cert`/`key`/`acceptedCAs` entry: the PEM text itself."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a PEM string")
    return value.encode("utf-8")


class NodeConfig:
    """A machine config as the simulated node reads it; `data` is the exact bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.documents = _load_documents(data)
        found = [d for d in self.documents if d.get("version") == "v1alpha1"]
        if not found:
            raise ConfigError("the machine configuration doesn't contain v1alpha1 config")
        self.v1alpha1: dict[str, Any] = found[0]
        self.machine = _map(self.v1alpha1.get("machine"), "machine")
        self.cluster = _map(self.v1alpha1.get("cluster"), "cluster")
        self.machine_type = str(self.machine.get("type") or "")
        self.role = "worker" if self.machine_type == "worker" else "controlplane"
        self._cas: dict[str, CAs] = {"talos": self._v1alpha1_cas(self.machine, "machine")}
        kube_doc = self.document(KUBE_CA_KIND)
        self.kube_ca_document = kube_doc is not None
        self._cas["kubernetes"] = (
            self._doc_cas(kube_doc) if kube_doc is not None else self._v1alpha1_cas(self.cluster, "cluster")
        )

    def document(self, kind: str) -> dict[str, Any] | None:
        """The first document of this kind (Talos reads the first match)."""
        return next((d for d in self.documents if d.get("kind") == kind and "version" not in d), None)

    @staticmethod
    def _v1alpha1_cas(section: dict[str, Any], name: str) -> CAs:
        ca = _map(section.get("ca"), f"{name}.ca")
        accepted = []
        for i, entry in enumerate(_list(section.get("acceptedCAs"), f"{name}.acceptedCAs")):
            pem = _b64(_map(entry, f"{name}.acceptedCAs[{i}]").get("crt"), f"{name}.acceptedCAs[{i}].crt")
            if pem is not None:
                accepted.append(pem)
        return CAs(_b64(ca.get("crt"), f"{name}.ca.crt"), _b64(ca.get("key"), f"{name}.ca.key"), tuple(accepted))

    @staticmethod
    def _doc_cas(doc: dict[str, Any]) -> CAs:
        issuing = _map(doc.get("issuingCA"), f"{KUBE_CA_KIND}.issuingCA")
        entries = _list(doc.get("acceptedCAs"), f"{KUBE_CA_KIND}.acceptedCAs")
        accepted = tuple(p for i, e in enumerate(entries) if (p := _plain(e, f"{KUBE_CA_KIND}.acceptedCAs[{i}]")))
        return CAs(
            _plain(issuing.get("cert"), f"{KUBE_CA_KIND}.issuingCA.cert"),
            _plain(issuing.get("key"), f"{KUBE_CA_KIND}.issuingCA.key"),
            accepted,
        )

    def ca_fields(self, pki_name: PKIName) -> CAs:
        return self._cas[pki_name]

    def trust(self, pki_name: PKIName) -> list[bytes]:
        """Every CA of this PKI the node accepts: the accepted CAs and the issuing CA's certificate
        (Talos: OSRoot.AcceptedCAs, KubernetesRoot.AcceptedCAs; the order does not matter here)."""
        cas = self._cas[pki_name]
        return [*cas.accepted, *([cas.issuer] if cas.issuer else [])]

    @property
    def hostname(self) -> str | None:
        doc = self.document("HostnameConfig")
        if doc is not None and doc.get("hostname"):
            return str(doc["hostname"])
        name = _map(self.machine.get("network"), "machine.network").get("hostname")
        return str(name) if name else None

    @property
    def cluster_name(self) -> str:
        doc = self.document("KubeClusterConfig")
        return str((doc or {}).get("clusterName") or self.cluster.get("clusterName") or "")

    @property
    def endpoint(self) -> str:
        doc = self.document("KubeClusterConfig")
        if doc is not None and doc.get("endpoint"):
            return str(doc["endpoint"])
        return str(_map(self.cluster.get("controlPlane"), "cluster.controlPlane").get("endpoint") or "")

    @property
    def apiserver_cert_sans(self) -> list[str]:
        doc = self.document("KubeAPIServerConfig")
        if doc is not None and doc.get("certExtraSANs"):
            return [str(s) for s in doc["certExtraSANs"]]
        return [str(s) for s in _list(_map(self.cluster.get("apiServer"), "cluster.apiServer").get("certSANs"), "")]

    @property
    def token(self) -> str:
        return str(self.machine.get("token") or "")

    @property
    def cert_sans(self) -> list[str]:
        return [str(s) for s in _list(self.machine.get("certSANs"), "machine.certSANs")]


def read(data: bytes) -> NodeConfig:
    """Decode a config (ConfigError when it cannot be decoded)."""
    return NodeConfig(data)


def _pem_blocks(pem: bytes) -> list[str]:
    """The types of the PEM blocks in `pem` (Talos meta.AssertValidPEM walks them the same way)."""
    types = []
    for line in pem.decode("utf-8", "replace").splitlines():
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            types.append(line[len("-----BEGIN ") : -len("-----")])
    return types


def _certificate_problem(pem: bytes) -> str | None:
    types = _pem_blocks(pem)
    if not types:
        return "no PEM blocks found"
    if any(t != "CERTIFICATE" for t in types):
        return f'unexpected PEM block type "{types[0]}", expected one of ["CERTIFICATE"]'
    try:
        x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        return f"certificate is invalid: {exc}"
    return None


def validate(cfg: NodeConfig) -> list[str]:
    """What Talos v1.14.1 refuses in this config, one message per broken rule (empty: it passes)."""
    errors: list[str] = []
    machine_ca = cfg.machine.get("ca")
    talos = cfg.ca_fields("talos")
    if cfg.machine_type not in ("controlplane", "init", "worker"):
        errors.append(f"unknown machine type {cfg.machine_type!r}")
    # v1alpha1_validation.go: Machine().Security().IssuingCA() is machine.ca as written (key or not)
    if machine_ca is None and not talos.accepted:
        errors.append("issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)")
    if cfg.role == "controlplane":
        if machine_ca is None:
            errors.append("issuing CA is required (.machine.ca)")
        elif talos.issuer_key is None:
            errors.append("issuing CA key is required for controlplane nodes (.machine.ca.key)")
    else:
        if machine_ca is not None:
            if talos.issuer_key is not None:
                errors.append("issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)")
            if talos.issuer is None and not talos.accepted:
                errors.append(
                    "trusted CA certificates are required on non-controlplane nodes"
                    " (.machine.ca.crt, .machine.acceptedCAs)"
                )
        if _map(cfg.cluster.get("ca"), "cluster.ca").get("key"):
            errors.append("issuing Kubernetes API CA key is not allowed on non-controlplane nodes (.cluster.ca)")
    for pki_name, label in (("talos", "machine"), ("kubernetes", "cluster")):
        if pki_name == "kubernetes" and cfg.kube_ca_document:
            continue
        cas = cfg.ca_fields(pki_name)  # type: ignore[arg-type]
        for i, pem in enumerate(cas.accepted):
            if (problem := _certificate_problem(pem)) is not None:  # stricter than Talos (module doc)
                errors.append(f"{label}.acceptedCAs[{i}]: {problem}")
    if cfg.kube_ca_document:
        errors += _validate_kube_ca_document(cfg)
    return errors


def _validate_kube_ca_document(cfg: NodeConfig) -> list[str]:
    """k8s/apiserver_ca.go: Validate and V1Alpha1ConflictValidate."""
    errors: list[str] = []
    if cfg.cluster.get("ca") is not None:
        errors.append("kube-apiserver CA is already set in v1alpha1 config (.cluster.ca)")
    doc = cfg.document(KUBE_CA_KIND) or {}
    cas = cfg.ca_fields("kubernetes")
    if doc.get("issuingCA") is not None:  # meta.CertificateAndKey.Validate(tryLoading=true)
        if cas.issuer is None:
            errors.append("issuing CA: certificate is required")
        elif cas.issuer_key is None:
            errors.append("issuing CA: key is required")
        elif (problem := _certificate_problem(cas.issuer)) is not None:
            errors.append(f"issuing CA: certificate: {problem}")
        elif not _pem_blocks(cas.issuer_key):
            errors.append("issuing CA: key: no PEM blocks found")
    for i, pem in enumerate(cas.accepted):
        if (problem := _certificate_problem(pem)) is not None:
            errors.append(f"accepted CA #{i}: {problem}")
    return errors

"""The COSI resources a simulated node serves, built from its machine config as machined builds them.

Each served type has a ResourceDefinition (`meta/ResourceDefinitions.meta.cosi.dev`, the table
`talosctl get` resolves type names and aliases against) and a builder. Specs are the binary
protobuf specs Talos's typed resources decode (`proto_spec`), with the YAML rendering next to them
(`yaml_spec`), as Talos's COSI server fills both:

- `config/MachineConfigs.config.talos.dev` (`v1alpha1`, `persistent`): the config bytes as applied;
- `secrets/OSRootSecrets.secrets.talos.dev/os`: `RootOSController`: issuing CA (control planes
  only: dropped when the config has no key), accepted CAs = `machine.acceptedCAs + machine.ca.crt`;
- `secrets/KubernetesRootSecrets.secrets.talos.dev/k8s` (control planes only):
  `RootKubernetesController`, the same for the Kubernetes API CA in either config layout;
- `secrets/KubernetesDynamicCerts.secrets.talos.dev/k8s-dynamic-certs` (control planes running a
  real kube-apiserver): `KubernetesDynamicCertsController`, the API server's serving cert and its
  own front-proxy client cert (`frontProxy`, --proxy-client-cert-file), issued by the aggregator
  issuing CA; the pairs the running kube-apiserver was started with;
- `cluster/Members.cluster.talos.dev`: the discovery service's view of every node;
- `runtime/Services.v1alpha1.talos.dev/kubelet`: the kubelet service.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from trustplan.providers.talos.proto import (
    common_pb2,
    cosi_meta_pb2,
    cosi_resource_pb2,
    resource_cluster_pb2,
    resource_config_pb2,
    resource_enums_pb2,
    resource_secrets_pb2,
    resource_v1alpha1_pb2,
)
from trustplan.providers.talos.resources import (
    CONFIG_NAMESPACE,
    CONFIG_TYPE,
    K8S_DYNAMIC_ID,
    K8S_DYNAMIC_TYPE,
    MEMBERS_NAMESPACE,
    MEMBERS_TYPE,
    SERVICE_NAMESPACE,
    SERVICE_TYPE,
)

try:  # libyaml
    from yaml import CSafeDumper as _Dumper
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]

if TYPE_CHECKING:
    from trustplan_sim.kubelet import ServiceState
    from trustplan_sim.node import SimNode

SECRETS_NAMESPACE = "secrets"
OS_ROOT_TYPE = "OSRootSecrets.secrets.talos.dev"
OS_ROOT_ID = "os"
K8S_ROOT_TYPE = "KubernetesRootSecrets.secrets.talos.dev"
K8S_ROOT_ID = "k8s"
META_NAMESPACE = "meta"
RD_TYPE = "ResourceDefinitions.meta.cosi.dev"
SERVICE_OWNER = "v1alpha1.ServiceController"
MACHINE_TYPES = {
    "init": resource_enums_pb2.TYPE_INIT,
    "controlplane": resource_enums_pb2.TYPE_CONTROL_PLANE,
    "worker": resource_enums_pb2.TYPE_WORKER,
}


@dataclass(frozen=True)
class Definition:
    """A served resource type: its ResourceDefinition fields and who may read it."""

    type: str
    namespace: str
    aliases: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()
    sensitive: bool = False


DEFINITIONS: tuple[Definition, ...] = (
    Definition(CONFIG_TYPE, CONFIG_NAMESPACE, sensitive=True),
    Definition(
        MEMBERS_TYPE,
        MEMBERS_NAMESPACE,
        columns=(
            ("Hostname", "{.hostname}"),
            ("Machine Type", "{.machineType}"),
            ("OS", "{.operatingSystem}"),
            ("Addresses", "{.addresses}"),
        ),
    ),
    Definition(OS_ROOT_TYPE, SECRETS_NAMESPACE, sensitive=True),
    Definition(K8S_ROOT_TYPE, SECRETS_NAMESPACE, sensitive=True),
    Definition(K8S_DYNAMIC_TYPE, SECRETS_NAMESPACE, sensitive=True),
    Definition(
        SERVICE_TYPE,
        SERVICE_NAMESPACE,
        aliases=("svc",),
        columns=(("Running", "{.running}"), ("Healthy", "{.healthy}"), ("Health Unknown", "{.unknown}")),
    ),
    Definition(RD_TYPE, META_NAMESPACE, aliases=("api-resources",), columns=(("Aliases", "{.aliases[:]}"),)),
)
BY_KIND = {(d.namespace, d.type): d for d in DEFINITIONS}


def rd_spec(definition: Definition) -> cosi_meta_pb2.ResourceDefinitionSpec:
    """The definition as COSI's `ResourceDefinitionSpec.Fill` completes it: display type (the
    singular name), automatic aliases (singular, upper-case letters, `name.suffix` prefixes)."""
    name, suffix = definition.type.split(".", 1)
    display = name[:-1] if name.endswith("s") else name
    aliases = [*definition.aliases, display.lower()]
    all_aliases = [name.lower()]
    parts = suffix.split(".")
    all_aliases += [".".join([name.lower(), *parts[:i]]) for i in range(1, len(parts))]
    upper = re.sub(r"[^A-Z]", "", name)
    if len(upper) > 1:
        aliases.append(upper.lower())
        if not upper.endswith("S"):
            aliases.append(upper.lower() + "s")
    all_aliases += aliases
    Spec = cosi_meta_pb2.ResourceDefinitionSpec
    return Spec(
        resource_type=definition.type,
        display_type=display,
        default_namespace=definition.namespace,
        aliases=aliases,
        all_aliases=all_aliases,
        print_columns=[Spec.PrintColumn(name=n, json_path=p) for n, p in definition.columns],
        sensitivity=Spec.SENSITIVE if definition.sensitive else Spec.NON_SENSITIVE,
    )


def rd_resource(definition: Definition, created: dt.datetime) -> cosi_resource_pb2.Resource:
    spec = rd_spec(definition)
    doc = {
        "type": spec.resource_type,
        "displayType": spec.display_type,
        "defaultNamespace": spec.default_namespace,
        "aliases": list(spec.aliases),
        "allAliases": list(spec.all_aliases),
        "printColumns": [{"name": c.name, "jsonPath": c.json_path} for c in spec.print_columns],
    }
    if definition.sensitive:
        doc["sensitivity"] = "sensitive"
    return _resource(META_NAMESPACE, RD_TYPE, definition.type.lower(), 1, created, created, spec, doc)


def config_resource(node: SimNode, rid: str) -> cosi_resource_pb2.Resource:
    """`config/MachineConfigs.config.talos.dev/<rid>`: the exact bytes last applied. `yaml_spec` is
    the config as one YAML string, which the annotation `talos.dev/yaml-spec` announces (talosctl
    reads a spec without it the way Talos releases before the annotation wrote it)."""
    spec = resource_config_pb2.MachineConfigSpec(yaml_marshalled=node.config)
    resource = _resource(
        CONFIG_NAMESPACE,
        CONFIG_TYPE,
        rid,
        node.version,
        node.created,
        node.updated,
        spec,
        yaml_text=_yaml_string(node.config),
    )
    resource.metadata.annotations["talos.dev/yaml-spec"] = "1"
    return resource


@functools.lru_cache(maxsize=256)
def _yaml_string(config: bytes) -> str:
    """The config as one YAML string (a `yaml_spec`); remembered by its bytes, since a config is
    read many times between changes (both ids, every read of a plan and of its apply)."""
    return yaml.dump(config.decode(), Dumper=_Dumper)


def os_root_resource(node: SimNode) -> cosi_resource_pb2.Resource:
    """`secrets/OSRootSecrets.secrets.talos.dev/os`."""
    fields = node.parsed.ca_fields("talos")
    accepted = [*fields.accepted, *([fields.issuer] if fields.issuer else [])]
    spec = resource_secrets_pb2.OSRootSpec(
        token=node.parsed.token,
        accepted_c_as=[common_pb2.PEMEncodedCertificate(crt=pem) for pem in accepted],
    )
    for san in node.parsed.cert_sans:
        try:
            spec.cert_sani_ps.append(common_pb2.NetIP(ip=ipaddress.ip_address(san).packed))
        except ValueError:
            spec.cert_sandns_names.append(san)
    if fields.issuer and fields.issuer_key:
        spec.issuing_ca.CopyFrom(common_pb2.PEMEncodedCertificateAndKey(crt=fields.issuer, key=fields.issuer_key))
    doc = {
        "issuingCA": _pair_yaml(spec.issuing_ca) if spec.HasField("issuing_ca") else None,
        "acceptedCAs": [{"crt": _b64(pem)} for pem in accepted],
        "certSANIPs": [str(ipaddress.ip_address(ip.ip)) for ip in spec.cert_sani_ps],
        "certSANDNSNames": list(spec.cert_sandns_names),
        "token": spec.token,
    }
    return _resource(SECRETS_NAMESPACE, OS_ROOT_TYPE, OS_ROOT_ID, node.version, node.created, node.updated, spec, doc)


def kubernetes_root_resource(node: SimNode) -> cosi_resource_pb2.Resource | None:
    """`secrets/KubernetesRootSecrets.secrets.talos.dev/k8s`, on control planes only (None elsewhere)."""
    if node.role != "controlplane":
        return None
    cluster = node.parsed.v1alpha1.get("cluster") or {}
    fields = node.parsed.ca_fields("kubernetes")
    accepted = [*fields.accepted, *([fields.issuer] if fields.issuer else [])]
    endpoint = node.parsed.endpoint
    spec = resource_secrets_pb2.KubernetesRootSpec(
        name=node.parsed.cluster_name,
        endpoint=common_pb2.URL(full_path=endpoint),
        local_endpoint=common_pb2.URL(full_path="https://127.0.0.1:7445"),
        cert_sa_ns=node.parsed.apiserver_cert_sans,
        dns_domain=str((cluster.get("network") or {}).get("dnsDomain") or "cluster.local"),
        secretbox_encryption_secret=str(cluster.get("secretboxEncryptionSecret") or ""),
        accepted_c_as=[common_pb2.PEMEncodedCertificate(crt=pem) for pem in accepted],
    )
    token = str(cluster.get("token") or "")
    spec.bootstrap_token_id, _, spec.bootstrap_token_secret = token.partition(".")
    if fields.issuer and fields.issuer_key:
        spec.issuing_ca.CopyFrom(common_pb2.PEMEncodedCertificateAndKey(crt=fields.issuer, key=fields.issuer_key))
    doc = {
        "name": spec.name,
        "endpoint": endpoint,
        "local_endpoint": spec.local_endpoint.full_path,
        "certSANs": list(spec.cert_sa_ns),
        "dnsDomain": spec.dns_domain,
        "issuingCA": _pair_yaml(spec.issuing_ca) if spec.HasField("issuing_ca") else None,
        "acceptedCAs": [{"crt": _b64(pem)} for pem in accepted],
    }
    return _resource(SECRETS_NAMESPACE, K8S_ROOT_TYPE, K8S_ROOT_ID, node.version, node.created, node.updated, spec, doc)


def kubernetes_dynamic_resource(node: SimNode) -> cosi_resource_pb2.Resource | None:
    """`secrets/KubernetesDynamicCerts.secrets.talos.dev/k8s-dynamic-certs`: the certs the node's real
    kube-apiserver runs with (None: no real kube-apiserver has rendered its files yet)."""
    from trustplan_sim.realk8s import RealAPIServer

    certs = node.apiserver.dynamic_certs if isinstance(node.apiserver, RealAPIServer) else {}
    if node.role != "controlplane" or not certs:
        return None
    pairs = {k: common_pb2.PEMEncodedCertificateAndKey(crt=c, key=k_) for k, (c, k_) in certs.items()}
    spec = resource_secrets_pb2.KubernetesDynamicCertsSpec(
        api_server=pairs["apiServer"], front_proxy=pairs["frontProxy"]
    )
    doc = {"apiServer": _pair_yaml(spec.api_server), "apiServerKubeletClient": None,
           "frontProxy": _pair_yaml(spec.front_proxy)}
    return _resource(
        SECRETS_NAMESPACE, K8S_DYNAMIC_TYPE, K8S_DYNAMIC_ID, node.version, node.created, node.updated, spec, doc
    )


def member_resource(node: SimNode, talos_version: str) -> cosi_resource_pb2.Resource:
    """`cluster/Members.cluster.talos.dev/<hostname>`, as the discovery service reports it."""
    spec = resource_cluster_pb2.MemberSpec(
        node_id=node.name,
        addresses=[common_pb2.NetIP(ip=ipaddress.ip_address(node.address).packed)],
        hostname=node.hostname,
        machine_type=MACHINE_TYPES[node.role],
        operating_system=f"Talos ({talos_version})",
    )
    doc = {
        "nodeId": spec.node_id,
        "addresses": [node.address],
        "hostname": spec.hostname,
        "machineType": node.role,
        "operatingSystem": spec.operating_system,
    }
    return _resource(MEMBERS_NAMESPACE, MEMBERS_TYPE, node.hostname, 1, node.created, node.created, spec, doc)


def service_resource(rid: str, state: ServiceState) -> cosi_resource_pb2.Resource:
    """A `runtime/Services.v1alpha1.talos.dev` resource: proto_spec is Talos's ServiceSpec."""
    spec = resource_v1alpha1_pb2.ServiceSpec(running=state.running, healthy=state.healthy, unknown=state.unknown)
    flag = {True: "true", False: "false"}
    text = f"running: {flag[state.running]}\nhealthy: {flag[state.healthy]}\nunknown: {flag[state.unknown]}\n"
    resource = _resource(
        SERVICE_NAMESPACE, SERVICE_TYPE, rid, state.version, state.created, state.updated, spec, yaml_text=text
    )
    resource.metadata.owner = SERVICE_OWNER
    return resource


def tombstone(rid: str, version: int = 0) -> cosi_resource_pb2.Resource:
    """The empty resource COSI sends with a DESTROYED event for a service that does not exist."""
    return cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace=SERVICE_NAMESPACE, type=SERVICE_TYPE, id=rid, version=str(version), phase="running"
        )
    )


# --- helpers -------------------------------------------------------------------------------


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def _pair_yaml(pair: common_pb2.PEMEncodedCertificateAndKey) -> dict[str, str]:
    return {"crt": _b64(pair.crt), "key": _b64(pair.key)}


def _resource(
    namespace: str,
    rtype: str,
    rid: str,
    version: int,
    created: dt.datetime,
    updated: dt.datetime,
    spec: Any,
    doc: Any = None,
    yaml_text: str | None = None,
) -> cosi_resource_pb2.Resource:
    created_ts, updated_ts = Timestamp(), Timestamp()
    created_ts.FromDatetime(created)
    updated_ts.FromDatetime(updated)
    if yaml_text is None:
        yaml_text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)
    return cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace=namespace,
            type=rtype,
            id=rid,
            version=str(version),
            owner="",
            phase="running",
            created=created_ts,
            updated=updated_ts,
        ),
        spec=cosi_resource_pb2.Spec(proto_spec=spec.SerializeToString(), yaml_spec=yaml_text),
    )

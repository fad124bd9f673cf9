from trustplan.providers.talos.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KubernetesDynamicCertsSpec(_message.Message):
    __slots__ = ("api_server", "api_server_kubelet_client", "front_proxy")
    API_SERVER_FIELD_NUMBER: _ClassVar[int]
    API_SERVER_KUBELET_CLIENT_FIELD_NUMBER: _ClassVar[int]
    FRONT_PROXY_FIELD_NUMBER: _ClassVar[int]
    api_server: _common_pb2.PEMEncodedCertificateAndKey
    api_server_kubelet_client: _common_pb2.PEMEncodedCertificateAndKey
    front_proxy: _common_pb2.PEMEncodedCertificateAndKey
    def __init__(self, api_server: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ..., api_server_kubelet_client: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ..., front_proxy: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ...) -> None: ...

class KubernetesRootSpec(_message.Message):
    __slots__ = ("name", "endpoint", "local_endpoint", "cert_sa_ns", "dns_domain", "issuing_ca", "service_account", "aggregator_ca", "aescbc_encryption_secret", "bootstrap_token_id", "bootstrap_token_secret", "secretbox_encryption_secret", "api_server_ips", "accepted_c_as")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CERT_SA_NS_FIELD_NUMBER: _ClassVar[int]
    DNS_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ISSUING_CA_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_CA_FIELD_NUMBER: _ClassVar[int]
    AESCBC_ENCRYPTION_SECRET_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    SECRETBOX_ENCRYPTION_SECRET_FIELD_NUMBER: _ClassVar[int]
    API_SERVER_IPS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_C_AS_FIELD_NUMBER: _ClassVar[int]
    name: str
    endpoint: _common_pb2.URL
    local_endpoint: _common_pb2.URL
    cert_sa_ns: _containers.RepeatedScalarFieldContainer[str]
    dns_domain: str
    issuing_ca: _common_pb2.PEMEncodedCertificateAndKey
    service_account: _common_pb2.PEMEncodedKey
    aggregator_ca: _common_pb2.PEMEncodedCertificateAndKey
    aescbc_encryption_secret: str
    bootstrap_token_id: str
    bootstrap_token_secret: str
    secretbox_encryption_secret: str
    api_server_ips: _containers.RepeatedCompositeFieldContainer[_common_pb2.NetIP]
    accepted_c_as: _containers.RepeatedCompositeFieldContainer[_common_pb2.PEMEncodedCertificate]
    def __init__(self, name: _Optional[str] = ..., endpoint: _Optional[_Union[_common_pb2.URL, _Mapping]] = ..., local_endpoint: _Optional[_Union[_common_pb2.URL, _Mapping]] = ..., cert_sa_ns: _Optional[_Iterable[str]] = ..., dns_domain: _Optional[str] = ..., issuing_ca: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ..., service_account: _Optional[_Union[_common_pb2.PEMEncodedKey, _Mapping]] = ..., aggregator_ca: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ..., aescbc_encryption_secret: _Optional[str] = ..., bootstrap_token_id: _Optional[str] = ..., bootstrap_token_secret: _Optional[str] = ..., secretbox_encryption_secret: _Optional[str] = ..., api_server_ips: _Optional[_Iterable[_Union[_common_pb2.NetIP, _Mapping]]] = ..., accepted_c_as: _Optional[_Iterable[_Union[_common_pb2.PEMEncodedCertificate, _Mapping]]] = ...) -> None: ...

class OSRootSpec(_message.Message):
    __slots__ = ("issuing_ca", "cert_sani_ps", "cert_sandns_names", "token", "accepted_c_as")
    ISSUING_CA_FIELD_NUMBER: _ClassVar[int]
    CERT_SANI_PS_FIELD_NUMBER: _ClassVar[int]
    CERT_SANDNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_C_AS_FIELD_NUMBER: _ClassVar[int]
    issuing_ca: _common_pb2.PEMEncodedCertificateAndKey
    cert_sani_ps: _containers.RepeatedCompositeFieldContainer[_common_pb2.NetIP]
    cert_sandns_names: _containers.RepeatedScalarFieldContainer[str]
    token: str
    accepted_c_as: _containers.RepeatedCompositeFieldContainer[_common_pb2.PEMEncodedCertificate]
    def __init__(self, issuing_ca: _Optional[_Union[_common_pb2.PEMEncodedCertificateAndKey, _Mapping]] = ..., cert_sani_ps: _Optional[_Iterable[_Union[_common_pb2.NetIP, _Mapping]]] = ..., cert_sandns_names: _Optional[_Iterable[str]] = ..., token: _Optional[str] = ..., accepted_c_as: _Optional[_Iterable[_Union[_common_pb2.PEMEncodedCertificate, _Mapping]]] = ...) -> None: ...

"""The Kubernetes gate against the real kube-apiserver: it passes when every node is Ready, and names
each failure right (a missing node, 401 for a client cert of a foreign CA, 403 without
system:masters)."""

from __future__ import annotations

import asyncio

import pytest
from kubeapi import KubeAPIServer
from trustplan.providers.base import TLSIdentity
from trustplan.providers.kubechecks.nodes import ExpectedNode, KubernetesChecker

from trustplan.errors import GateFailedError
from trustplan.talos import certgen, pki


def ready_node(api: KubeAPIServer, name: str, address: str) -> None:
    from kubernetes import client

    core = api.core()
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
    core.patch_node_status(name, {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": address}],
    }})


@pytest.fixture(scope="module")
def nodes(kube_api: KubeAPIServer) -> list[ExpectedNode]:
    ready_node(kube_api, "gate-cp-1", "10.9.0.2")
    ready_node(kube_api, "gate-worker-1", "10.9.0.3")
    return [ExpectedNode("10.9.0.2", "gate-cp-1"), ExpectedNode("10.9.0.3", "gate-worker-1")]


def credential(api: KubeAPIServer, crt: bytes | None = None, key: bytes | None = None) -> TLSIdentity:
    return TLSIdentity("kubernetes", "sha256:" + "0" * 64, (), crt or api.admin_crt.read_bytes(),
                      key or api.admin_key.read_bytes(), api.ca_pem)


def check(api: KubeAPIServer, cred: TLSIdentity, expected: list[ExpectedNode]) -> dict[str, str]:
    return asyncio.run(KubernetesChecker([api.server], 3, backoff_max=0.5).check(cred, expected))


def test_gate_passes_when_every_node_is_ready(kube_api: KubeAPIServer, nodes: list[ExpectedNode]) -> None:
    assert check(kube_api, credential(kube_api), nodes) == {kube_api.server: "2 nodes Ready (v1.34.4)"}


def test_gate_names_a_missing_node(kube_api: KubeAPIServer, nodes: list[ExpectedNode]) -> None:
    with pytest.raises(GateFailedError, match=r"not in the node list: .*10\.9\.0\.9"):
        check(kube_api, credential(kube_api), [*nodes, ExpectedNode("10.9.0.9", "gate-gone")])


def test_gate_names_401_and_403(kube_api: KubeAPIServer, nodes: list[ExpectedNode]) -> None:
    now = pki.utcnow()
    foreign_ca, foreign_key = certgen.generate_ca("kubernetes", now)
    crt, key = certgen.issue_client_cert(foreign_ca, foreign_key, "system:masters", now, common_name="intruder")
    with pytest.raises(GateFailedError, match=r"401 Unauthorized"):
        check(kube_api, credential(kube_api, pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key)), nodes)
    ca = pki.CACert.from_pem((kube_api.dir / "ca.crt").read_bytes())
    ca_key = pki.load_key_pem((kube_api.dir / "ca.key").read_bytes(), "ca.key")
    crt, key = certgen.issue_client_cert(ca.cert, ca_key, "developers", now, common_name="dev")
    with pytest.raises(GateFailedError, match=r"403 Forbidden"):
        check(kube_api, credential(kube_api, pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(key)), nodes)

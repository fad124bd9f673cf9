"""Issue 22 on real kube-apiservers (`--k8s real`, Talos 1.14 layout): one plan rotates the Talos API,
Kubernetes API and aggregator CAs, the service-account key and the encryption key. The real servers
restart with every new input and answer every Kubernetes gate; the swap rewrites every Secret, and
etcd, read directly, holds no Secret under the old key's `k8s:enc:secretbox:v1:<name>:` prefix; a
token minted before the rotation works until the remove and is refused after it; TokenRequest then
signs with the new key (its `kid` changes)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from simharness import run_with_cluster
from trustplan_sim import etcd, realk8s
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier, planning
from trustplan.formats import desired as desired_mod
from trustplan.talos import kubecreds, machineconfig, pki

pytestmark = pytest.mark.realk8s
EXTRA = """
  aggregator-2027: {generate: {}}
  sa-2027: {generate: {}}
  etcd-key-2027: {generate: {}}
"""
TRUST = """
  aggregator: {issuer: aggregator-2027}
  serviceaccount: {issuer: sa-2027, drain: 0s}
  encryption: {issuer: etcd-key-2027}
"""


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if realk8s.find_apiserver() is None or etcd.find_etcd() is None:
        why = "kube-apiserver v1.34.4 or etcd not built/installed here"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def etcd_value(cluster: SimCluster, key: str) -> bytes:
    """The raw value etcd stores under `key` (its v3 JSON gateway, with the apiserver's client cert)."""
    member = cluster.controlplanes[0].etcd
    assert member is not None
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()})
    p = member.pki_path
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(p("ca.crt")),
            "--cert",
            str(p("apiserver-client.crt")),
            "--key",
            str(p("apiserver-client.key")),
            "-X",
            "POST",
            "-d",
            body,
            f"{member.client_url}/v3/kv/range",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    kvs = json.loads(proc.stdout).get("kvs") or []
    assert kvs, (key, proc.stdout)
    return base64.b64decode(kvs[0]["value"])


def whoami(kubeconfig: Path, token: str, scratch: Path) -> tuple[int, str]:
    """A SelfSubjectReview with `token` alone as the credential: (HTTP code, the username it names)."""
    import yaml

    doc = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    ca = scratch / "kube-ca.crt"
    ca.write_bytes(base64.b64decode(doc["certificate-authority-data"]))
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(ca),
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
            body,
            "-w",
            "\n%{http_code}",
            f"{doc['server']}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 18), proc.stderr  # 18: a 401 the server ends early
    out, _, code = proc.stdout.rpartition("\n")
    user = json.loads(out).get("status", {}).get("userInfo", {}).get("username", "") if int(code) == 201 else ""
    return int(code), user


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def kube_kid(public_pem: bytes) -> str:
    """kube-apiserver's key id: base64url(SHA-256(DER SubjectPublicKeyInfo)), unpadded."""
    der = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def test_all_five_credentials_rotate_on_real_kube_apiservers(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        kc = cluster.kubeconfig
        cfg = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        old_key = machineconfig.kind_fields(cfg, "encryption").issuer
        assert old_key is not None and old_key.name
        kubectl(kc, "create", "secret", "generic", "before", "--from-literal=word=kept")
        assert etcd_value(cluster, "/registry/secrets/default/before").startswith(
            f"k8s:enc:secretbox:v1:{old_key.name}:".encode()
        )
        kubectl(kc, "create", "serviceaccount", "gate")
        old_token = kubectl(kc, "create", "token", "gate", "--duration=1h").stdout.strip()

        desired_path = cluster.dir / "trustplan.yaml"
        text = desired_path.read_text()
        text = text.replace("authorities:\n", "authorities:" + EXTRA, 1).replace("trust:\n", "trust:" + TRUST, 1)
        desired_path.write_text(text)
        desired = desired_mod.load(desired_path)
        planned = await planning.plan_desired(desired, pki.utcnow(), planning_expiry())
        planned.save_new_keys()
        names = [p.name for p in planned.plan.phases]
        assert names[0] == "move"  # the simulator's 1.14 configs keep SA and encryption in legacy fields
        applied = await applier.apply_desired(
            applier.ApplyRequest(desired, planned.saved, "sha256:" + "0" * 64, "plan", pki.utcnow())
        )
        gates = [s for s in applied.steps if s.kind == "gate"]
        assert gates and all(s.outcome == "ok" for s in gates)
        assert {s.pki for s in gates} >= {"kubernetes", "aggregator", "serviceaccount", "encryption"}
        rewrites = [s for s in applied.steps if s.kind == "rewrite"]
        assert len(rewrites) == 1 and rewrites[0].outcome == "ok"

        kc = cluster.kubeconfig
        # every Secret now sits under the new key; the one written before still decrypts
        new_cfg = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        new_key = machineconfig.kind_fields(new_cfg, "encryption").issuer
        assert new_key is not None and new_key.name != old_key.name
        assert machineconfig.kind_fields(new_cfg, "encryption").accepted == ()
        raw = etcd_value(cluster, "/registry/secrets/default/before")
        assert raw.startswith(f"k8s:enc:secretbox:v1:{new_key.name}:".encode())
        got = json.loads(kubectl(kc, "get", "secret", "before", "-o", "json").stdout)
        assert base64.b64decode(got["data"]["word"]) == b"kept"
        # TokenRequest signs with the new key; the token minted before the rotation is refused now
        sa = machineconfig.kind_fields(new_cfg, "serviceaccount").issuer
        assert sa is not None
        new_token = kubectl(kc, "create", "token", "gate", "--duration=1h").stdout.strip()
        assert kid_of(new_token) == kube_kid(sa.public) != kid_of(old_token)
        assert whoami(kc, new_token, tmp_path) == (201, "system:serviceaccount:default:gate"), new_token
        assert whoami(kc, old_token, tmp_path)[0] == 401  # the old key was removed (drain 0s)
        assert kubecreds.documents_supported("v1.14.0")

    run_with_cluster(
        scenario,
        tmp_path / "sim",
        controlplanes=3,
        workers=0,
        k8s=True,
        k8s_mode="real",
        config_layout="multidoc",
        kubelet_rejoin_ms=100,
    )


def planning_expiry():  # noqa: ANN201
    import datetime as dt

    return dt.timedelta(hours=1)

"""One real-Kubernetes cluster for every issue 22 test (`--k8s real`, 2 control planes, every config
made from `talosctl gen config` v1.14.1 output, `sim up --from`): the story runs once per test
session (the fixture `story` of tests/conftest.py) and records what a user would observe at each
step; the test modules assert on it.

1. Before: a Secret `before` (stored under the old encryption key), a token minted with the old
   service-account key, a legacy token Secret (type kubernetes.io/service-account-token) signed with it.
2. Plan 1 rotates all five credentials (`drain: 1s`): apply 1 runs every phase but the old
   service-account key's remove, which waits for the drain.
3. Plan 2 (after the drain) is the remove; it lists the legacy token; apply 2 runs it.
After each step the story asks every real API server, the nodes' Talos API and etcd itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from peers import CACHE, need_kubernetes
from simharness import run_with_cluster
from trustplan.providers.base import NodeRef, TLSIdentity
from trustplan.providers.kubechecks import aggregator as agg
from trustplan.providers.kubechecks import api
from trustplan.providers.kubechecks import encryption as enc
from trustplan.providers.kubechecks import serviceaccount as sa
from trustplan.providers.kubechecks.api import CheckFailed
from trustplan_sim.cluster import SimCluster
from waiting import until

from trustplan.engine import access, applier, planning
from trustplan.engine.applier import Applied
from trustplan.formats import desired as desired_mod
from trustplan.formats import planfile
from trustplan.talos import certgen, kubecreds, machineconfig, pki

EXTRA = "\n  aggregator-2027: {generate: {}}\n  sa-2027: {generate: {}}\n  etcd-key-2027: {generate: {}}\n"
TRUST = (
    "\n  aggregator: {issuer: aggregator-2027}\n  serviceaccount: {issuer: sa-2027, drain: 1s}\n"
    "  encryption: {issuer: etcd-key-2027}\n"
)
LEGACY = "legacy-gate"
#: the cluster is made from real `talosctl gen config` v1.14.1 output (its 1.14 credential documents)
GEN_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "talosctl-gen-config" / "v1.14.1"
#: the release that made them judges every config the rotation writes (a refusal fails the write)
TALOSCTL = CACHE / "talosctl-v1.14.1"


@dataclass
class Story:
    """What was observed; `refused` maps a check that must fail to its message ("" when it passed)."""

    dir: Path = Path()
    before: dict[str, Any] = field(default_factory=dict)
    plan1_phases: list[str] = field(default_factory=list)
    plan1_deferred: list[str] = field(default_factory=list)
    plan1_warnings: list[str] = field(default_factory=list)
    apply1: Applied | None = None
    after1: dict[str, Any] = field(default_factory=dict)
    plan2_phases: list[str] = field(default_factory=list)
    apply2: Applied | None = None
    after2: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    validated: int = 0  # configs talosctl v1.14.1 `validate --mode metal --strict` accepted


def need_binaries() -> None:
    """kube-apiserver v1.34.4, etcd and talosctl v1.14.1, else skip (fail in CI: a test that skips in
    CI proves nothing)."""
    need_kubernetes(TALOSCTL)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, check=False, timeout=60, input=stdin,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def admin_of(kubeconfig: Path) -> TLSIdentity:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    pem = [base64.b64decode(user[k]) for k in ("client-certificate-data", "client-key-data")]
    return TLSIdentity("kubernetes", "", (), pem[0], pem[1], base64.b64decode(cluster["certificate-authority-data"]))


def servers(cluster: SimCluster) -> list[str]:
    return [f"https://{n.address}:{cluster.k8s_port}" for n in cluster.controlplanes]


def etcd_of(cluster: SimCluster) -> tuple[str, tuple[bytes, bytes, bytes]]:
    """etcd at the first control plane's address:2379 and a client cert minted in memory from the
    etcd CA its config carries (what the encryption gate does)."""
    cfg = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
    ca = cfg.v1alpha1["cluster"]["etcd"]["ca"]
    bundle, key = base64.b64decode(ca["crt"]), base64.b64decode(ca["key"])
    cert, ckey = certgen.issue_client_cert(
        pki.load_cert_pem(bundle, "etcd CA"), pki.load_key_pem(key, "etcd CA key"), "test", pki.utcnow()
    )
    return f"https://{cluster.controlplanes[0].address}:2379", (bundle, pki.cert_to_pem(cert), pki.key_to_pem(ckey))


def etcd_names(cluster: SimCluster) -> Counter[str]:
    url, creds = etcd_of(cluster)
    return enc.secret_key_names(url, *creds)


def refusal(check: Any, *args: Any) -> str:
    """The message of the CheckFailed `check(*args)` raises; "" when it passes (the story's asserts
    then fail: a check that must refuse accepted)."""
    try:
        check(*args)
    except CheckFailed as exc:
        return str(exc) or "refused"
    return ""


def front_proxy(m: kubecreds.Material) -> tuple[bytes, bytes]:
    assert m.secret is not None
    ca = pki.load_cert_pem(m.public, "aggregator CA")
    cert, key = certgen.issue_client_cert(
        ca, pki.load_key_pem(m.secret, "key"), "test", pki.utcnow(), common_name=agg.FRONT_PROXY_CN
    )
    return pki.cert_to_pem(cert), pki.key_to_pem(key)


def tokens_accepted(cluster: SimCluster, token: str) -> list[bool]:
    """Per API server: a SelfSubjectReview with `token` alone names the ServiceAccount default/gate."""
    ctx = api.context(admin_of(cluster.kubeconfig).ca_bundle_pem)
    want = (201, "system:serviceaccount:default:gate")
    return [api.review(s, ctx, {"Authorization": f"Bearer {token}"}) == want for s in servers(cluster)]


async def own_proxy_certs(desired: desired_mod.DesiredState, cluster: SimCluster) -> list[bytes]:
    """Each control plane's front-proxy client cert as its Talos API serves it (KubernetesDynamicCerts)."""
    provider = access.make_provider(desired)
    try:
        reader = provider.capabilities.apiserver_certs
        assert reader is not None
        return [await reader.front_proxy_cert(NodeRef(n.address, "controlplane")) for n in cluster.controlplanes]
    finally:
        await provider.close()


async def plan_and_apply(desired_path: Path, story: Story, name: str) -> tuple[list[str], Applied]:
    desired = desired_mod.load(desired_path)
    planned = await planning.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    (story.dir / f"{name}.bin").write_bytes(planfile.encode(planned.saved, None))
    if name == "plan1":
        story.plan1_deferred = [d.pki for d in planned.plan.deferred]
        story.plan1_warnings = [w.code for w in planned.plan.warnings]
    digest = "sha256:" + "0" * 64
    applied = await applier.apply_desired(applier.ApplyRequest(desired, planned.saved, digest, "plan", pki.utcnow()))
    return [p.name for p in planned.plan.phases], applied


def run_story(dir: Path) -> Story:
    story = Story(dir=dir)

    async def scenario(cluster: SimCluster) -> None:
        kc = cluster.kubeconfig
        cfg = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        old_ca = machineconfig.kind_fields(cfg, "aggregator").issuer
        old_sa = machineconfig.kind_fields(cfg, "serviceaccount").issuer
        old_key = machineconfig.kind_fields(cfg, "encryption").issuer
        assert old_ca is not None and old_sa is not None and old_key is not None and old_key.name
        kubectl(kc, "create", "secret", "generic", "before", "--from-literal=word=kept")
        kubectl(kc, "create", "serviceaccount", "gate")
        old_token = kubectl(kc, "create", "token", "gate", "--duration=1h").strip()
        legacy = {
            "apiVersion": "v1", "kind": "Secret", "type": sa.LEGACY_TYPE,
            "metadata": {"name": LEGACY, "annotations": {"kubernetes.io/service-account.name": "gate"}},
            "data": {"token": base64.b64encode(old_token.encode()).decode()},
        }
        kubectl(kc, "apply", "-f", "-", stdin=yaml.safe_dump(legacy))
        url, creds = etcd_of(cluster)
        story.before = {
            "key_name": old_key.name, "etcd": etcd_names(cluster), "old_token": tokens_accepted(cluster, old_token),
        }
        # the etcd check refuses a store holding Secrets under another key than the one it asks for
        story.refused["etcd: Secrets under the old key"] = refusal(enc.all_under, url, *creds, "trustplan-none")

        desired_path = cluster.dir / "trustplan.yaml"
        text = desired_path.read_text()
        text = text.replace("authorities:\n", "authorities:" + EXTRA, 1).replace("trust:\n", "trust:" + TRUST, 1)
        desired_path.write_text(text)
        story.plan1_phases, story.apply1 = await plan_and_apply(desired_path, story, "plan1")
        story.after1 = {"old_token": tokens_accepted(cluster, old_token), "etcd": etcd_names(cluster)}
        swapped = json.loads(desired_mod.load(desired_path).state.read_text())["swaps"]["serviceaccount"]
        since = dt.datetime.fromisoformat(swapped.replace("Z", "+00:00"))
        await until(lambda: pki.utcnow() > since + dt.timedelta(seconds=1), "the token drain of 1s passed")
        story.plan2_phases, story.apply2 = await plan_and_apply(desired_path, story, "plan2")

        after = machineconfig.parse(cluster.controlplanes[0].config, "cp-1")
        new_ca = machineconfig.kind_fields(after, "aggregator").issuer
        new_sa = machineconfig.kind_fields(after, "serviceaccount").issuer
        new_key = machineconfig.kind_fields(after, "encryption")
        assert new_ca is not None and new_sa is not None and new_sa.secret is not None and new_key.issuer
        admin = admin_of(kc)
        got = yaml.safe_load(kubectl(kc, "get", "secret", "before", "-o", "yaml"))
        new_token = kubectl(kc, "create", "token", "gate", "--duration=1h").strip()
        own = await own_proxy_certs(desired_mod.load(desired_path), cluster)
        story.after2 = {
            "key_name": new_key.issuer.name, "accepted_keys": len(new_key.accepted),
            "etcd": etcd_names(cluster), "before_word": base64.b64decode(got["data"]["word"]),
            "old_token": tokens_accepted(cluster, old_token), "new_token": tokens_accepted(cluster, new_token),
            "new_kid": sa.token_kid(new_token), "sa_kid": sa.key_id(new_sa.public), "old_kid": sa.token_kid(old_token),
            "configmap": {pki.fingerprint(c) for c in agg.configmap_cas(servers(cluster)[0], admin)},
            "new_ca": pki.fingerprint(pki.load_cert_pem(new_ca.public, "new")),
        }
        # what must pass, recorded as refusals that must be empty
        foreign_key = pki.key_to_pem(rsa.generate_private_key(65537, 2048))
        foreign_ca, foreign_ca_key = certgen.generate_ca("kubernetes", pki.utcnow())  # never accepted
        foreign = kubecreds.Material(pki.cert_to_pem(foreign_ca), pki.key_to_pem(foreign_ca_key))
        passes: dict[str, str] = {}
        url, creds = etcd_of(cluster)
        passes["etcd: every Secret under the new key"] = refusal(enc.all_under, url, *creds, new_key.issuer.name)
        story.refused["etcd: asked for the old key"] = refusal(enc.all_under, url, *creds, old_key.name)
        for i, (node, server) in enumerate(zip(cluster.controlplanes, servers(cluster), strict=True)):
            passes[f"{server}: every Secret decrypts"] = refusal(enc.all_decrypt, server, admin)
            passes[f"{server}: front-proxy, new CA"] = refusal(
                agg.front_proxy_user, server, admin.ca_bundle_pem, *front_proxy(new_ca)
            )
            passes[f"{node.address}: own front-proxy cert from the new CA"] = refusal(
                agg.own_proxy_cert_from, node.address, own[i], new_ca.public, "new"
            )
            story.refused[f"{node.address}: own front-proxy cert from the old CA"] = refusal(
                agg.own_proxy_cert_from, node.address, own[i], old_ca.public, "old"
            )
            for label, wrong in (("old", old_ca), ("foreign", foreign)):
                story.refused[f"{server}: front-proxy, {label} CA"] = refusal(
                    agg.front_proxy_user, server, admin.ca_bundle_pem, *front_proxy(wrong)
                )
            token = sa.token_request(server, admin)
            passes[f"{server}: token of the new key"] = refusal(
                sa.token_accepted, server, admin.ca_bundle_pem, sa.resign(token, new_sa.secret), "new key"
            )
            assert old_sa.secret is not None
            for label, key in (("old", old_sa.secret), ("foreign", foreign_key)):
                story.refused[f"{server}: token of the {label} key"] = refusal(
                    sa.token_accepted, server, admin.ca_bundle_pem, sa.resign(token, key), label
                )
        story.after2["passes"] = passes
        assert cluster.talosctl_validator is not None
        story.validated = cluster.talosctl_validator.runs

    run_with_cluster(
        scenario, dir / "sim", controlplanes=2, workers=0, k8s=True, k8s_mode="real",
        from_dir=GEN_CONFIG, kubelet_rejoin_ms=100, talosctl=TALOSCTL,
    )
    return story

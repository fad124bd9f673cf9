"""Deterministic example plans for the rendering tests: fixed CA certificates (public only, in data/),
a fixed clock, and the document bindings the engine would add."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from trustplan.planner import Authority, DesiredTrust, LiveNode, LiveTrust, Outputs, Plan, PlanInput, make_plan
from trustplan.planner.ops import OutputKind

from trustplan.formats import planfile
from trustplan.formats.savedplan import Bindings, PlanRollout, SavedPlan
from trustplan.talos import pki

DATA = Path(__file__).parent / "data"
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SOURCES = {"talos-old": "live", "k8s-old": "live", "talos-legacy": "live"}


def authority(name: str) -> Authority:
    ca = pki.CACert.from_pem((DATA / f"{name}.pem").read_bytes(), name)
    source = SOURCES.get(name, "generate")
    return Authority(
        fingerprint=ca.fingerprint,
        pki="kubernetes" if name.startswith("k8s") else "talos",
        source=source,  # type: ignore[arg-type]
        subject=ca.subject,
        algorithm=ca.algorithm,
        not_before=ca.not_before,
        not_after=ca.not_after,
        cert_pem=ca.pem.decode(),
        key_available=True,
        name=None if source == "live" and name != "talos-legacy" else name,
    )


AUTH = {n: authority(n) for n in ("talos-old", "talos-new", "talos-legacy", "k8s-old", "k8s-new")}


def fp(name: str) -> str:
    return AUTH[name].fingerprint


def trust(issuer: str | None, *accepted: str, key: bool = True) -> LiveTrust:
    return LiveTrust(fp(issuer) if issuer else None, key and issuer is not None, tuple(fp(a) for a in accepted))


def node(address: str, role: str, talos: LiveTrust, kube: LiveTrust) -> LiveNode:
    if role == "worker":
        talos = LiveTrust(talos.issuer, False, talos.accepted)
        kube = LiveTrust(kube.issuer, False, kube.accepted)
    digest = "sha256:" + hashlib.sha256(address.encode()).hexdigest()
    return LiveNode(address, role, digest, talos, kube, role)  # type: ignore[arg-type]


def cluster(n_cp: int, n_w: int, talos: LiveTrust, kube: LiveTrust) -> list[LiveNode]:
    addresses = [f"10.5.{i // 250}.{2 + i % 250}" for i in range(n_cp + n_w)]
    return [node(a, "controlplane" if i < n_cp else "worker", talos, kube) for i, a in enumerate(addresses)]


BINDINGS = Bindings(
    tool_version="0.1.0",
    created=NOW,
    expires=dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC),
    provider="files",
    desired_digest="sha256:" + "d" * 64,
    lineage=None,
    serial=0,
)


def saved(plan: Plan, rollout: PlanRollout | None = None) -> SavedPlan:
    """The plan as `trustplan plan` saves it, with fixed bindings (format 1.1: no rollout; with a
    rollout, 1.2 as this trustplan writes it)."""
    paths: dict[OutputKind, str] = {"talosconfig": "talosconfig", "kubeconfig": "kubeconfig", "secrets": "secrets.yaml"}
    return planfile.new(plan, BINDINGS, paths, rollout, format_minor=1 if rollout is None else 2)


def document(saved: SavedPlan) -> dict[str, Any]:
    """The plan document itself, as `--format json` prints it and policy tools read it."""
    doc: dict[str, Any] = json.loads(saved.document)
    return doc


def rotation(n_cp: int = 3, n_w: int = 2, rollout: PlanRollout | None = None) -> SavedPlan:
    """Both PKIs from the live CAs to new generated ones (the files example)."""
    nodes = cluster(n_cp, n_w, trust("talos-old"), trust("k8s-old"))
    inp = PlanInput(
        "demo",
        tuple(nodes),
        (DesiredTrust("talos", fp("talos-new")), DesiredTrust("kubernetes", fp("k8s-new"))),
        tuple(AUTH[n] for n in ("talos-old", "talos-new", "k8s-old", "k8s-new")),
        NOW,
        Outputs(talosconfig=True, kubeconfig=True, secrets=True),
    )
    return saved(make_plan(inp), rollout)


def resume() -> SavedPlan:
    """The Talos PKI only, from a half-finished rotation: one control plane is done, two issue from the new
    CA but still accept the old one, the workers have only accepted the new one; a legacy CA that
    expires in 60 days stays accepted."""
    done = trust("talos-new", "talos-legacy")
    halfway = trust("talos-new", "talos-old", "talos-legacy")
    before = trust("talos-old", "talos-new", "talos-legacy")
    kube = trust("k8s-old")
    nodes = [
        node("10.5.0.2", "controlplane", done, kube),
        node("10.5.0.3", "controlplane", halfway, kube),
        node("10.5.0.4", "controlplane", halfway, kube),
        node("10.5.0.5", "worker", before, kube),
        node("10.5.0.6", "worker", before, kube),
    ]
    inp = PlanInput(
        "demo",
        tuple(nodes),
        (DesiredTrust("talos", fp("talos-new"), (fp("talos-legacy"),)),),
        tuple(AUTH[n] for n in ("talos-old", "talos-new", "talos-legacy")),
        NOW,
        Outputs(talosconfig=True),
    )
    return saved(make_plan(inp))


SCENARIOS = {"rotation": rotation, "resume": resume}
#: the same rotation at the sizes reviewers meet: 5, 53 and 503 nodes (3 control planes each)
#: the rollout `trustplan plan` saves by default, with the read latency it measured (a LAN: 12 ms)
MEASURED = PlanRollout(controlplane=1, worker=10, canary=0, gates=32, read_ms=12.0)
CANARY = PlanRollout(controlplane=1, worker=50, canary=5, gates=64, read_ms=12.0)
SIZES = {
    5: lambda: rotation(rollout=MEASURED),
    53: lambda: rotation(n_cp=3, n_w=50, rollout=MEASURED),
    503: lambda: rotation(n_cp=3, n_w=500, rollout=CANARY),
}

"""Build planner inputs from short descriptions: CAs are named by letters, fingerprints are fake."""

from __future__ import annotations

import datetime as dt

from trustplan.planner import Authority, DesiredTrust, LiveNode, LiveTrust, Outputs, PlanInput

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def fp(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")


def authority(name: str, pki: str = "talos", key: bool = True, source: str = "generate", days: int = 3650) -> Authority:
    return Authority(
        fingerprint=fp(name), pki=pki, source=source, subject=f"O={pki}", algorithm="ed25519",  # type: ignore[arg-type]
        not_before=NOW, not_after=NOW + dt.timedelta(days=days), cert_pem="", key_available=key, name=name,
    )


def trust(issuer: str | None, *accepted: str, key: bool = True) -> LiveTrust:
    return LiveTrust(fp(issuer) if issuer else None, key and issuer is not None, tuple(fp(a) for a in accepted))


def node(
    address: str, role: str, talos: LiveTrust, kube: LiveTrust | None = None, declared: str | None = None
) -> LiveNode:
    if role == "worker":
        talos = LiveTrust(talos.issuer, False, talos.accepted) if talos.issuer_has_key else talos
        if kube is not None and kube.issuer_has_key:
            kube = LiveTrust(kube.issuer, False, kube.accepted)
    return LiveNode(address, role, "sha256:" + address, talos, kube or trust("k-old"), declared)  # type: ignore[arg-type]


def cluster(talos: LiveTrust, n_cp: int = 3, n_w: int = 2, kube: LiveTrust | None = None) -> tuple[LiveNode, ...]:
    cps = [node(f"10.5.0.{2 + i}", "controlplane", talos, kube) for i in range(n_cp)]
    ws = [node(f"10.5.0.{2 + n_cp + i}", "worker", talos, kube) for i in range(n_w)]
    return tuple(cps + ws)


def plan_input(nodes: tuple[LiveNode, ...], *desired: DesiredTrust, authorities: tuple[Authority, ...] = (),
               outputs: Outputs = Outputs(talosconfig=True, kubeconfig=True)) -> PlanInput:
    auths = authorities or (authority("old"), authority("new"), authority("k-old", "kubernetes"),
                            authority("k-new", "kubernetes"))
    return PlanInput("demo", nodes, desired, auths, NOW, outputs)


def want(pki: str, issuer: str, *accepted: str) -> DesiredTrust:
    return DesiredTrust(pki, fp(issuer), tuple(fp(a) for a in accepted))  # type: ignore[arg-type]


def steps(plan) -> list[str]:  # noqa: ANN001
    """The plan as short strings: 'accept 10.5.0.2 talos new', 'gate talos after accept', ..."""
    out = []
    names = {fp(n): n for n in ("old", "new", "new2", "k-old", "k-new", "x")}
    for phase in plan.phases:
        for e in phase.edits:
            match e.kind:
                case "swap":
                    out.append(f"swap {e.node} {e.pki} {names.get(e.old, e.old)}->{names[e.new]}")
                case _:
                    out.append(f"{e.kind} {e.node} {e.pki} {names[e.ca]}")
        for g in phase.gates:
            out.append(f"gate {g.pki} after {g.after}")
        for o in phase.outputs:
            out.append(f"output {o.output} {names[o.ca]}")
    return out

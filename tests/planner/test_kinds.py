"""make_plan over the control-plane-only kinds (aggregator CA, service-account key, encryption key):
the exact step sequence, one write per node per phase when several kinds rotate, workers untouched,
and the safety rule they share (every API server accepts what any API server issues)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import authority, cluster, fp, plan_input, trust, want
from trustplan.planner import LiveNode, Outputs, UnsafePlan, make_plan
from trustplan.planner.document import from_document, to_document
from trustplan.planner.model import KINDS, PKIS, holds
from trustplan.planner.ops import Phase, RemoveCA
from trustplan.planner.safety import check_plan

CPS = ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
OTHERS = ("aggregator", "serviceaccount", "encryption")
NAMES = {fp(n): n for k in OTHERS for n in (f"{k}-old", f"{k}-new")} | {fp(n): n for n in ("old", "new")}


def with_others(nodes: tuple[LiveNode, ...], **issuers: str) -> tuple[LiveNode, ...]:
    """Give every control plane the kinds in `issuers` (kind=issuer name), with its key."""
    return tuple(
        dataclasses.replace(n, others=tuple((k, trust(v)) for k, v in issuers.items()))  # type: ignore[misc]
        if n.role == "controlplane"
        else n
        for n in nodes
    )


def auths(*kinds: str):  # noqa: ANN201
    out = [authority("old"), authority("new"), authority("k-old", "kubernetes")]
    for k in kinds:
        out += [authority(f"{k}-old", k), authority(f"{k}-new", k)]
    return tuple(out)


def short(plan) -> list[str]:  # noqa: ANN001
    out = []
    for phase in plan.phases:
        for e in phase.edits:
            if e.kind == "swap":
                out.append(f"swap {e.node} {e.pki} {NAMES.get(e.old, e.old)}->{NAMES[e.new]}")
            else:
                out.append(f"{e.kind} {e.node} {e.pki} {NAMES[e.ca]}")
        out += [f"gate {g.pki} after {g.after} on {len(g.nodes)}" for g in phase.gates]
        out += [f"output {o.output} {o.pki}" for o in phase.outputs]
    return out


def test_the_kinds_are_one_closed_set_with_their_facts() -> None:
    assert PKIS == ("talos", "kubernetes", "aggregator", "serviceaccount", "encryption")
    assert [KINDS[k].material for k in PKIS] == ["ca", "ca", "ca", "signing-key", "secretbox"]
    assert KINDS["serviceaccount"].name == "service-account signing key"
    assert holds("worker", "kubernetes") and not holds("worker", "encryption")


@pytest.mark.parametrize("kind", OTHERS)
def test_one_kind_rotates_on_the_control_planes_only(kind: str) -> None:
    nodes = with_others(cluster(trust("old")), **{kind: f"{kind}-old"})
    plan = make_plan(plan_input(nodes, want(kind, f"{kind}-new"), authorities=auths(kind), outputs=_no_outputs()))
    assert short(plan) == [
        *[f"accept {n} {kind} {kind}-new" for n in CPS],
        f"gate {kind} after accept on 3",
        *[f"swap {n} {kind} {kind}-old->{kind}-new" for n in CPS],
        f"gate {kind} after swap on 3",
        *[f"remove {n} {kind} {kind}-old" for n in CPS],
        f"gate {kind} after remove on 3",
    ]
    assert plan.managed == (kind,)
    assert {t.node for t in plan.targets} == set(CPS)  # workers hold nothing of it


def test_several_kinds_make_one_write_per_node_per_phase() -> None:
    nodes = with_others(
        cluster(trust("old")),
        aggregator="aggregator-old",
        serviceaccount="serviceaccount-old",
        encryption="encryption-old",
    )
    desired = (want("talos", "new"), *(want(k, f"{k}-new") for k in OTHERS))
    plan = make_plan(plan_input(nodes, *desired, authorities=auths(*OTHERS), outputs=_no_outputs()))
    assert [p.name for p in plan.phases] == ["accept", "swap", "remove"]
    for phase in plan.phases:
        assert phase.nodes() == (*CPS, "10.5.0.5", "10.5.0.6")  # each node once per phase
        for cp in CPS:  # carrying all of its changes: one per kind
            assert [e.pki for e in phase.edits_for(cp)] == ["talos", *OTHERS]
        assert [e.pki for e in phase.edits_for("10.5.0.5")] == ["talos"]
        assert [g.pki for g in phase.gates] == ["talos", *OTHERS]
    assert plan.managed == ("talos", *OTHERS)


def test_a_half_done_rotation_is_finished() -> None:
    """A killed apply left the first control plane swapped: the next plan accepts nowhere, swaps
    the other two and removes everywhere."""
    nodes = with_others(cluster(trust("old")), serviceaccount="serviceaccount-old")
    done = dataclasses.replace(
        nodes[0], others=(("serviceaccount", trust("serviceaccount-new", "serviceaccount-old")),)
    )
    rest = tuple(
        dataclasses.replace(n, others=(("serviceaccount", trust("serviceaccount-old", "serviceaccount-new")),))
        if n.role == "controlplane"
        else n
        for n in nodes[1:]
    )
    kind = "serviceaccount"
    plan = make_plan(
        plan_input((done, *rest), want(kind, f"{kind}-new"), authorities=auths(kind), outputs=_no_outputs())
    )
    assert short(plan) == [
        *[f"swap {n} {kind} {kind}-old->{kind}-new" for n in CPS[1:]],
        f"gate {kind} after swap on 3",
        *[f"remove {n} {kind} {kind}-old" for n in CPS],
        f"gate {kind} after remove on 3",
    ]


def test_removing_a_key_another_api_server_still_uses_is_refused() -> None:
    kind = "encryption"
    nodes = with_others(cluster(trust("old")), encryption="encryption-old")
    plan = make_plan(
        plan_input(
            nodes, want(kind, "encryption-old", "encryption-new"), authorities=auths(kind), outputs=_no_outputs()
        )
    )
    # a forged plan: one API server swaps to the new key, another drops the old one it still reads
    swapped = tuple(
        dataclasses.replace(n, others=((kind, trust("encryption-new", "encryption-old")),))
        if n.address == CPS[0]
        else n
        for n in nodes
    )
    inp = plan_input(
        swapped, want(kind, "encryption-old", "encryption-new"), authorities=auths(kind), outputs=_no_outputs()
    )
    forged = dataclasses.replace(
        plan,
        nodes=swapped,
        phases=(Phase("remove", (RemoveCA(CPS[1], "controlplane", kind, fp("encryption-new")),), (), None),),
    )
    with pytest.raises(UnsafePlan) as exc:
        check_plan(forged, inp)
    assert str(exc.value) == (
        f"the kube-apiserver on {CPS[1]} would refuse a value in etcd encrypted with encryption-new "
        f"(the encryption-at-rest key of {CPS[0]}); it trusts only [encryption-old]"
    )


def test_the_plan_document_round_trips_the_kinds() -> None:
    nodes = with_others(cluster(trust("old")), aggregator="aggregator-old")
    plan = make_plan(
        plan_input(nodes, want("aggregator", "aggregator-new"), authorities=auths("aggregator"), outputs=_no_outputs())
    )
    doc = to_document(plan)
    assert set(doc["nodes"][0]["live"]) == {"talos", "kubernetes", "aggregator"}
    assert set(doc["nodes"][4]["live"]) == {"talos", "kubernetes"}  # a worker
    back = from_document(doc)
    assert back.nodes == plan.nodes and back.phases == plan.phases and back.targets == plan.targets


def _no_outputs() -> Outputs:
    return Outputs()

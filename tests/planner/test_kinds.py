"""make_plan over the control-plane-only kinds (aggregator CA, service-account key, encryption key):
the exact step sequence, one write per node per phase when several kinds rotate, workers untouched,
and the safety rule they share (every API server accepts what any API server issues)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from helpers import NOW, authority, cluster, fp, plan_input, trust, want
from trustplan.planner import LiveNode, Outputs, PlanningError, UnsafePlan, make_plan
from trustplan.planner.document import from_document, to_document
from trustplan.planner.etcd import rolling_steps
from trustplan.planner.model import KINDS, PKIS, holds
from trustplan.planner.ops import Phase, RemoveCA
from trustplan.planner.safety import check_plan

CPS = ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
OTHERS = ("aggregator", "serviceaccount", "encryption", "etcd")
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
    assert PKIS == ("talos", "kubernetes", "aggregator", "serviceaccount", "encryption", "etcd")
    assert [KINDS[k].material for k in PKIS] == ["ca", "ca", "ca", "signing-key", "secretbox", "ca"]
    assert KINDS["etcd"].name == "etcd CA" and KINDS["etcd"].holders == "controlplane"
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
        etcd="etcd-old",
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


def legacy_cluster(kind: str, version: str | None) -> tuple[LiveNode, ...]:
    return tuple(
        dataclasses.replace(n, legacy=(kind,), talos_version=version)  # type: ignore[arg-type]
        if n.role == "controlplane"
        else n
        for n in with_others(cluster(trust("old")), **{kind: f"{kind}-old"})
    )


@pytest.mark.parametrize("kind", [k for k in OTHERS if k != "etcd"])  # the etcd CA has one home
def test_a_legacy_value_on_talos_1_14_is_moved_first_then_rotated(kind: str) -> None:
    nodes = legacy_cluster(kind, "v1.14.1")
    plan = make_plan(plan_input(nodes, want(kind, f"{kind}-new"), authorities=auths(kind), outputs=Outputs()))
    assert [p.name for p in plan.phases] == ["move", "accept", "swap", "remove"]
    move = plan.phases[0]
    assert [(e.kind, e.node, e.pki) for e in move.edits] == [("move", n, kind) for n in CPS]
    assert [(g.pki, g.credential.issuer) for g in move.gates] == [(kind, fp(f"{kind}-old"))]  # still the old one
    assert plan.describe(move.edits[0]).startswith(f"move the {KINDS[kind].name} from cluster.")  # type: ignore[index]


@pytest.mark.parametrize("version", ["v1.12.1", None])
def test_a_legacy_value_on_an_older_talos_is_refused_naming_the_version(version: str | None) -> None:
    nodes = legacy_cluster("serviceaccount", version)
    with pytest.raises(PlanningError) as exc:
        make_plan(plan_input(nodes, want("serviceaccount", "serviceaccount-new"), authorities=auths("serviceaccount")))
    running = "Talos v1.12.1" if version else "a Talos version trustplan could not read"
    assert str(exc.value) == (
        "control plane 10.5.0.2 keeps the service-account signing key in the legacy single value "
        f"cluster.serviceAccount.key, which cannot hold a second one, and runs {running}: a graceful rotation needs "
        "Talos v1.14.0 or later (its KubeServiceAccountConfig document). Upgrade Talos first; trustplan then moves "
        "the value into the document, unchanged, before rotating (or replace it in place, breaking what it "
        "signed: `trustplan plan --allow-disruptive serviceaccount`)"
    )


def test_a_legacy_value_that_does_not_change_is_left_alone() -> None:
    nodes = legacy_cluster("aggregator", "v1.12.1")
    plan = make_plan(plan_input(nodes, want("talos", "new"), authorities=auths("aggregator"), outputs=Outputs()))
    assert all(e.pki == "talos" for e in plan.edits)


SA = "serviceaccount"


def sa_plan(nodes, drain: dt.timedelta | None, **kw):  # noqa: ANN001, ANN003, ANN201
    desired = dataclasses.replace(want(SA, f"{SA}-new"), drain=drain)
    inp = dataclasses.replace(plan_input(nodes, desired, authorities=auths(SA), outputs=Outputs()), **kw)
    return make_plan(inp)


def test_the_drain_holds_the_remove_of_the_old_key_back_after_the_swap() -> None:
    nodes = with_others(cluster(trust("old")), serviceaccount=f"{SA}-old")
    plan = sa_plan(nodes, dt.timedelta(minutes=90))
    assert [p.name for p in plan.phases] == ["accept", "swap"]
    (held,) = plan.deferred
    assert (held.pki, held.cas, held.nodes, held.since, held.until) == (SA, (fp(f"{SA}-old"),), tuple(CPS), None, None)
    (w,) = [w for w in plan.warnings if w.code == "removal-deferred"]
    assert w.message == (
        f"the remove of {SA}-old (service-account signing key) waits for the token drain of 90m: tokens signed "
        "with it stay valid until they expire; `trustplan plan` offers it 90m after the swap (apply records when)"
    )
    assert all(t.after.accepted == (fp(f"{SA}-old"),) for t in plan.targets)  # the old key stays accepted


def test_plan_offers_the_remove_once_the_drain_has_passed() -> None:
    swapped = tuple(
        dataclasses.replace(n, others=((SA, trust(f"{SA}-new", f"{SA}-old")),)) if n.role == "controlplane" else n
        for n in cluster(trust("old"))
    )
    since = NOW - dt.timedelta(minutes=60)
    early = sa_plan(swapped, dt.timedelta(minutes=90), swapped_at=((SA, since),))
    assert early.phases == () and early.deferred[0].until == since + dt.timedelta(minutes=90)
    assert "offers it from 2026-11-27 12:30 UTC" in early.warnings[0].message
    late = sa_plan(
        swapped,
        dt.timedelta(minutes=90),
        swapped_at=((SA, NOW - dt.timedelta(minutes=90)),),
        legacy_tokens=("default/old-token",),
    )
    assert [p.name for p in late.phases] == ["remove"] and late.deferred == ()
    assert [w.message for w in late.warnings if w.code == "tokens-break"] == [
        "1 legacy service-account token Secret(s) (type kubernetes.io/service-account-token) signed with the "
        "removed key stop working: default/old-token"
    ]


def test_a_zero_drain_removes_in_the_same_plan() -> None:
    nodes = with_others(cluster(trust("old")), serviceaccount=f"{SA}-old")
    plan = sa_plan(nodes, dt.timedelta(0))
    assert [p.name for p in plan.phases] == ["accept", "swap", "remove"] and plan.deferred == ()


def test_a_deferred_plan_round_trips_through_its_document() -> None:
    nodes = with_others(cluster(trust("old")), serviceaccount=f"{SA}-old")
    plan = sa_plan(nodes, dt.timedelta(hours=1))
    assert from_document(to_document(plan)).deferred == plan.deferred


def test_the_etcd_steps_roll_one_member_at_a_time_with_quorum() -> None:
    nodes = with_others(cluster(trust("old")), etcd="etcd-old")
    plan = make_plan(plan_input(nodes, want("etcd", "etcd-new"), authorities=auths("etcd"), outputs=_no_outputs()))
    steps = rolling_steps(plan)
    assert [(s.phase, s.member, s.restart, s.up_during, s.quorum) for s in steps] == [
        *[("accept", n, True, 2, 2) for n in CPS],
        *[("swap", n, False, 3, 2) for n in CPS],
        *[("remove", n, True, 2, 2) for n in CPS],
    ]
    names = {fp(n): n for n in ("etcd-old", "etcd-new")}
    assert [s.line(names) for s in steps[::3]] == [
        "accept 10.5.0.2: reboot, 2 of 3 members up, quorum 2; etcd CA = etcd-old + etcd-new (issues from etcd-old)",
        "swap 10.5.0.2: no restart, 3 of 3 members up, quorum 2; etcd CA = etcd-new + etcd-old (issues from etcd-new)",
        "remove 10.5.0.2: reboot, 2 of 3 members up, quorum 2; etcd CA = etcd-new (issues from etcd-new)",
    ]
    doc = to_document(plan)
    assert [r["member"] for r in doc["phases"][0]["etcd_rolling"]] == CPS


def test_an_etcd_rotation_with_two_members_is_refused() -> None:
    nodes = tuple(n for n in with_others(cluster(trust("old")), etcd="etcd-old") if n.address != "10.5.0.4")
    with pytest.raises(PlanningError) as exc:
        make_plan(plan_input(nodes, want("etcd", "etcd-new"), authorities=auths("etcd"), outputs=_no_outputs()))
    assert str(exc.value) == ("a cluster of 2 etcd members loses quorum while one restarts (quorum 2 of 2): add "
                              "control planes to reach 3 first")

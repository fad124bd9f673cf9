"""make_plan: the exact step sequence for a fresh rotation, for rotations stopped halfway, and for
desired states that stop early (pre-stage only, revoke only) or ask for nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from helpers import NOW, authority, cluster, fp, node, plan_input, steps, trust, want
from trustplan.planner import LiveTrust, PlanningError, make_plan
from trustplan.planner.document import from_document, to_document

CPS = ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
WORKERS = ["10.5.0.5", "10.5.0.6"]
ALL = CPS + WORKERS


def talos_plan(nodes, *accepted, issuer="new"):  # noqa: ANN001, ANN202
    return make_plan(plan_input(nodes, want("talos", issuer, *accepted)))


def accepts(nodes, ca="new", pki="talos"):  # noqa: ANN001, ANN201
    return [f"accept {n} {pki} {ca}" for n in nodes]


def swaps(nodes, old="old", new="new", pki="talos"):  # noqa: ANN001, ANN201
    return [f"swap {n} {pki} {old}->{new}" for n in nodes]


def removes(nodes, ca="old", pki="talos"):  # noqa: ANN001, ANN201
    return [f"remove {n} {pki} {ca}" for n in nodes]


def test_fresh_rotation_is_accept_gate_swap_gate_outputs_remove_gate() -> None:
    """The new talosconfig is written once the swap gate proved it works, before remove revokes
    the old one: a stop anywhere after that leaves a working credential on disk."""
    plan = talos_plan(cluster(trust("old")))
    assert steps(plan) == [
        *accepts(ALL),
        "gate talos after accept",
        *swaps(ALL),
        "gate talos after swap",
        "output talosconfig new",
        *removes(ALL),
        "gate talos after remove",
    ]
    assert [p.name for p in plan.phases] == ["accept", "swap", "outputs", "remove"]
    assert plan.has_changes


def test_fresh_rotation_of_both_pkis_interleaves_per_node_and_gates_each_pki() -> None:
    inp = plan_input(
        cluster(trust("old"), kube=trust("k-old")), want("talos", "new"), want("kubernetes", "k-new")
    )
    plan = make_plan(inp)
    expected: list[str] = []
    for phase, per_pki in (
        ("accept", lambda n: [f"accept {n} talos new", f"accept {n} kubernetes k-new"]),
        ("swap", lambda n: [f"swap {n} talos old->new", f"swap {n} kubernetes k-old->k-new"]),
        ("remove", lambda n: [f"remove {n} talos old", f"remove {n} kubernetes k-old"]),
    ):
        if phase == "remove":  # the new credentials are written before anything is revoked
            expected += ["output talosconfig new", "output kubeconfig k-new"]
        for n in ALL:
            expected += per_pki(n)
        expected += [f"gate talos after {phase}", f"gate kubernetes after {phase}"]
    assert steps(plan) == expected


def test_swap_gives_control_planes_the_key_and_workers_the_cert_only() -> None:
    plan = talos_plan(cluster(trust("old")))
    after = {t.node: t.after for t in plan.targets}
    for cp in CPS:
        assert after[cp] == LiveTrust(fp("new"), True, ())
    for w in WORKERS:
        assert after[w] == LiveTrust(fp("new"), False, ())
    swap = next(p for p in plan.phases if p.name == "swap")
    assert [e.with_key for e in swap.edits] == [True, True, True, False, False]  # type: ignore[union-attr]


def test_gates_use_the_new_client_cert_trusting_old_and_new_then_new_only() -> None:
    plan = talos_plan(cluster(trust("old")))
    creds = {g.after: g.credential for g in plan.gates}
    assert creds["accept"].issuer == fp("new")
    assert set(creds["accept"].trusted) == {fp("old"), fp("new")}
    assert creds["swap"].trusted == (fp("new"),)
    assert creds["remove"].trusted == (fp("new"),)
    assert all(g.nodes == tuple(ALL) for g in plan.gates)


def test_control_planes_come_first_then_nodes_by_numeric_address() -> None:
    talos = trust("old")
    nodes = (
        node("10.5.0.10", "worker", talos),
        node("10.5.0.9", "worker", talos),
        node("10.5.0.11", "controlplane", talos),
        node("10.5.0.3", "controlplane", talos),
    )
    plan = talos_plan(nodes)
    order = ["10.5.0.3", "10.5.0.11", "10.5.0.9", "10.5.0.10"]
    assert [p.nodes() for p in plan.phases if p.edits] == [tuple(order)] * 3
    assert [n.address for n in plan.nodes] == order


def test_the_same_inputs_in_any_order_give_the_same_document() -> None:
    nodes = cluster(trust("old"))
    a = to_document(talos_plan(nodes))
    b = to_document(talos_plan(tuple(reversed(nodes))))
    assert a == b


def test_document_round_trips_to_an_equal_plan() -> None:
    plan = make_plan(
        plan_input(cluster(trust("old"), kube=trust("k-old")), want("talos", "new"), want("kubernetes", "k-new"))
    )
    back = from_document(to_document(plan))
    assert back.phases == plan.phases
    assert back.targets == plan.targets
    assert back.nodes == plan.nodes
    assert to_document(back) == to_document(plan)


# --- half-done rotations: the plan finishes the job ---------------------------------------------


def test_stopped_after_accept_starts_at_swap() -> None:
    plan = talos_plan(cluster(trust("old", "new")))
    assert steps(plan) == [
        *swaps(ALL),
        "gate talos after swap",
        "output talosconfig new",
        *removes(ALL),
        "gate talos after remove",
    ]


def test_accept_done_on_control_planes_only_accepts_on_the_workers() -> None:
    nodes = tuple(
        node(a, "controlplane", trust("old", "new")) for a in CPS
    ) + tuple(node(a, "worker", trust("old")) for a in WORKERS)
    plan = talos_plan(nodes)
    assert steps(plan)[:3] == [*accepts(WORKERS), "gate talos after accept"]
    assert steps(plan)[3:8] == swaps(ALL)


def test_accept_stopped_on_the_first_node_continues_with_the_others() -> None:
    nodes = cluster(trust("old"))
    nodes = (node(CPS[0], "controlplane", trust("old", "new")), *nodes[1:])
    assert steps(talos_plan(nodes))[:5] == [*accepts(ALL[1:]), "gate talos after accept"]


def test_swap_done_on_one_control_plane_swaps_the_rest() -> None:
    nodes = (
        node(CPS[0], "controlplane", trust("new", "old")),
        *(node(a, "controlplane", trust("old", "new")) for a in CPS[1:]),
        *(node(a, "worker", trust("old", "new")) for a in WORKERS),
    )
    plan = talos_plan(nodes)
    assert steps(plan) == [
        *swaps(ALL[1:]),
        "gate talos after swap",
        "output talosconfig new",
        *removes(ALL),
        "gate talos after remove",
    ]


def test_stopped_after_swap_only_removes() -> None:
    nodes = tuple(node(a, "controlplane", trust("new", "old")) for a in CPS) + tuple(
        node(a, "worker", trust("new", "old")) for a in WORKERS
    )
    plan = talos_plan(nodes)
    assert steps(plan) == ["output talosconfig new", *removes(ALL), "gate talos after remove"]


def test_remove_done_on_some_nodes_removes_on_the_others() -> None:
    done = {CPS[0], CPS[1]}
    nodes = tuple(
        node(a, "controlplane" if a in CPS else "worker", trust("new") if a in done else trust("new", "old"))
        for a in ALL
    )
    plan = talos_plan(nodes)
    rest = [a for a in ALL if a not in done]
    assert steps(plan) == ["output talosconfig new", *removes(rest), "gate talos after remove"]
    assert any("already in the desired state, skipped: 10.5.0.2, 10.5.0.3" in w.message for w in plan.warnings)


def test_finished_rotation_is_a_no_op() -> None:
    nodes = tuple(node(a, "controlplane" if a in CPS else "worker", trust("new")) for a in ALL)
    plan = talos_plan(nodes)
    assert plan.phases == ()
    assert not plan.has_changes
    assert [t.before for t in plan.targets] == [t.after for t in plan.targets]


def test_half_done_plan_ends_in_the_same_state_as_a_fresh_one() -> None:
    fresh = talos_plan(cluster(trust("old")))
    half = talos_plan(
        (node(CPS[0], "controlplane", trust("new", "old")), *cluster(trust("old", "new"))[1:])
    )
    assert [t.after for t in fresh.targets] == [t.after for t in half.targets]


# --- desired states that stop early -------------------------------------------------------------


def test_pre_stage_only_accepts_and_changes_nothing_else() -> None:
    plan = talos_plan(cluster(trust("old")), "new", issuer="old")
    # two gates: the current issuer still works, and a cert from the pre-staged CA is accepted everywhere
    gates = ["gate talos after accept", "gate talos after accept"]
    assert steps(plan) == [*accepts(ALL), *gates, "output talosconfig old"]
    assert [g.credential.issuer for g in plan.gates] == [fp("old"), fp("new")]
    assert all(t.after == LiveTrust(fp("old"), t.after.issuer_has_key, (fp("new"),)) for t in plan.targets)
    assert not any("stops being trusted" in w.message for w in plan.warnings)


def test_revoke_only_removes_the_dropped_ca_and_warns() -> None:
    plan = talos_plan(cluster(trust("new", "old", "x")), "x")
    assert steps(plan) == ["output talosconfig new", *removes(ALL), "gate talos after remove"]
    messages = [w.message for w in plan.warnings]
    assert any(m.startswith("old (") and "stops being trusted on every node" in m for m in messages)
    assert all(e.destructive for e in plan.edits)


def test_keeping_the_old_ca_accepted_swaps_without_removing() -> None:
    plan = talos_plan(cluster(trust("old")), "old")
    assert [p.name for p in plan.phases] == ["accept", "swap", "outputs"]
    assert all(t.after.accepted == (fp("old"),) for t in plan.targets)


def test_no_op_has_no_phases_and_no_outputs() -> None:
    plan = talos_plan(cluster(trust("old")), issuer="old")
    assert plan.phases == ()
    assert steps(plan) == []
    assert not plan.has_changes
    assert plan.new_authorities == ()


def test_an_unmanaged_pki_is_not_touched() -> None:
    plan = talos_plan(cluster(trust("old"), kube=trust("k-old")))
    assert {e.pki for e in plan.edits} == {"talos"}
    assert plan.managed == ("talos",)
    assert {g.pki for g in plan.gates} == {"talos"}


def test_a_ca_already_accepted_is_not_accepted_twice() -> None:
    plan = talos_plan(cluster(trust("old", "new")), "new")  # issuer new, accepted [new]: one CA
    assert [e.kind for e in plan.edits].count("accept") == 0


def test_new_authorities_are_those_no_node_trusted_before() -> None:
    plan = talos_plan(cluster(trust("old")))
    assert [a.name for a in plan.new_authorities] == ["new"]
    assert {a.name for a in plan.authorities} == {"old", "new"}  # k-old/k-new are not referenced


def test_expiring_authority_is_warned_about() -> None:
    auths = (authority("old"), authority("new", days=30), authority("k-old", "kubernetes"))
    plan = make_plan(plan_input(cluster(trust("old")), want("talos", "new"), authorities=auths))
    messages = [w.message for w in plan.warnings]
    assert f"new expires on {NOW + dt.timedelta(days=30):%Y-%m-%d}, within 90 days" in messages


def test_outputs_follow_the_desired_state() -> None:
    from trustplan.planner import Outputs

    inp = plan_input(cluster(trust("old")), want("talos", "new"), outputs=Outputs(secrets=True))
    assert "output secrets new" in steps(make_plan(inp))
    assert make_plan(inp).phases[-1].name == "remove"
    inp = dataclasses.replace(inp, outputs=Outputs())
    assert "outputs" not in [p.name for p in make_plan(inp).phases]


def test_a_refused_credential_is_rewritten_although_no_node_changes() -> None:
    """Issue 8: nodes already in the desired state, but the talosconfig on disk is refused (a run
    killed between remove and the outputs): the plan rewrites it instead of saying "No changes"."""
    from trustplan.planner import Outputs

    done = cluster(trust("new"))
    inp = plan_input(done, want("talos", "new"), outputs=Outputs(talosconfig=True, secrets=True))
    assert not make_plan(inp).has_changes  # every configured output works: nothing to do
    inp = dataclasses.replace(inp, outputs=Outputs(talosconfig=True, secrets=True, refresh=("talosconfig",)))
    plan = make_plan(inp)
    assert plan.has_changes and not plan.has_edits
    assert steps(plan) == ["output talosconfig new"]
    assert any("the configured talosconfig does not work against the live cluster" in w.message for w in plan.warnings)


def test_an_output_without_a_key_to_mint_it_is_refused() -> None:
    from trustplan.planner import Outputs, UnsafePlan

    outputs = Outputs(talosconfig=True, refresh=("talosconfig",))
    inp = plan_input(cluster(trust("new")), want("talos", "new"), outputs=outputs)
    keyless = tuple(dataclasses.replace(a, key_available=False) for a in inp.authorities)
    inp = dataclasses.replace(inp, authorities=keyless)
    with pytest.raises(UnsafePlan, match="cannot write the talosconfig output: no private key for new"):
        make_plan(inp)


def test_role_in_cluster_nodes_contradicting_machine_type_is_a_planning_error() -> None:
    nodes = cluster(trust("old"))
    nodes = (*nodes[:-1], dataclasses.replace(nodes[-1], declared_role="controlplane"))
    with pytest.raises(PlanningError) as exc:
        talos_plan(nodes)
    assert str(exc.value) == (
        "node 10.5.0.6 is listed under cluster.nodes.controlplane but its machine config says machine.type: worker"
    )


def test_matching_declared_roles_are_fine() -> None:
    nodes = tuple(dataclasses.replace(n, declared_role=n.role) for n in cluster(trust("old")))
    assert talos_plan(nodes).has_changes

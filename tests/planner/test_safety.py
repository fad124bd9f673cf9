"""The safety check refuses, with a reason naming the node and the rule, every plan that would lock
the operator out, leave a node without a trusted CA, strip a control plane's key or give a worker one.

Some unsafe plans cannot come out of make_plan (it never removes an issuer, for one); those are
built by editing a safe plan's phases and handed to check_plan directly, as a saved plan would be.
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers import authority, cluster, fp, node, plan_input, trust, want
from trustplan.planner import (
    AcceptCA,
    Credential,
    LiveNode,
    LiveTrust,
    Phase,
    Plan,
    RemoveCA,
    SwapIssuer,
    UnsafePlan,
    check_plan,
    make_plan,
)
from trustplan.planner.plan import NodeTarget, apply_edit

CP1, CP2, W1 = "10.5.0.2", "10.5.0.3", "10.5.0.5"


def _with_phases(plan: Plan, *phases: Phase) -> Plan:
    """`plan` with other phases, and targets recomputed so only the safety rules can object."""
    trust_now = {(t.node, t.pki): t.before for t in plan.targets}
    for p in phases:
        for e in p.edits:
            trust_now[(e.node, e.pki)] = apply_edit(trust_now[(e.node, e.pki)], e)
    targets = tuple(NodeTarget(t.node, t.role, t.pki, t.before, trust_now[(t.node, t.pki)]) for t in plan.targets)
    return dataclasses.replace(plan, phases=phases, targets=targets)


def _safe_talos_rotation(nodes: tuple[LiveNode, ...] | None = None):  # noqa: ANN202
    inp = plan_input(nodes or cluster(trust("old")), want("talos", "new"))
    return make_plan(inp), inp


def test_a_safe_rotation_passes() -> None:
    plan, inp = _safe_talos_rotation()
    check_plan(plan, inp)  # no exception


def test_operator_credential_not_trusted_by_the_nodes_is_refused() -> None:
    inp = plan_input(cluster(trust("old")), want("talos", "new"))
    inp = dataclasses.replace(inp, operator=Credential(fp("x"), (fp("old"),)))
    with pytest.raises(UnsafePlan) as exc:
        make_plan(inp)
    assert str(exc.value).startswith(f"accept phase, before changing {CP1}: endpoint {CP1} would refuse an admin ")
    assert "it trusts only [old]" in str(exc.value)


def test_operator_not_trusting_the_server_certificates_is_refused() -> None:
    inp = plan_input(cluster(trust("old")), want("talos", "new"))
    inp = dataclasses.replace(inp, operator=Credential(fp("old"), (fp("x"),)))
    with pytest.raises(UnsafePlan, match=rf"the client would refuse endpoint {CP1}'s server certificate"):
        make_plan(inp)


def test_operator_whose_ca_the_plan_removes_is_still_fine_because_later_phases_use_the_new_cert() -> None:
    inp = plan_input(cluster(trust("old")), want("talos", "new"))
    inp = dataclasses.replace(inp, operator=Credential(fp("old"), (fp("old"),)))
    plan = make_plan(inp)
    assert plan.phases[0].credential is not None and plan.phases[0].credential.issuer == fp("old")
    assert plan.phases[1].credential is not None and plan.phases[1].credential.issuer == fp("new")


def test_swapping_before_every_node_accepts_locks_the_new_credential_out() -> None:
    plan, inp = _safe_talos_rotation()
    swap = next(p for p in plan.phases if p.name == "swap")
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, swap), inp)
    assert str(exc.value) == (
        f"swap phase, before changing {CP1}: endpoint {CP1} would refuse an admin certificate from new: "
        "it trusts only [old]"
    )


def test_a_worker_that_does_not_trust_the_new_issuer_cannot_get_its_certificate() -> None:
    plan, inp = _safe_talos_rotation()
    accept = next(p for p in plan.phases if p.name == "accept")
    cps_only = dataclasses.replace(accept, edits=tuple(e for e in accept.edits if e.role == "controlplane"))
    swap = next(p for p in plan.phases if p.name == "swap")
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, cps_only, swap), inp)
    assert str(exc.value) == (
        f"swap phase, before changing {W1}: node {W1} would refuse the proxy certificate of endpoint {CP1} "
        "(issued by new); it trusts only [old]"
    )


def test_removing_the_issuer_is_refused() -> None:
    plan, inp = _safe_talos_rotation(cluster(trust("old", "new")))
    remove = Phase("remove", (RemoveCA(CP1, "controlplane", "talos", fp("old")),), (), None)
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, remove), inp)
    assert str(exc.value) == f"removing old from {CP1} would remove its issuing CA"


def test_a_node_left_without_any_trusted_ca_is_refused() -> None:
    nodes = (*cluster(trust("old"))[:-1], LiveNode("10.5.0.6", "worker", "sha256:w", LiveTrust(None, False,
                                                   (fp("old"),)), trust("k-old")))
    plan, inp = _safe_talos_rotation(nodes)
    remove = Phase("remove", (RemoveCA("10.5.0.6", "worker", "talos", fp("old")),), (), None)
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, remove), inp)
    assert str(exc.value) == "node 10.5.0.6 would be left without any trusted Talos API CA"


def test_control_plane_issuer_without_a_key_is_refused() -> None:
    """The desired issuer is a CA live on the nodes (accepted), but nobody has its key."""
    auths = (authority("old"), authority("new", key=False, source="live"), authority("k-old", "kubernetes"))
    inp = plan_input(cluster(trust("old", "new")), want("talos", "new"), authorities=auths)
    with pytest.raises(UnsafePlan) as exc:
        make_plan(inp)
    assert str(exc.value) == (
        f"control plane {CP1} would have machine.ca = new without its private key "
        "(no key for it in the keystore, the import or any control plane's config)"
    )


def test_output_without_a_key_is_refused() -> None:
    """Pre-staging keeps the keyless live issuer, but a talosconfig cannot be minted from it."""
    auths = (authority("old", key=False, source="live"), authority("new"), authority("k-old", "kubernetes"))
    nodes = cluster(trust("old", key=True))
    inp = plan_input(nodes, want("talos", "old", "new"), authorities=auths)
    with pytest.raises(UnsafePlan, match="cannot write the talosconfig output: no private key for old"):
        make_plan(inp)


def test_worker_with_a_key_in_its_live_config_is_refused() -> None:
    worker = LiveNode(W1, "worker", "sha256:w", LiveTrust(fp("old"), True, ()), trust("k-old"))
    nodes = tuple(n if n.address != W1 else worker for n in cluster(trust("old")))
    with pytest.raises(UnsafePlan) as exc:
        _safe_talos_rotation(nodes)
    assert str(exc.value) == (
        f"worker {W1} holds the machine.ca private key in its live config; fix the config before rotating"
    )


def test_a_plan_that_would_give_a_worker_the_key_is_refused() -> None:
    plan, inp = _safe_talos_rotation()
    phases = []
    for p in plan.phases:
        if p.name == "swap":  # a forged edit: the worker's swap carries the key like a control plane's
            p = dataclasses.replace(p, edits=tuple(
                SwapIssuer(e.node, "controlplane", e.pki, e.new, e.old) if isinstance(e, SwapIssuer)
                and e.node == W1 else e for e in p.edits
            ))
        phases.append(p)
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, *phases), inp)
    assert str(exc.value) == f"worker {W1} would hold the machine.ca private key; workers must not"


def test_kubelets_must_trust_the_new_apiserver_ca_before_control_planes_swap() -> None:
    inp = plan_input(cluster(trust("old"), kube=trust("k-old")), want("kubernetes", "k-new"))
    plan = make_plan(inp)
    accept = next(p for p in plan.phases if p.name == "accept")
    cps_only = dataclasses.replace(accept, edits=tuple(e for e in accept.edits if e.role == "controlplane"))
    swap = next(p for p in plan.phases if p.name == "swap")
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, cps_only, swap), inp)
    assert str(exc.value) == "the kubelet on 10.5.0.5 would not trust the kube-apiserver certificate issued by [k-new]"


def test_kubernetes_gate_fails_when_the_apiservers_do_not_trust_the_new_client_ca() -> None:
    inp = plan_input(cluster(trust("old"), kube=trust("k-old")), want("kubernetes", "k-new"))
    plan = make_plan(inp)
    accept = next(p for p in plan.phases if p.name == "accept")
    workers_only = dataclasses.replace(accept, edits=tuple(e for e in accept.edits if e.role == "worker"))
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, workers_only), inp)
    assert str(exc.value).startswith(
        f"gate after accept (Kubernetes API): the kube-apiserver on {CP1} would refuse an admin certificate from k-new"
    )


def test_control_plane_whose_live_config_lost_its_key_gets_it_back_from_the_keystore() -> None:
    nodes = cluster(trust("old", "new"))
    cp = LiveNode(CP2, "controlplane", "sha256:cp2", LiveTrust(fp("new"), False, (fp("old"),)), trust("k-old"))
    plan, _ = _safe_talos_rotation(tuple(cp if n.address == CP2 else n for n in nodes))
    restore = [e for e in plan.edits if e.node == CP2 and e.kind == "swap"]
    assert restore == [SwapIssuer(CP2, "controlplane", "talos", fp("new"), fp("new"))]
    target = next(t for t in plan.targets if t.node == CP2)
    assert target.after.issuer_has_key


def test_control_plane_whose_live_config_lost_a_key_nobody_has_is_refused() -> None:
    nodes = cluster(trust("old", "new"))
    cp = LiveNode(CP2, "controlplane", "sha256:cp2", LiveTrust(fp("new"), False, (fp("old"),)), trust("k-old"))
    inp = plan_input(tuple(cp if n.address == CP2 else n for n in nodes), want("talos", "new"),
                     authorities=(authority("old"), authority("new", key=False), authority("k-old", "kubernetes")))
    with pytest.raises(UnsafePlan, match="would have machine.ca = new without its private key"):
        make_plan(inp)


def test_accept_edits_alone_are_safe_from_any_order() -> None:
    plan, inp = _safe_talos_rotation()
    accept = next(p for p in plan.phases if p.name == "accept")
    reordered = dataclasses.replace(accept, edits=tuple(reversed(accept.edits)))
    check_plan(_with_phases(plan, reordered), inp)
    assert all(isinstance(e, AcceptCA) for e in reordered.edits)


def test_a_plan_that_does_not_end_where_it_says_is_refused() -> None:
    plan, inp = _safe_talos_rotation()
    broken = dataclasses.replace(plan, phases=plan.phases[:1])  # targets still say "rotated"
    with pytest.raises(UnsafePlan, match="does not end in the planned state"):
        check_plan(broken, inp)


def test_node_helper_keeps_workers_keyless() -> None:
    assert not node(W1, "worker", trust("old")).talos.issuer_has_key


def test_a_refused_half_done_state_names_the_ca_to_keep_accepted() -> None:
    """Issue 8: control planes issue from old and accept new, the worker already has new only (a
    hand edit, or another tool stopped halfway). Dropping old would strand the worker's server
    certificate; keeping old accepted for this rotation is safe, and the planner says so."""
    from trustplan.planner import suggest_accepted

    nodes = (
        node("10.5.0.2", "controlplane", trust("old", "new")),
        node("10.5.0.3", "controlplane", trust("old", "new")),
        node("10.5.0.4", "worker", trust("new")),
    )
    inp = plan_input(nodes, want("talos", "new"))
    with pytest.raises(UnsafePlan, match="would refuse node 10.5.0.4's server certificate"):
        make_plan(inp)
    assert suggest_accepted(inp) == ("talos", fp("old"))
    assert make_plan(plan_input(nodes, want("talos", "new", "old"))).has_changes


def test_no_suggestion_when_no_single_ca_helps() -> None:
    from trustplan.planner import suggest_accepted

    nodes = (node("10.5.0.2", "controlplane", trust("old", key=False)),)  # no key anywhere for old or new
    keyless = (authority("old", key=False), authority("new", key=False))
    inp = plan_input(nodes, want("talos", "new"), authorities=keyless)
    assert suggest_accepted(inp) is None


def test_a_worker_probed_to_accept_the_new_ca_overrides_the_guess_from_the_control_planes() -> None:
    """talosctl died in accept after every node took `new`, then cp 10.5.0.4 was reverted by hand:
    the guess (what every control plane trusts now) says the workers refuse `new`; probed, they do not."""
    half = [node(f"10.5.0.{2 + i}", "controlplane", trust("old", "new")) for i in range(2)]
    half += [node("10.5.0.4", "controlplane", trust("old"))]
    workers = [node(f"10.5.0.{5 + i}", "worker", trust("old", "new")) for i in range(2)]
    guessed = plan_input(tuple(half + workers), want("talos", "new"))
    with pytest.raises(UnsafePlan, match="would refuse the proxy certificate"):
        make_plan(guessed)
    probed = tuple(dataclasses.replace(w, probed_accepts=(fp("old"), fp("new"))) for w in workers)
    plan = make_plan(dataclasses.replace(guessed, nodes=tuple(half) + probed))
    assert plan.has_edits
    stale = tuple(dataclasses.replace(w, probed_accepts=(fp("old"),), probed_refuses=(fp("new"),)) for w in workers)
    # issue 20, finding 11: workers probed lagging are recertified in the accept phase (after the
    # control planes accept the new CA), which makes the plan safe
    lagging = make_plan(dataclasses.replace(guessed, nodes=tuple(half) + stale))
    accept = next(p for p in lagging.phases if p.name == "accept")
    assert accept.recertify == ("10.5.0.5", "10.5.0.6")
    # without that step the same plan is refused: the worker would refuse the proxy certificate
    bare = dataclasses.replace(lagging, phases=tuple(dataclasses.replace(p, recertify=()) for p in lagging.phases))
    with pytest.raises(UnsafePlan, match="10.5.0.5 would refuse the proxy certificate"):
        check_plan(bare, dataclasses.replace(guessed, nodes=tuple(half) + stale))


def test_every_mix_of_confirmed_and_reverted_writes_of_a_phase_is_proven_safe() -> None:
    """Issue 20, the dead-man switch: a phase's try-mode writes are confirmed only after its gates, so a
    stop leaves any mix of its nodes before and after it. A phase that is safe in the order it is
    written (control planes swap the Kubernetes CA, then workers swap and drop the old one) but not in
    every mix (a control plane reverted to the old issuer, a worker confirmed trusting only the new
    one) is refused."""
    kube_half = trust("k-old", "k-new")
    inp = plan_input(cluster(trust("old"), kube=kube_half), want("kubernetes", "k-new"))
    plan = make_plan(inp)
    swap = next(p for p in plan.phases if p.name == "swap")
    remove = next(p for p in plan.phases if p.name == "remove")
    workers_remove = tuple(e for e in remove.edits if e.role == "worker")
    hurried = dataclasses.replace(swap, edits=swap.edits + workers_remove)
    rest = dataclasses.replace(remove, edits=tuple(e for e in remove.edits if e.role != "worker"))
    with pytest.raises(UnsafePlan) as exc:
        check_plan(_with_phases(plan, hurried, rest), inp)
    assert str(exc.value).startswith("swap phase: with some of its writes confirmed and the others reverted")
    assert "may not trust the kube-apiserver certificate issued by [k-old]" in str(exc.value)
    check_plan(plan, inp)  # the plan as made: every mix safe


# --- a plan over workers only (no control plane in the plan: e.g. the files of two workers) -------------
WORKERS_ONLY = cluster(trust("old"), n_cp=0, n_w=2)
W_A = WORKERS_ONLY[0].address


def test_a_workers_only_rotation_passes_when_each_worker_trusts_the_credential() -> None:
    plan = make_plan(plan_input(WORKERS_ONLY, want("talos", "new")))
    assert [p.name for p in plan.phases] == ["accept", "swap", "outputs", "remove"]


def test_a_workers_only_plan_refuses_a_credential_the_worker_would_refuse() -> None:
    inp = plan_input(WORKERS_ONLY, want("talos", "new"))
    inp = dataclasses.replace(inp, operator=Credential(fp("x"), (fp("old"),)))
    with pytest.raises(UnsafePlan) as exc:
        make_plan(inp)
    assert f"node {W_A} would refuse an admin certificate from " in str(exc.value)
    assert str(exc.value).endswith("it trusts only [old]")


def test_a_workers_only_plan_refuses_a_credential_that_would_refuse_the_worker() -> None:
    inp = plan_input(WORKERS_ONLY, want("talos", "new"))
    inp = dataclasses.replace(inp, operator=Credential(fp("old"), (fp("x"),)))
    with pytest.raises(UnsafePlan) as exc:
        make_plan(inp)
    assert str(exc.value).endswith(f"the client would refuse node {W_A}'s server certificate")

"""A rollback of a phase that changed a control-plane-only kind (aggregator, service-account,
encryption) finds the state before the apply on the control planes alone: a worker holds nothing of
these kinds, and that is no reason to refuse the rollback (issue 22, the fault handling)."""

from __future__ import annotations

from trustplan.planner.model import NO_TRUST, DesiredTrust, LiveNode, LiveTrust

from trustplan.engine.live import LiveCluster
from trustplan.engine.rollback import _original


def test_the_state_before_is_read_on_the_nodes_that_hold_the_kind() -> None:
    ca = LiveTrust("sha256:" + "1" * 64, True, ())
    key = LiveTrust("sha256:" + "2" * 64, True, ())
    cps = [LiveNode(a, "controlplane", "d", ca, ca, others=(("serviceaccount", key),)) for a in ("cp1", "cp2")]
    worker = LiveNode("w1", "worker", "d", ca, ca)
    assert worker.trust("serviceaccount") == NO_TRUST
    started = LiveCluster((*cps, worker), {}, {}, {})
    assert _original(started, ("talos", "serviceaccount")) == (
        DesiredTrust("talos", ca.issuer or "", ()),
        DesiredTrust("serviceaccount", key.issuer or "", ()),
    )
    other = LiveNode("cp3", "controlplane", "d", ca, ca, others=(("serviceaccount", LiveTrust("sha256:" + "3" * 64,
                                                                                              True, ())),))
    refused = _original(LiveCluster((*cps, other, worker), {}, {}, {}), ("serviceaccount",))
    assert refused == "no rollback: the nodes did not share one serviceaccount CA state before this apply"

"""Through the Talos API (the simulator): a re-digested plan that adds a foreign CA to every node, or
drops the gates, is refused before any node is touched; the untouched plan then applies."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan_sim.cluster import SimCluster

from trustplan.engine import applier
from trustplan.engine import planning as engine
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import PlanFileError
from trustplan.formats import desired as desired_mod
from trustplan.formats import planfile
from trustplan.talos import certgen, pki


def test_tampered_plans_are_refused_over_the_talos_api_and_no_node_changes(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        desired = desired_mod.load(cluster.dir / "trustplan.yaml")
        planned = await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        planned.save_new_keys()
        original = json.loads(planned.saved.document)
        before = {n.name: n.config for n in cluster.nodes}

        foreign_cert, _ = certgen.generate_ca("talos", pki.utcnow())
        foreign = pki.CACert.from_cert(foreign_cert)
        evil = copy.deepcopy(original)
        evil["authorities"].append({
            "fingerprint": foreign.fingerprint, "name": None, "pki": "talos", "source": "live",
            "subject": foreign.subject, "algorithm": foreign.algorithm,
            "not_before": foreign.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": foreign.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "certificate": foreign.pem.decode(), "key_available": False,
        })
        accept = next(p for p in evil["phases"] if p["name"] == "accept")
        for node in evil["nodes"]:
            accept["edits"].append({"kind": "accept", "node": node["address"], "role": node["role"],
                                    "pki": "talos", "ca": foreign.fingerprint, "destructive": False})
        no_gates = copy.deepcopy(original)
        for phase in no_gates["phases"]:
            phase["gates"] = []

        for doc, expected in ((evil, "names CAs that neither"), (no_gates, "gates dropped")):
            data = planfile.encode_document(doc)
            decoded = planfile.decode(data, "evil.bin")
            with pytest.raises(PlanFileError, match=expected):
                await applier.apply_desired(
                    ApplyRequest(desired, decoded, planfile.plan_digest(data), "evil.bin", pki.utcnow())
                )
            assert {n.name: n.config for n in cluster.nodes} == before

        data = planfile.encode(planned.saved)
        decoded = planfile.decode(data, "plan.bin")
        applied = await applier.apply_desired(
            ApplyRequest(desired, decoded, planfile.plan_digest(data), "plan.bin", pki.utcnow())
        )
        assert applied.state.serial == 1
        assert all(n.config != before[n.name] for n in cluster.nodes)

    run_with_cluster(scenario, tmp_path, controlplanes=2, workers=1)

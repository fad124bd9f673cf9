"""Issue 22: the fault matrix for the phases of the aggregator CA, service-account key and encryption
key (with the Talos API and Kubernetes API CAs, one plan), on machine configs talosctl v1.12.1 wrote
for a Talos v1.14.1 install: a write to the second control plane fails once (move), or is done and
its reply lost (accept, swap, remove), as the phase starts. Whatever the apply then does (pass,
stop, roll back), a new plan + apply finishes the rotation, and the state, the configs on disk and
the desired state agree.

The simulator's Kubernetes API answers no service-account or aggregator gate, so these faults are
injected in the files provider (machine-config files) the same way the simulator injects them
(`apply_error`, `die_on_apply` in tests/faults/test_fault_matrix.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from e2e.test_kubernetes_rotation import Notes
from faults.test_kill_kinds import agree, cluster, desired
from trustplan.providers.files import FilesProvider

from trustplan.engine import applier, planning
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import ProviderError, TrustplanError
from trustplan.formats import desired as desired_mod
from trustplan.talos import pki

SECOND_CP = "10.5.0.3"


class Faulty:
    """Arms one fault on the second control plane's next write once `phase` starts patching."""

    def __init__(self, phase: str, fault: str) -> None:
        self.phase, self.fault = phase, fault
        self.armed = self.fired = False

    async def write(self, original: Any, provider: FilesProvider, node: Any, data: bytes, **kw: Any) -> str:
        if not (self.armed and not self.fired and node.address == SECOND_CP and not kw.get("dry_run")):
            return str(await original(provider, node, data, **kw))
        self.fired = True
        if self.fault == "apply-error":
            raise ProviderError(f"{node.address}: injected failure")
        await original(provider, node, data, **kw)  # dropped reply: written, the answer lost
        raise ProviderError(f"{node.address}: connection reset (injected: the reply was lost)")


class Inject(Notes):
    def __init__(self, faulty: Faulty) -> None:
        super().__init__()
        self.faulty = faulty

    def start(self, title: str, total: int) -> None:
        super().start(title, total)
        if title.startswith(f"{self.faulty.phase}: patching"):
            self.faulty.armed = True


async def plan_apply(root: Path, reporter: Notes | None = None) -> str:
    d = desired_mod.load(root / "trustplan.yaml")
    planned = await planning.plan_desired(d, pki.utcnow(), dt.timedelta(hours=1))
    planned.save_new_keys()
    try:
        await applier.apply_desired(ApplyRequest(d, planned.saved, "sha256:" + "6" * 64, "plan", pki.utcnow()),
                                    reporter=reporter)
    except TrustplanError as exc:
        return ("rolled back" if "rolled back:" in str(exc) else "stopped") + f" ({str(exc)[:200]})"
    return "applied"


@pytest.mark.faults
@pytest.mark.parametrize(
    "fault,phase",
    # a refused write in the move (rolled back), a lost reply in each phase of the rotation (finished
    # by the next plan); kept to four cases for the time of make test-faults
    [("apply-error", "move")] + [("dropped-reply", p) for p in ("accept", "swap", "remove")],
)
def test_fault_in_a_phase_of_the_kubernetes_credentials_is_finished_by_the_next_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, phase: str
) -> None:
    root = cluster(tmp_path)
    (root / "trustplan.yaml").write_text(desired(1).replace("drain: 1s", "drain: 0s"))
    faulty = Faulty(phase, fault)
    original = FilesProvider.write

    async def write(self: FilesProvider, node: Any, data: bytes, **kw: Any) -> str:
        return await faulty.write(original, self, node, data, **kw)

    monkeypatch.setattr(FilesProvider, "write", write)
    outcome = asyncio.run(plan_apply(root, Inject(faulty)))
    assert faulty.fired, (phase, fault, outcome)
    monkeypatch.setattr(FilesProvider, "write", original)
    assert asyncio.run(plan_apply(root)) == "applied"  # a new plan finishes the job
    agree(root, 1, f"{fault} at {phase} ({outcome})")
    print(f"{fault} at {phase}: {outcome}")

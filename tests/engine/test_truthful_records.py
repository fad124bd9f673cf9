"""What apply tells the operator is true (issue 20, findings 6 and 10), on the in-memory provider:
after an interrupt the summary names the writes that landed (a write applied before its kubelet
wait was cut short is one); the rollback lines never contradict each other; a state write that
fails (a full disk) leaves a rescue file and a message that says what changed on which node and
whether a rollback ran."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_runner import DIGEST, _cluster, _plan
from trustplan.providers.base import Capabilities, NodeRef, TLSIdentity
from trustplan.providers.memory import MemoryProvider
from trustplan.state import LocalState
from trustplan.state import local as local_state

from trustplan.engine import applier
from trustplan.engine.applier import ApplyRequest
from trustplan.errors import ApplyInterrupted, FilesystemError, ProviderError, StateError
from trustplan.formats.keystore import Keystore
from trustplan.talos import pki


class Notes:
    """A reporter that keeps its notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, title: str, total: int) -> None: ...
    def begin(self, detail: str) -> None: ...
    def advance(self, detail: str = "") -> None: ...
    def fail(self, detail: str) -> None: ...
    def done(self) -> None: ...

    def note(self, message: str) -> None:
        self.notes.append(message)


class InterruptedKubelet:
    """A kubelet watch during which the operator presses Ctrl-C (SIGINT to this process)."""

    @contextlib.asynccontextmanager
    async def kubelet_restart(
        self, node: NodeRef, credential: TLSIdentity | None, timeout: float
    ) -> AsyncIterator[Any]:
        yield self

    async def wait(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()  # until the stop cancels it


class WithKubelet(MemoryProvider):
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(needs_credential=False, dry_run=True, kubernetes_api=False, endpoints=False,
                            kubelet=InterruptedKubelet())


def test_after_an_interrupt_the_summary_names_the_writes_that_landed(tmp_path: Path) -> None:
    """SIGINT while the first control plane's kubelet restarts: its config was applied, so the summary
    and the state say it changed (main said "no node changed" and recorded the write as failed)."""
    desired, memory = _cluster(tmp_path)
    planned = _plan(desired, memory)
    before = dict(memory.configs)
    provider = WithKubelet(memory.configs)
    with pytest.raises(ApplyInterrupted) as raised:
        asyncio.run(applier.apply(ApplyRequest(desired, planned.saved, DIGEST, "plan.bin", pki.utcnow()),
                                  provider, Keystore(desired.keystore), LocalState(desired.state)))
    changed = sorted(a for a in before if provider.configs[a] != before[a])
    assert changed  # the write landed
    assert f"accept on {len(changed)} nodes ({', '.join(changed)})" in str(raised.value)
    assert "no node changed" not in str(raised.value)
    last = LocalState(desired.state).read("demo").history[-1]
    writes = {s.node: s.outcome for s in last.steps if s.kind == "write"}
    assert {a for a, outcome in writes.items() if outcome == "ok"} == set(changed)


def test_a_failure_after_the_outputs_does_not_announce_a_rollback(tmp_path: Path) -> None:
    """A write of the remove phase fails: the outputs are written, so there is no rollback, and no line
    says one is starting (main printed "rolling back", then "no rollback: ... already written")."""
    desired, memory = _cluster(tmp_path)
    planned = _plan(desired, memory)

    class FailsInRemove(MemoryProvider):
        async def write(self, node, data, *, credential=None, dry_run=False):  # type: ignore[no-untyped-def]
            if not dry_run and sum(1 for w in self.writes if not w.dry_run) == 11:  # remove's 2nd node
                raise ProviderError(f"{node.address}: connection refused")
            return await super().write(node, data, credential=credential, dry_run=dry_run)

    notes = Notes()
    with pytest.raises(ProviderError) as raised:
        asyncio.run(applier.apply(ApplyRequest(desired, planned.saved, DIGEST, "plan.bin", pki.utcnow()),
                                  FailsInRemove(memory.configs), Keystore(desired.keystore), LocalState(desired.state),
                                  notes))
    assert "no rollback: the new credentials were already written" in str(raised.value)
    assert not [n for n in notes.notes if "rolling back" in n], notes.notes


def test_a_state_write_on_a_full_disk_leaves_a_rescue_and_says_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node changed, the next write failed, the rollback failed (the same full disk), and the state
    could not be written (ENOSPC), as in the review: the message says which node changed, that the
    rollback ran and failed, and where the rescue file is; the rescue holds the journal."""
    desired, memory = _cluster(tmp_path)
    planned = _plan(desired, memory)

    class FailsSecond(MemoryProvider):
        async def write(self, node, data, *, credential=None, dry_run=False):  # type: ignore[no-untyped-def]
            if not dry_run and sum(1 for w in self.writes if not w.dry_run) == 1:
                raise ProviderError(f"{node.address}: No space left on device")
            return await super().write(node, data, credential=credential, dry_run=dry_run)

    real = local_state.write_atomic

    def full(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path == desired.state:
            raise FilesystemError(f"{path}: cannot write: No space left on device")
        real(path, data, mode=mode)

    monkeypatch.setattr(local_state, "write_atomic", full)
    with pytest.raises(StateError) as raised:
        asyncio.run(applier.apply(ApplyRequest(desired, planned.saved, DIGEST, "plan.bin", pki.utcnow()),
                                  FailsSecond(memory.configs), Keystore(desired.keystore), LocalState(desired.state)))
    message = str(raised.value)
    rescue = desired.state.with_name("trustplan.state.rescue.1.json")
    assert "the state was not written: cannot write: No space left on device" in message
    assert f"saved to {rescue}" in message
    assert "this apply failed (" in message and "No space left on device" in message
    assert "accept on 1 nodes (10.5.0.2)" in message  # what changed, on which node
    assert "rollback failed: 10.5.0.2: No space left on device" in message  # whether the rollback ran
    assert "10.5.0.2: changed by this apply, not returned" in message
    journal = json.loads(rescue.read_text())["history"][-1]
    assert any(s["phase"].startswith("rollback") for s in journal["steps"])

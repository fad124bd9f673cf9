"""The local state: a lock another process can hold (and is named when it does), atomic writes,
a backup of the previous serial, and clear errors for a state that cannot be used."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import trustplan.state as state_pkg
from conftest import CliResult, snapshot
from trustplan.state import LocalState, empty_state
from trustplan.state.local import LOCK_POLL
from waiting import FakeClock

from trustplan.errors import FilesystemError, StateError
from trustplan.system.atomic import write_atomic

HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from trustplan.state import LocalState
    with LocalState(Path(sys.argv[1])).lock(0, "apply"):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def hold_lock(state: Path) -> subprocess.Popen[str]:
    """Another process that holds the state lock (returns once it holds it) until release()."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def release(holder: subprocess.Popen[str]) -> None:
    """Let the holder go, and wait until it has: the lock is free when this returns."""
    holder.communicate("\n", timeout=30)
    assert holder.returncode == 0


@pytest.fixture
def planned(example: Path, cli) -> Path:  # noqa: ANN001
    assert cli("plan", "-o", "plan.bin").code == 0
    return example


def test_apply_fails_naming_who_holds_the_lock_and_changes_nothing(planned: Path, cli) -> None:  # noqa: ANN001
    holder = hold_lock(planned / "trustplan.state.json")
    try:
        before = snapshot(planned)
        result = cli("apply", "plan.bin")
        after = snapshot(planned)
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 1
    assert result.err.startswith("Error: trustplan.state.json: state is locked by ")
    assert f"(pid {holder.pid}, apply since " in result.err
    assert "--lock-timeout" in result.err  # the hint says how to wait
    before.pop("trustplan.state.json.lock")
    after.pop("trustplan.state.json.lock")
    assert after == before


def test_apply_with_lock_timeout_waits_for_the_holder(
    planned: Path, cli, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """The apply finds the lock held, waits, and goes on once the holder lets go. The holder is let
    go only once the apply is seen waiting (its first wait between two tries of the lock)."""
    waiting, released = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()
        assert released.wait(60), "the holder was never released"

    monkeypatch.setattr(state_pkg, "LocalState", functools.partial(LocalState, sleep=sleep))
    holder = hold_lock(planned / "trustplan.state.json")
    result: list[CliResult] = []

    def run_apply() -> None:
        result.append(cli("apply", "plan.bin", "--lock-timeout", "20s"))
        waiting.set()  # an apply that did not wait ends here: the assertion below shows how it ended

    apply = threading.Thread(target=run_apply)
    try:
        apply.start()
        assert waiting.wait(60), "the apply neither waited for the lock nor ended"
        assert not result, result  # it is waiting: the other process holds the lock
        release(holder)
    finally:
        released.set()
        apply.join(120)
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert result and result[0].code == 0, result
    assert "Apply complete" in result[0].out
    assert json.loads((planned / "trustplan.state.json").read_text())["serial"] == 1


def test_lock_times_out_after_the_given_time(tmp_path: Path) -> None:
    """Held by another process, lock(0.5) tries again every LOCK_POLL seconds (virtual ones here)
    and gives up once 0.5 s have passed, naming the holder."""
    holder = hold_lock(tmp_path / "s.json")
    clock = FakeClock()
    try:
        with (
            pytest.raises(StateError, match=rf"state is locked by .*\(pid {holder.pid}, apply since"),
            LocalState(tmp_path / "s.json", clock=clock, sleep=clock.sleep).lock(0.5, "apply"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert clock.sleeps and set(clock.sleeps) == {LOCK_POLL}
    assert 0.5 <= clock.now < 0.5 + LOCK_POLL  # gave up at the first try after the timeout


def test_lock_timeout_zero_fails_at_once(tmp_path: Path) -> None:
    holder = hold_lock(tmp_path / "s.json")
    clock = FakeClock()
    try:
        with (
            pytest.raises(StateError, match="state is locked by"),
            LocalState(tmp_path / "s.json", clock=clock, sleep=clock.sleep).lock(0, "apply"),
        ):
            pass
    finally:
        release(holder)
    assert clock.sleeps == []
    with LocalState(tmp_path / "s.json", clock=clock, sleep=clock.sleep).lock(0, "apply"):  # free again
        pass


def test_the_lock_is_released_and_its_file_removed(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "s.json")
    with store.lock(0, "apply"):
        info = json.loads(store.lock_path.read_text())
        assert info["pid"] == os.getpid() and info["operation"] == "apply"
    assert not store.lock_path.exists()  # no lock file left behind (issue 20, finding 12)
    with store.lock(0, "plan"):  # free again
        pass


def test_write_keeps_the_previous_serial_as_a_backup(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "s.json")
    assert store.read("demo") == empty_state("demo")
    first = dataclasses.replace(empty_state("demo"), lineage="l", serial=1)
    second = dataclasses.replace(first, serial=2)
    store.write(first)
    assert not store.backup_path.exists()
    store.write(second)
    assert store.read("demo").serial == 2
    assert json.loads(store.backup_path.read_text())["serial"] == 1


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "s.json"
    target.write_bytes(b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(FilesystemError, match=r"s\.json: cannot write: No space left on device"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_atomic_write_sets_the_mode(tmp_path: Path) -> None:
    write_atomic(tmp_path / "k", b"x", mode=0o600)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k").read_bytes() == b"x"


def test_state_of_another_cluster_is_refused(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "s.json")
    store.write(dataclasses.replace(empty_state("prod"), lineage="l", serial=1))
    with pytest.raises(StateError, match=r"s\.json: this state belongs to cluster 'prod', not 'demo'"):
        store.read("demo")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "state file is not valid JSON"),
        (b'{"version": 1}', "(top level): 'lineage' is a required property (schemas/state.schema.json)"),
    ],
)
def test_unusable_state_file_is_one_clear_error(planned: Path, cli, content: bytes, message: str) -> None:  # noqa: ANN001
    (planned / "trustplan.state.json").write_bytes(content)
    before = snapshot(planned)
    result = cli("apply", "plan.bin")
    assert result.code == 1
    assert result.err.startswith("Error: trustplan.state.json: ")
    assert message in result.err
    assert snapshot(planned) == before


def test_an_interrupted_apply_still_records_what_it_did(tmp_path: Path) -> None:
    """Ctrl-C halfway: the state says which writes happened, and the apply is marked interrupted."""
    import asyncio
    import datetime as dt
    import shutil

    from trustplan.providers.memory import MemoryProvider
    from trustplan.state import LocalState

    from trustplan.engine import applier
    from trustplan.engine import planning as engine
    from trustplan.engine.applier import ApplyRequest
    from trustplan.formats import desired as desired_mod
    from trustplan.formats.keystore import Keystore
    from trustplan.talos import pki

    work = tmp_path / "files"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "files", work)
    desired = desired_mod.load(work / "trustplan.yaml")
    keystore, store = Keystore(desired.keystore), LocalState(desired.state)

    class Interrupted(MemoryProvider):  # the nodes in memory; Ctrl-C at the 7th write (the swap phase)
        async def write(self, node, data, *, credential=None, dry_run=False):  # type: ignore[no-untyped-def]
            if not dry_run and sum(1 for w in self.writes if not w.dry_run) == 6:
                raise KeyboardInterrupt
            return await super().write(node, data, credential=credential, dry_run=dry_run)

    async def go() -> None:
        provider = Interrupted({a: p.read_bytes() for a, p in desired.machine_configs.items()})
        planned = await engine.plan_live(
            desired, provider, keystore, store.read("demo"), pki.utcnow(), dt.timedelta(hours=1)
        )
        planned.resolved.save_new(keystore)
        await applier.apply(
            ApplyRequest(desired, planned.saved, "sha256:" + "2" * 64, "plan.bin", pki.utcnow()),
            provider, keystore, store,
        )

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(go())
    state = store.read("demo")
    last = state.history[-1]
    assert last.status == "failed" and last.error == "interrupted"
    assert sum(1 for s in last.steps if s.ok("write")) == 6


def test_a_temp_file_left_by_a_killed_write_is_removed_by_the_next_write(tmp_path: Path) -> None:

    stale = tmp_path / ".talosconfig.abc123.tmp"  # what write_atomic's mkstemp names look like
    stale.write_bytes(b"key: LS0tLS1CRUdJTiBFRDI1NTE5IFBSSVZBVEUgS0VZLS0tLS0K")
    young = tmp_path / ".talosconfig.def456.tmp"  # a write in progress elsewhere
    young.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    write_atomic(tmp_path / "talosconfig", b"new", mode=0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".talosconfig.def456.tmp", "talosconfig"]

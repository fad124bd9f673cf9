"""The local state keeps its record whatever happens around it (issue 20): a symlinked state is
written through to its target with the lock and the backup beside the target; a write that fails
(a full disk) leaves a rescue file and says where; a lock holder whose process is gone is named as
gone; the lock file exists only while held."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest
from trustplan.state import Holder, LocalState, StateDocument, empty_state
from trustplan.state import local as local_state

from trustplan.errors import FilesystemError, StateError


def doc(serial: int) -> StateDocument:
    return dataclasses.replace(empty_state("demo"), lineage="lin", serial=serial)


def test_a_symlinked_state_is_written_through_to_its_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "trustplan.state.json"
    shared.parent.mkdir()
    link = tmp_path / "copy" / "trustplan.state.json"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "shared" / "trustplan.state.json")
    store = LocalState(link)
    assert store.read("demo") == empty_state("demo")  # a link to a state not written yet
    with store.lock(0, "apply"):
        assert (shared.parent / "trustplan.state.json.lock").exists()  # the lock beside the target
        assert not (link.parent / "trustplan.state.json.lock").exists()
        store.write(doc(1))
        store.write(doc(2))
    assert link.is_symlink()  # still a link: the shared state moved on, not a copy beside it
    assert json.loads(shared.read_text())["serial"] == 2
    assert json.loads((shared.parent / "trustplan.state.json.backup").read_text())["serial"] == 1
    assert sorted(p.name for p in link.parent.iterdir()) == ["trustplan.state.json"]
    # one lock for both names: the link's lock is the target's
    with LocalState(shared).lock(0, "plan"), pytest.raises(StateError, match="state is locked by"), \
            store.lock(0, "apply"):
        pass


def test_the_lock_file_exists_only_while_held_and_a_waiter_on_a_removed_file_tries_again(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "new" / "s.json")
    with store.lock(0, "apply"):
        stale = os.open(store.lock_path, os.O_RDWR)  # a waiter that opened the file before it went
    assert not (tmp_path / "new").exists()  # neither the lock nor the folder made for it is left
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it gets a lock on a file no longer there...
    try:
        with store.lock(0, "apply"):  # ...which is not the lock: the next one still gets the real one
            assert store.lock_path.exists()
    finally:
        os.close(stale)


def test_a_dead_lock_holder_is_named_as_dead(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "s.json")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = Holder.me("apply")
    dead = Holder(dead.user, dead.host, gone.pid, "apply", None, dead.since)
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT)  # the lock still held (by a descendant, say)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(dead.to_dict()).encode())
        with pytest.raises(StateError, match=rf"pid {gone.pid}, apply .*a process that is no longer running"), \
                store.lock(0, "plan"):
            pass
    finally:
        os.close(fd)


def _full_disk(*full: Path):  # noqa: ANN202
    real = local_state.write_atomic

    def write(path: Path, data: bytes, mode: int = 0o644) -> None:
        if any(path.parent == f or path == f for f in full):
            raise FilesystemError(f"{path}: cannot write: No space left on device")
        real(path, data, mode=mode)

    return write


def test_a_state_write_that_fails_leaves_a_rescue_file_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalState(tmp_path / "trustplan.state.json")
    store.write(doc(1))
    monkeypatch.setattr(local_state, "write_atomic", _full_disk(store.path))
    with pytest.raises(StateError) as raised:
        store.write(doc(2))
    rescue = tmp_path / "trustplan.state.rescue.2.json"
    assert str(raised.value) == (f"{store.path}: the state was not written: cannot write: No space left on device; "
                                 f"this update (serial 2) was saved to {rescue}")
    assert json.loads(rescue.read_text())["serial"] == 2
    assert "state migrate --from" in (raised.value.hint or "")


def test_with_the_whole_folder_full_the_rescue_goes_to_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalState(tmp_path / "state" / "trustplan.state.json")
    monkeypatch.setattr(local_state, "write_atomic", _full_disk(tmp_path / "state"))
    monkeypatch.setattr(local_state.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    with pytest.raises(StateError, match=r"saved to .*/tmp/trustplan.state.rescue.3.json"):
        store.write(doc(3))
    assert json.loads((tmp_path / "tmp" / "trustplan.state.rescue.3.json").read_text())["serial"] == 3

"""One CA per authority, whatever runs at once: two `trustplan plan` processes started together
store one CA per generated authority; each either saves a plan naming that CA or fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import copy_example, run_cli

from trustplan.formats import planfile


def test_two_concurrent_plans_mint_one_ca_per_authority(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "cluster")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "trustplan", "plan", "-o", f"plan-{i}.bin"],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    results = [(p.wait(timeout=240), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    ok = [i for i, (code, _) in enumerate(results) if code == 0]
    assert ok, results
    for code, err in results:
        assert "Traceback" not in err
        if code != 0:
            assert code == 1
            assert "another trustplan run generated CA" in err and "run `trustplan plan` again" in err, err
            assert not (root / f"plan-{results.index((code, err))}.bin").exists()

    keys = root / ".trustplan" / "keys"
    index = json.loads((keys / "index.json").read_text())
    assert sorted(index) == ["k8s-2026", "talos-2026"]
    assert sorted(p.name for p in keys.glob("*.key")) == sorted(f"{fp.removeprefix('sha256:')}.key"
                                                                for fp in index.values())
    for i in ok:
        plan = planfile.read(root / f"plan-{i}.bin").plan
        named = {a.name: a.fingerprint for a in plan.authorities if a.name}
        assert named == index

    # applying either saved plan finishes the rotation: the next plan has nothing to do
    assert run_cli(root, "apply", f"plan-{ok[0]}.bin").code == 0
    again = run_cli(root, "plan", "--detailed-exitcode")
    assert again.code == 0, again.out + again.err


def test_a_plan_that_lost_the_race_stores_nothing_and_says_so(tmp_path: Path) -> None:
    """The interleaving the processes above may or may not hit: both plans mint before either saves."""
    import pytest

    from trustplan.engine.authorities import resolve
    from trustplan.errors import KeystoreError
    from trustplan.formats import desired as desired_mod
    from trustplan.formats.keystore import Keystore
    from trustplan.talos import pki

    root = copy_example(tmp_path / "cluster")
    desired = desired_mod.load(root / "trustplan.yaml")
    keystore = Keystore(desired.keystore)
    first = resolve(desired, keystore, None, pki.utcnow())
    second = resolve(desired, keystore, None, pki.utcnow())
    assert {fp for _, m in first.new for fp in [m.ca.fingerprint]}.isdisjoint(m.ca.fingerprint for _, m in second.new)
    first.save_new(keystore)
    with pytest.raises(KeystoreError, match="another trustplan run generated CA sha256:[0-9a-f]{64} for authority"):
        second.save_new(keystore)
    index = json.loads((desired.keystore / "index.json").read_text())
    assert index == first.refs
    assert len(list(desired.keystore.glob("*.key"))) == 2
    # a third plan reuses the stored CAs
    third = resolve(desired, keystore, None, pki.utcnow())
    assert third.new == [] and third.refs == index

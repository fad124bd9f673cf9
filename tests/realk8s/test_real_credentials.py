"""Issue 22 on real kube-apiservers (`--k8s real`, Talos 1.14 layout; the story in credstory.py, one
cluster for the session): one plan rotates the Talos API, Kubernetes API and aggregator CAs, the
service-account key and the encryption key; every gate passes on the real servers; the swap
rewrites every Secret and etcd, read directly, then holds none under the old key's
`k8s:enc:secretbox:v1:<name>:` prefix; a token minted before the swap works until the remove, and
the plan of that remove lists the legacy token Secret it breaks (text, Markdown, JSON)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from credstory import LEGACY, Story

pytestmark = pytest.mark.realk8s


def gates(applied: object) -> list[tuple[str, str, str, str]]:
    steps = applied.steps  # type: ignore[attr-defined]
    return [(s.phase, s.pki, s.outcome, str(s.detail)) for s in steps if s.kind == "gate"]


def test_one_plan_rotates_all_five_and_every_gate_passes(story: Story) -> None:
    assert story.plan1_phases[0] == "accept"  # gen config v1.14.1 writes the 1.14 documents: nothing to move
    assert story.plan1_deferred == ["serviceaccount"] and "removal-deferred" in story.plan1_warnings
    assert story.apply1 is not None and story.apply2 is not None
    first = gates(story.apply1)
    assert first and all(outcome == "ok" for _, _, outcome, _ in first), first
    assert {pki for _, pki, _, _ in first} >= {"talos", "kubernetes", "aggregator", "serviceaccount", "encryption"}
    assert "swap" not in story.plan2_phases and story.plan2_phases[-1] == "remove"
    assert all(o == "ok" for _, _, o, _ in gates(story.apply2))
    assert [s.detail for s in story.apply1.steps if s.kind == "rewrite" and s.outcome == "ok"]
    # talosctl v1.14.1 validate --strict accepted every config written (2 control planes, 3 phases + the remove)
    assert story.validated >= 2 * 4, story.validated


def test_etcd_holds_every_secret_under_the_new_key_and_each_decrypts(story: Story) -> None:
    old, new = story.before["key_name"], story.after2["key_name"]
    assert story.before["etcd"][old] >= 1 and new != old
    assert set(story.after1["etcd"]) == {new}  # the swap rewrote every Secret
    assert set(story.after2["etcd"]) == {new} and story.after2["accepted_keys"] == 0
    assert story.after2["before_word"] == b"kept"
    assert story.after2["passes"]["etcd: every Secret under the new key"] == ""
    assert old in story.refused["etcd: Secrets under the old key"]  # the check refuses the old key's Secrets
    assert new in story.refused["etcd: asked for the old key"]
    assert story.apply1 is not None
    etcd_gates = [d for p, pki, o, d in gates(story.apply1) if pki == "encryption" and "etcd at" in d]
    assert len(etcd_gates) == 2 and all(new in d for d in etcd_gates), etcd_gates  # after swap, after remove
    assert any("every Secret decrypts on 2 API servers" in d for d in etcd_gates)


def test_a_token_minted_before_the_swap_works_until_the_remove(story: Story) -> None:
    assert story.before["old_token"] == [True, True]
    assert story.after1["old_token"] == [True, True]  # swapped, the remove waits for the drain
    assert story.after2["old_token"] == [False, False]  # removed
    assert story.after2["new_token"] == [True, True]
    assert story.after2["new_kid"] == story.after2["sa_kid"] != story.after2["old_kid"]


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_the_remove_plan_lists_the_legacy_token_it_breaks(story: Story, fmt: str) -> None:
    out = run_cli(story.dir, "show", "-f", fmt, "plan2.bin").out
    assert f"default/{LEGACY}" in out and "kubernetes.io/service-account-token" in out
    if fmt == "json":
        codes = [w["code"] for w in json.loads(out)["warning_details"]]
        assert "tokens-break" in codes
    assert f"default/{LEGACY}" not in run_cli(story.dir, "show", "-f", fmt, "plan1.bin").out

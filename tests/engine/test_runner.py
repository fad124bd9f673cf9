"""The engine against the in-memory provider (providers/memory.py): a whole plan and apply with no
config files written and no simulator, asserting what the nodes were sent and what they hold."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from conftest import copy_example
from trustplan.planner import Credential
from trustplan.providers.base import TLSIdentity
from trustplan.providers.memory import MemoryProvider
from trustplan.state import LocalState

from trustplan.engine import applier
from trustplan.engine import planning as engine
from trustplan.engine.applier import ApplyRequest
from trustplan.engine.keyring import KeyRing
from trustplan.engine.progress import QuietReporter
from trustplan.engine.runner import PhaseRunner
from trustplan.errors import ProviderError
from trustplan.formats import desired as desired_mod
from trustplan.formats.desired import DesiredState
from trustplan.formats.keystore import Keystore
from trustplan.talos import machineconfig, pki

DIGEST = "sha256:" + "3" * 64


def _cluster(tmp_path: Path, needs_credential: bool = False) -> tuple[DesiredState, MemoryProvider]:
    """The example's desired state (keystore, state and outputs under tmp_path) over its five nodes
    held in memory: nothing writes a machine config file."""
    desired = desired_mod.load(copy_example(tmp_path / "c") / "trustplan.yaml")
    configs = {a: p.read_bytes() for a, p in desired.machine_configs.items()}
    return desired, MemoryProvider(configs, needs_credential=needs_credential)


def _plan(desired: DesiredState, provider: MemoryProvider) -> engine.Planned:
    keystore = Keystore(desired.keystore)
    planned = asyncio.run(engine.plan_live(
        desired, provider, keystore, LocalState(desired.state).read("demo"), pki.utcnow(), dt.timedelta(hours=1)
    ))
    planned.resolved.save_new(keystore)
    return planned


def _issuers(provider: MemoryProvider, pki_name: str) -> set[str]:
    out = set()
    for address, data in provider.configs.items():
        fields = machineconfig.parse(data, address).ca_fields(pki_name)  # type: ignore[arg-type]
        assert fields.issuer is not None
        out.add(pki.CACert.from_pem(fields.issuer).fingerprint)
    return out


def test_plan_and_apply_in_memory_rotate_every_node(tmp_path: Path) -> None:
    desired, provider = _cluster(tmp_path)
    before = {a: p.read_bytes() for a, p in desired.machine_configs.items()}
    planned = _plan(desired, provider)
    assert [w.node for w in provider.writes if w.dry_run] == sorted(before)  # plan: one dry run per node
    keystore = Keystore(desired.keystore)
    done = asyncio.run(applier.apply(ApplyRequest(desired, planned.saved, DIGEST, "plan.bin", pki.utcnow()),
                                     provider, keystore, LocalState(desired.state)))
    assert done.state.history[-1].status == "applied"
    new = {d.pki: d.issuer for d in planned.plan.desired_issuers()}
    assert _issuers(provider, "talos") == {new["talos"]} and _issuers(provider, "kubernetes") == {new["kubernetes"]}
    assert {a: p.read_bytes() for a, p in desired.machine_configs.items()} == before  # no file touched
    writes = [w.node for w in provider.writes if not w.dry_run]
    assert writes[:5] == ["10.5.0.2", "10.5.0.3", "10.5.0.4", "10.5.0.5", "10.5.0.6"]  # control planes first


def test_each_phase_is_sent_with_the_plans_credential(tmp_path: Path) -> None:
    """A provider that takes a credential gets, per phase, what the plan's phase.credential says: the
    operator's own (None) for accept, then admin certs from the new issuer (trusting old + new during
    the swap, the new CA alone for remove). The in-memory nodes refuse a credential they do not trust."""
    desired, files_like = _cluster(tmp_path)
    planned = _plan(desired, files_like)
    provider = MemoryProvider(files_like.configs, needs_credential=True)
    keys = KeyRing(dict(planned.resolved.material), Keystore(desired.keystore))
    runner = PhaseRunner(desired, provider, keys, planned.live, planned.plan, pki.utcnow(), QuietReporter())
    asyncio.run(runner.run())
    writes = iter(provider.writes)  # the phases run one after the other, each node once
    sent = {p.name: {(w.issuer, w.trusted) for w in (next(writes) for _ in p.nodes())}
            for p in planned.plan.phases if p.edits}
    assert next(writes, None) is None
    old = next(iter(planned.live.nodes)).talos.issuer
    new = next(d.issuer for d in planned.plan.desired_issuers() if d.pki == "talos")
    assert sent == {"accept": {(None, ())}, "swap": {(new, tuple(sorted((old, new))))}, "remove": {(new, (new,))}}
    for phase in planned.plan.phases:  # which is what the plan says
        if phase.edits and phase.credential is not None:
            assert sent[phase.name] == {(phase.credential.issuer, phase.credential.trusted)}


def test_the_operators_identity_sends_the_operators_own_credential(tmp_path: Path) -> None:
    desired, provider = _cluster(tmp_path)
    planned = _plan(desired, provider)
    keys = KeyRing(dict(planned.resolved.material), Keystore(desired.keystore))
    swap = next(p for p in planned.plan.phases if p.name == "swap")
    assert swap.credential is not None
    own = TLSIdentity("talos", swap.credential.issuer, swap.credential.trusted, b"crt", b"key", b"bundle")
    taking = MemoryProvider(provider.configs, needs_credential=True)
    runner = PhaseRunner(desired, taking, keys, planned.live, planned.plan, pki.utcnow(), QuietReporter(),
                         operator=None, operator_identity=Credential(swap.credential.issuer,
                                                                             swap.credential.trusted))
    assert runner.phase_credential(swap) is None  # the identity is the operator's: its own credential
    minted = PhaseRunner(desired, taking, keys, planned.live, planned.plan, pki.utcnow(), QuietReporter())
    cred = minted.phase_credential(swap)
    assert cred is not None and (cred.issuer, cred.trusted) == (own.issuer, own.trusted)
    assert pki.verify_issued_by(pki.load_cert_pem(cred.cert_pem, "minted", "crt"), keys.ca(cred.issuer).cert)
    files_like = PhaseRunner(desired, provider, keys, planned.live, planned.plan, pki.utcnow(),
                             QuietReporter())
    assert files_like.phase_credential(swap) is None  # a provider that takes no credential gets none


def test_a_failed_write_in_memory_is_rolled_back(tmp_path: Path) -> None:
    desired, provider = _cluster(tmp_path)
    before = dict(provider.configs)
    planned = _plan(desired, provider)

    class Failing(MemoryProvider):
        failed = False

        async def write(self, node, data, *, credential=None, dry_run=False):  # type: ignore[no-untyped-def]
            real = [w for w in self.writes if not w.dry_run]
            if not dry_run and len(real) == 7 and not self.failed:  # the swap phase's third control plane
                self.failed = True
                raise ProviderError(f"{node.address}: disk full")
            return await super().write(node, data, credential=credential, dry_run=dry_run)

    failing = Failing(provider.configs)
    with pytest.raises(ProviderError, match="disk full.*rolled back"):
        asyncio.run(applier.apply(ApplyRequest(desired, planned.saved, DIGEST, "plan.bin", pki.utcnow()),
                                  failing, Keystore(desired.keystore), LocalState(desired.state)))
    for pki_name in ("talos", "kubernetes"):
        assert _issuers(failing, pki_name) == _issuers(MemoryProvider(before), pki_name)
    last = LocalState(desired.state).read("demo").history[-1]
    assert last.status == "failed" and any(s.phase.startswith("rollback") for s in last.steps)

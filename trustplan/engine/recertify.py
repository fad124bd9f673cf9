"""The recertify step (issue 20, finding 11): a worker whose client-trust bundle (from trustd, not in
its config) lags its config is made to ask trustd again, once the control planes trust the new CA.

Talos re-issues a worker's apid certificate, and fetches its bundle with it, when the certificate's
inputs change; machine.certSANs is one (reference/talos.md §2.4). So the write adds the worker's own
address to machine.certSANs (its hostname if the address is there already), changing no CA field,
in the phase's write mode (try, then confirmed with the phase). Then the worker is probed directly,
as plan probed it, until its apid accepts client certificates from the new CA.

    await recertify_workers(runner, phase, credential)
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from trustplan.engine.phasesteps import fresh, send
from trustplan.errors import ProviderError, TrustplanError
from trustplan.planner import ops as op
from trustplan.providers.base import TLSIdentity
from trustplan.talos.certsans import cert_sans, with_cert_san
from trustplan.talos.machineconfig import MachineConfig
from trustplan.talos.yamledit import Unsupported

if TYPE_CHECKING:
    from trustplan.engine.runner import PhaseRunner


async def recertify_workers(runner: PhaseRunner, phase: op.Phase, cred: TLSIdentity | None) -> None:
    gate = next((g for g in phase.gates if g.pki == "talos"), None)
    runner.reporter.start(f"{phase.name}: recertifying {len(phase.recertify)} workers", len(phase.recertify))
    for address in phase.recertify:
        runner.reporter.begin(address)
        try:
            await fresh(runner, phase, address, cred)
            cfg = runner.configs[address]
            names = [n for n in (address, cfg.hostname) if n and n not in cert_sans(cfg.data)]
            if not names:
                raise ProviderError(f"node {address}: cannot recertify: its address and hostname are both in "
                                    "machine.certSANs already, so no harmless change is left to make it ask trustd")
            try:
                data = with_cert_san(cfg.data, names[0])
            except Unsupported as exc:
                raise ProviderError(f"node {address}: cannot recertify: machine.certSANs: {exc}") from None
            await send(runner, phase, address, data, cred)
            runner.configs[address] = MachineConfig(data, cfg.source)
            if gate is not None:
                await _probe(runner, address, gate.credential)
        except TrustplanError as exc:
            runner.record(phase.name, "recertify", "failed", node=address, message=str(exc))
            runner.reporter.fail(address)
            raise
        runner.record(phase.name, "recertify", "ok", node=address,
                      detail=f"added {names[0]} to machine.certSANs; it asked trustd again")
        runner.reporter.advance(address)
    runner.reporter.done()


async def _probe(runner: PhaseRunner, address: str, want: op.Credential) -> None:
    """Until the worker's own apid accepts a client certificate from the gate's issuer (within the
    verify timeout)."""
    prober = runner.provider.capabilities.client_trust
    if prober is None:
        return
    issuer = want.issuer
    cred = runner.mint("talos", want)
    deadline = time.monotonic() + runner.rollout.timeout("talos")
    while True:
        answer = (await prober.probe_client_trust(runner.refs[address], [cred]))[0]
        if answer is True:
            return
        if time.monotonic() >= deadline:
            seen = "refuses" if answer is False else "does not answer for"
            raise ProviderError(f"node {address}: recertified, but its apid still {seen} client certificates from "
                                f"{runner.plan.label(issuer)} (probed directly)")
        await asyncio.sleep(0.5)

"""The gate of a provider without a live API (files, memory): decided from the machine configs alone.

    check_gate(address, where, cfg, controlplanes, credential)   GateFailedError unless the node's
                                                                  config is valid, trusts the client
                                                                  and serves a cert the client trusts
"""

from __future__ import annotations

from collections.abc import Iterable

from trustplan.providers.base import TLSIdentity

from trustplan.errors import GateFailedError
from trustplan.talos import machineconfig, pki, validation
from trustplan.talos.rewrite import trust_of


def _trusted(cfg: machineconfig.MachineConfig, pki_name: str, where: str) -> tuple[frozenset[str], str | None]:
    """The fingerprints a config trusts for one PKI (issuer + accepted), and its issuer's."""
    trust, _ = trust_of(cfg.ca_fields(pki_name), where)  # type: ignore[arg-type]
    return trust.trusted, trust.issuer


def check_gate(
    address: str,
    where: str,
    cfg: machineconfig.MachineConfig,
    controlplanes: Iterable[tuple[str, machineconfig.MachineConfig]],
    credential: TLSIdentity,
) -> None:
    """The config (`where` names it in messages) is valid, trusts client certs from the credential's
    issuer, and the node's server cert (a control plane's own issuer; a worker's comes from the
    control planes' issuers) is trusted by the credential. `controlplanes`: (where, config) pairs."""
    problems = validation.validate(cfg)
    if problems:
        raise GateFailedError(f"{address}: {where} fails Talos validation: " + "; ".join(problems))
    trusted, issuer = _trusted(cfg, credential.pki, where)
    if credential.issuer not in trusted:
        raise GateFailedError(
            f"{address}: {where} does not trust client certificates from {pki.short(credential.issuer)}"
        )
    if cfg.role == "controlplane":
        serving = {issuer} if issuer else set()
    else:  # a worker's server certificate comes from a control plane's issuing CA
        serving = {i for w, cp in controlplanes if (i := _trusted(cp, credential.pki, w)[1])}
    untrusted = serving - set(credential.trusted)
    if untrusted:
        names = ", ".join(pki.short(u) for u in sorted(untrusted))
        raise GateFailedError(
            f"{address}: its server certificate would be issued by {names}, which the client does not trust"
        )

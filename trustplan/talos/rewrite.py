"""Apply planned edits to a machine config's bytes, keeping every CA entry's exact bytes.

The planner speaks fingerprints; a config holds PEM bytes. An entry already in the node's config
is written back with the bytes it had (Talos compares CA entries byte for byte); a CA new to the
node is written with the PEM trustplan has for it.
"""

from __future__ import annotations

from collections.abc import Callable

from trustplan.planner import LiveTrust, apply_edit
from trustplan.planner.ops import Edit
from trustplan.talos.machineconfig import CAFields, MachineConfig


def trust_of(fields: CAFields, source: str) -> tuple[LiveTrust, dict[str, bytes]]:
    """The fingerprints of a config's CA fields, and fingerprint -> the exact PEM bytes found."""
    issuer, accepted = fields.cas(source)
    pems: dict[str, bytes] = {issuer.fingerprint: issuer.pem} if issuer is not None else {}
    for ca in accepted:
        pems.setdefault(ca.fingerprint, ca.pem)
    trust = LiveTrust(
        issuer.fingerprint if issuer is not None else None,
        fields.issuer_key is not None,
        tuple(ca.fingerprint for ca in accepted),
    )
    return trust, pems


def rewrite(
    cfg: MachineConfig,
    edits: tuple[Edit, ...],
    cert_pem: Callable[[str], bytes],
    key_pem: Callable[[str], bytes],
) -> bytes:
    """The config bytes after `edits`. `cert_pem(fp)` / `key_pem(fp)` supply CAs new to this node."""
    return rewrite_config(cfg, edits, cert_pem, key_pem).data


def rewrite_config(
    cfg: MachineConfig,
    edits: tuple[Edit, ...],
    cert_pem: Callable[[str], bytes],
    key_pem: Callable[[str], bytes],
) -> MachineConfig:
    """The config after `edits`, as a MachineConfig (its `data` is what to send)."""
    changes: dict[str, CAFields] = {}
    for pki_name in dict.fromkeys(e.pki for e in edits):
        fields = cfg.ca_fields(pki_name)
        trust, pems = trust_of(fields, cfg.source)
        after = trust
        for e in edits:
            if e.pki == pki_name:
                after = apply_edit(after, e)

        def pem(fp: str, pems: dict[str, bytes] = pems) -> bytes:
            return pems[fp] if fp in pems else cert_pem(fp)

        if after.issuer is None:
            issuer = key = None
        else:
            issuer = pem(after.issuer)
            if cfg.role != "controlplane":
                key = None
            elif after.issuer == trust.issuer and fields.issuer_key is not None:
                key = fields.issuer_key
            else:
                key = key_pem(after.issuer)
        changes[pki_name] = CAFields(issuer, key, tuple(pem(fp) for fp in after.accepted))
    return cfg.edited(changes)

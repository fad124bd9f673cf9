"""Apply planned edits to a machine config's bytes, keeping every CA entry's exact bytes.

The planner speaks fingerprints; a config holds PEM bytes. An entry already in the node's config
is written back with the bytes it had (Talos compares CA entries byte for byte); a CA new to the
node is written with the PEM trustplan has for it.
"""

from __future__ import annotations

from collections.abc import Callable

from trustplan.planner import LiveTrust, apply_edit
from trustplan.planner.model import KINDS, PKI
from trustplan.planner.ops import Edit, MoveToDocument
from trustplan.talos import kubecreds, machineconfig
from trustplan.talos.kubecreds import KindFields, Material
from trustplan.talos.machineconfig import CAFields, MachineConfig

#: supplies an authority new to a node, by kind and fingerprint (a control-plane-only kind)
MaterialFor = Callable[[PKI, str], Material]


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
    material: MaterialFor | None = None,
) -> MachineConfig:
    """The config after `edits`, as a MachineConfig (its `data` is what to send). Every kind's
    changes go into the one config: one write per node per phase, whatever it rotates."""
    shared = {e.pki for e in edits if KINDS[e.pki].holders == "controlplane"}
    if shared:
        cfg = machineconfig.with_kind_fields(
            cfg, {k: kind_fields_after(cfg, k, [e for e in edits if e.pki == k], material) for k in sorted(shared)}
        )
        edits = tuple(e for e in edits if e.pki not in shared)
        if not edits:
            return cfg
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


def kind_trust(kind: PKI, fields: KindFields) -> tuple[LiveTrust, dict[str, Material]]:
    """A control-plane-only kind's fields as the planner sees them, and fingerprint -> material."""
    found: dict[str, Material] = {}
    issuer = None
    if fields.issuer is not None:
        issuer = kubecreds.fingerprint(kind, fields.issuer)
        found[issuer] = fields.issuer
    accepted = []
    for m in fields.accepted:
        fp = kubecreds.fingerprint(kind, m)
        found.setdefault(fp, m)
        accepted.append(fp)
    has_key = fields.issuer is not None and fields.issuer.secret is not None
    return LiveTrust(issuer, has_key, tuple(accepted)), found


def kind_fields_after(cfg: MachineConfig, kind: PKI, edits: list[Edit], material: MaterialFor | None) -> KindFields:
    """The kind's fields after `edits` (always in the 1.14 document: a legacy value is moved first)."""
    fields = machineconfig.kind_fields(cfg, kind)
    moved = any(isinstance(e, MoveToDocument) for e in edits)
    trust, found = kind_trust(kind, fields)
    after = trust
    for e in edits:
        after = apply_edit(after, e)

    def get(fp: str) -> Material:
        if fp in found:
            return found[fp]
        if material is None:
            raise ValueError(f"no material for {kind} {fp}")
        return material(kind, fp)

    issuer = None
    if after.issuer is not None:  # the issuer needs its secret: an accepted entry holds the public part only
        issuer = get(after.issuer)
        if issuer.secret is None and material is not None:
            issuer = material(kind, after.issuer)
    accepted = []
    for fp in after.accepted:
        m = get(fp)
        # a signing key is accepted by its public key only; CAs by the certificate; secretbox keys whole
        accepted.append(Material(m.public, m.secret if kind == "encryption" else None, m.name))
    if fields.layout == "legacy" and not moved:  # replaced in place (`--allow-disruptive`): one value
        if accepted:
            raise ValueError(f"{cfg.source}: {kind} is in the legacy layout; the plan must move it first")
        return KindFields("legacy", issuer)
    return KindFields("document", issuer, tuple(accepted))

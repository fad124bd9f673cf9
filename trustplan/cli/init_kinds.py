"""What `trustplan init` reads of the control-plane-only credentials (the aggregator CA, the
service-account signing key, the encryption-at-rest key, the etcd CA) and the lines it writes for them.

They are read from the control planes' configs (files or a live node, either layout: the 1.14
documents `KubeAggregatorCAConfig`, `KubeServiceAccountConfig`, `KubeEtcdEncryptionConfig`, or the
legacy `cluster.aggregatorCA`, `cluster.serviceAccount.key`, `cluster.secretboxEncryptionSecret`;
`cluster.etcd.ca` in every layout), or from a Talos `secrets.yaml` (`certs.k8saggregator`,
`certs.k8sserviceaccount.key`, `secrets.secretboxencryptionsecret`, `certs.etcd`). The desired state
names each by fingerprint, as it is today (issuer and accepted), so a plan changes nothing of them
until the operator names a new issuer. Their private parts are copied to the keystore (0600,
age-encrypted when `--age-recipient` is given), never to the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustplan.errors import InputError
from trustplan.formats.keystore import Keystore
from trustplan.planner.model import KINDS, PKI, PKIS
from trustplan.system import safeio, safeyaml
from trustplan.talos import kubecreds, machineconfig, pki

#: the kinds init reads here (the control-plane-only ones), and the authority-name prefix of each
CP_KINDS: tuple[PKI, ...] = tuple(k for k in PKIS if KINDS[k].holders == "controlplane")
PREFIX: dict[str, str] = {"aggregator": "aggregator", "serviceaccount": "sa", "encryption": "etcd-key", "etcd": "etcd"}


@dataclass
class Current:
    """One authority of a kind as it is today: where it issues, where it is only accepted."""

    kind: PKI
    fingerprint: str
    material: kubecreds.Material = field(repr=False)
    issuing_on: list[str] = field(default_factory=list)
    accepted_on: list[str] = field(default_factory=list)
    where: str = ""  # the field it was read from (the first place), for the comment


@dataclass
class Found:
    """Per kind, the authorities found (issuers first, the most widely issuing first); `skipped`
    names a kind that is there but cannot be managed, and why."""

    kinds: dict[PKI, list[Current]] = field(default_factory=dict)
    skipped: dict[PKI, str] = field(default_factory=dict)

    def add(self, kind: PKI, m: kubecreds.Material, where: str, field_: str, issuing: bool) -> None:
        fp = kubecreds.fingerprint(kind, m)
        entries = self.kinds.setdefault(kind, [])
        entry = next((c for c in entries if c.fingerprint == fp), None)
        if entry is None:
            entry = Current(kind, fp, m, where=field_)
            entries.append(entry)
        elif entry.material.secret is None and m.secret is not None:
            entry.material = m
        (entry.issuing_on if issuing else entry.accepted_on).append(where)

    def ordered(self) -> dict[PKI, list[Current]]:
        return {
            k: sorted(v, key=lambda c: (-len(c.issuing_on), -len(c.accepted_on)))
            for k, v in self.kinds.items() if any(c.issuing_on for c in v)
        }


def from_configs(configs: list[tuple[str, machineconfig.MachineConfig]]) -> Found:
    """The control-plane-only kinds of the control planes among `configs` (address, config)."""
    found = Found()
    for where, cfg in configs:
        if cfg.role != "controlplane":
            continue
        for kind in CP_KINDS:
            try:
                fields = machineconfig.kind_fields(cfg, kind)
            except InputError as exc:
                if kind == "encryption" and "no secretbox provider" in str(exc):
                    found.skipped[kind] = f"{cfg.source}: no secretbox provider (trustplan rotates secretbox keys only)"
                    continue
                raise
            if fields.issuer is None:
                continue
            place = kubecreds.LEGACY_PATHS[kind] if fields.layout == "legacy" else KINDS[kind].field
            found.add(kind, fields.issuer, where, place, True)
            for m in fields.accepted:
                found.add(kind, m, where, place, False)
    return found


def _b64_pem(value: object, path: Path, ypath: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InputError(str(path), "expected a base64 PEM string", path=ypath)
    return pki.b64decode_pem(value, str(path), ypath)


def from_secrets(path: Path) -> Found:
    """The control-plane-only kinds a Talos secrets bundle holds (each is absent in old bundles)."""
    try:
        doc = safeyaml.load(safeio.read_regular(path, what="secrets file"))
    except yaml.YAMLError as exc:
        problem, line = safeyaml.problem(exc)
        raise InputError(str(path), problem, line=line) from None
    doc = doc if isinstance(doc, dict) else {}
    certs: Any = doc.get("certs") or {}
    secrets: Any = doc.get("secrets") or {}
    found = Found()
    where = str(path)
    cas: tuple[tuple[PKI, str], ...] = (("aggregator", "k8saggregator"), ("etcd", "etcd"))
    for kind, name in cas:
        ca = certs.get(name) if isinstance(certs, dict) else None
        if isinstance(ca, dict) and ca.get("crt"):
            crt = _b64_pem(ca.get("crt"), path, f"certs.{name}.crt")
            key = _b64_pem(ca.get("key"), path, f"certs.{name}.key") if ca.get("key") else None
            if key is not None and not pki.key_matches(pki.CACert.from_pem(crt, where).cert,
                                                        pki.load_key_pem(key, where, f"certs.{name}.key")):
                raise InputError(where, "the CA key does not match the CA certificate", path=f"certs.{name}.key")
            found.add(kind, kubecreds.Material(crt, key), where, f"certs.{name}", True)
    sa = certs.get("k8sserviceaccount") if isinstance(certs, dict) else None
    if isinstance(sa, dict) and sa.get("key"):
        key = _b64_pem(sa.get("key"), path, "certs.k8sserviceaccount.key")
        public = kubecreds.public_pem(key, where, "certs.k8sserviceaccount.key")
        found.add("serviceaccount", kubecreds.Material(public, key), where, "certs.k8sserviceaccount.key", True)
    box = secrets.get("secretboxencryptionsecret") if isinstance(secrets, dict) else None
    if box:
        secret = kubecreds.import_key("encryption", str(box).encode(), where).secret
        found.add("encryption", kubecreds.Material(b"", secret, "key2"), where, "secrets.secretboxencryptionsecret",
                  True)
    elif isinstance(secrets, dict) and secrets.get("aescbcencryptionsecret"):
        found.skipped["encryption"] = (f"{path}: secrets.aescbcencryptionsecret only (trustplan rotates secretbox "
                                       "keys only)")
    return found


def save_keys(found: Found, keystore: Keystore) -> int:
    """Copy every private part found to the keystore (by fingerprint); how many were copied."""
    items: list[tuple[str | None, str, kubecreds.Material]] = [
        (None, c.fingerprint, c.material)
        for cs in found.ordered().values() for c in cs if c.material.secret is not None
    ]
    if items:
        keystore.save_material(items)
    return len(items)


def lines(found: Found, read: int, keystore: str) -> tuple[list[str], list[str]]:
    """(comment lines naming what was found, `trust:` lines that keep each kind as it is)."""
    kinds = found.ordered()
    if not kinds and not found.skipped:
        return [], []
    notes = [
        "",
        "# The control planes' other Kubernetes credentials, kept as they are by the `trust` lines below",
        f"# (their keys were copied to {keystore}). To rotate one, add an authority such as",
        "# `aggregator-2027: {generate: {}}` and make it the issuer: docs/credentials.md.",
    ]
    trust = []
    for kind, cs in kinds.items():
        for i, c in enumerate(cs):
            label = f"{PREFIX[kind]}-current" + (f"-{i + 1}" if i else "")
            subject, algorithm = kubecreds.describe(kind, c.material)
            notes.append(f"#   {label}: {c.fingerprint}")
            seen = (("from the secrets file" if not read else f"issuing on {len(c.issuing_on)} of {read} control "
                     "planes read") if c.issuing_on else f"accepted on {len(c.accepted_on)} of {read}")
            notes.append(f"#     {KINDS[kind].name}, {subject or '(empty subject)'}, {algorithm}, in {c.where}, {seen}")
        issuer, accepted = cs[0].fingerprint, [c.fingerprint for c in cs[1:]]
        if sum(1 for c in cs if c.issuing_on) > 1:
            notes.append(f"#   (more than one {KINDS[kind].name} issues today: a rotation may be half done; plan "
                         "finishes it)")
        trust.append(f"  {kind}: {{issuer: {issuer}, accepted: [{', '.join(accepted)}]}}")
    for kind, why in found.skipped.items():
        notes.append(f"#   {KINDS[kind].name}: not managed: {why}")
    return notes, trust

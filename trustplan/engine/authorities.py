"""Turn the desired state's authorities and CA references into concrete CAs.

- `generate`: reuse the CA generated for this name before (keystore index) or mint one now; a new
  one is saved to the keystore only once the plan is known to be safe (`Resolved.save_new`).
- import: PEM certificate + key files, checked (a CA, key matches, not expired, right algorithm).
- `sha256:<hex>`: a CA already live on the nodes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from trustplan.engine.live import LiveCA, LiveKey
from trustplan.errors import CAError
from trustplan.formats.desired import DesiredState
from trustplan.formats.keystore import Keystore
from trustplan.planner import Authority, DesiredTrust
from trustplan.planner.model import KINDS, PKI
from trustplan.system.safeio import read_regular
from trustplan.talos import certgen, kubecreds, pki
from trustplan.talos.pki import CACert, PrivateKey


@dataclass
class Material:
    """A CA with its key when trustplan has one (keystore, import, or a control plane's config)."""

    ca: CACert
    pki: str
    source: str
    name: str | None = None
    key: PrivateKey | None = field(default=None, repr=False)


@dataclass
class KeyMaterial:
    """An authority of a control-plane-only kind (aggregator CA, service-account key, secretbox key)."""

    pki: PKI
    source: str
    name: str | None = None
    material: kubecreds.Material = field(default=kubecreds.Material(b""), repr=False)

    @property
    def has_secret(self) -> bool:
        return self.material.secret is not None


@dataclass
class Resolved:
    material: dict[str, Material]  # fingerprint -> material
    refs: dict[str, str]  # authority name -> fingerprint
    desired: tuple[DesiredTrust, ...]
    warnings: list[str]
    new: list[tuple[str, Material]]  # generated now, not yet in the keystore
    indexed: dict[str, str | None] = field(default_factory=dict)  # name -> the keystore index's CA then
    keys: dict[str, KeyMaterial] = field(default_factory=dict)  # the control-plane-only kinds, by fingerprint
    new_keys: list[tuple[str, str]] = field(default_factory=list)  # (name, fingerprint) generated now

    def material_for(self, kind: PKI, fp: str) -> kubecreds.Material:
        """What rewrite_config writes for an authority new to a node (its secret included)."""
        return self.keys[fp].material

    def authorities(self) -> tuple[Authority, ...]:
        out = []
        for fp, k in sorted(self.keys.items()):
            subject, algorithm = kubecreds.describe(k.pki, k.material)
            start, end = kubecreds.NO_EXPIRY
            if b"CERTIFICATE" in k.material.public:
                ca = CACert.from_pem(k.material.public)
                start, end = ca.not_before, ca.not_after
            out.append(
                Authority(
                    fingerprint=fp,
                    pki=k.pki,
                    source=k.source,  # type: ignore[arg-type]
                    subject=subject,
                    algorithm=algorithm,
                    not_before=start,
                    not_after=end,
                    cert_pem=k.material.public.decode(),
                    key_available=k.has_secret,
                    name=k.name,
                )
            )
        for fp, m in sorted(self.material.items()):
            out.append(
                Authority(
                    fingerprint=fp,
                    pki=m.pki,  # type: ignore[arg-type]
                    source=m.source,  # type: ignore[arg-type]
                    subject=m.ca.subject,
                    algorithm=m.ca.algorithm,
                    not_before=m.ca.not_before,
                    not_after=m.ca.not_after,
                    cert_pem=m.ca.pem.decode(),
                    key_available=m.key is not None,
                    name=m.name,
                )
            )
        return tuple(out)

    def save_new(self, keystore: Keystore) -> None:
        items: list[tuple[str | None, x509.Certificate, PrivateKey]] = []
        for name, m in self.new:
            assert m.key is not None
            items.append((name, m.ca.cert, m.key))
        if items:
            keystore.save_generated(items, self.indexed)
        self.new = []
        if self.new_keys:
            keystore.save_material(
                [(name, fp, self.keys[fp].material) for name, fp in self.new_keys],
                {name: self.indexed.get(name) for name, _ in self.new_keys},
            )
        self.new_keys = []


def resolve(
    desired: DesiredState,
    keystore: Keystore,
    live: dict[str, LiveCA] | None,
    now: dt.datetime,
    *,
    generate: bool = True,
    live_keys: dict[str, LiveKey] | None = None,
    live_drain: dt.timedelta | None = None,
) -> Resolved:
    """Resolve every authority and reference. `live=None` means offline: sha256 refs are not checked."""
    keys = {fp: KeyMaterial(k.pki, "live", None, k.material) for fp, k in (live_keys or {}).items()}
    new_keys: list[tuple[str, str]] = []
    material: dict[str, Material] = {}
    refs: dict[str, str] = {}
    warnings: list[str] = []
    new: list[tuple[str, Material]] = []
    indexed: dict[str, str | None] = {}
    for fp, lca in (live or {}).items():
        key = pki.load_key_pem(lca.key_pem, "live config") if lca.key_pem else None
        material[fp] = Material(lca.ca, lca.pki, "live", None, key)

    for name, spec in desired.authorities.items():
        use = desired.uses(name)
        ypath = f"authorities.{name}"
        if use is None:
            warnings.append(f"{desired.path}: {ypath}: authority is defined but not used under 'trust'")
            continue
        if KINDS[use].holders == "controlplane":
            found = _resolve_key(desired, keystore, name, use, now, generate, indexed)
            if found is None:
                continue
            fp, km, minted = found
            if fp in keys:
                keys[fp].name, keys[fp].source = name, km.source
                if not keys[fp].has_secret:
                    keys[fp].material = km.material
            else:
                keys[fp] = km
            refs[name] = fp
            new_keys += [(name, fp)] if minted else []
            continue
        if spec.kind == "import":
            assert spec.certificate is not None and spec.key is not None
            ca, key = _import(desired, spec.certificate, spec.key, ypath)
            warnings += pki.check_ca(ca.cert, key, use, now, str(spec.certificate))
            m = Material(ca, use, "import", name, key)
        else:
            algorithm = spec.algorithm or certgen.default_algorithm(use)
            if algorithm not in pki.ALLOWED_ALGORITHMS[use]:
                raise desired.error(f"a {use} CA cannot use {algorithm}", f"{ypath}.generate.algorithm")
            earlier = keystore.generated(name)
            indexed[name] = earlier  # what the index said when this plan decided to mint or reuse
            reused = keystore.load(earlier) if earlier is not None else None
            if reused is not None and not _still_wanted(reused[0], algorithm, spec.validity_days):
                reused = None  # the file now asks for another CA: mint one instead of reusing
            if reused is not None:
                ca, key = reused
                m = Material(ca, use, "generate", name, key)
            elif not generate:
                continue
            else:
                validity = dt.timedelta(days=spec.validity_days) if spec.validity_days else certgen.CA_VALIDITY
                cert, key = certgen.generate_ca(use, now, algorithm, validity)
                m = Material(pki.CACert.from_cert(cert), use, "generate", name, key)
                new.append((name, m))
        existing = material.get(m.ca.fingerprint)
        if existing is not None and existing.key is None:
            existing.key = m.key
        if existing is not None:
            existing.name, existing.source = name, m.source
        else:
            material[m.ca.fingerprint] = m
        refs[name] = m.ca.fingerprint

    wanted: list[DesiredTrust] = []
    for pki_name, tspec in desired.trust.items():
        fps = []
        refs_in_order = [("issuer", tspec.issuer), *((f"accepted[{i}]", r) for i, r in enumerate(tspec.accepted))]
        for where, ref in refs_in_order:
            ypath = f"trust.{pki_name}.{where}"
            if ref.startswith("sha256:"):
                if KINDS[pki_name].holders == "all" and live is not None and ref not in material:
                    raise desired.error(
                        f"{ref} is not a CA on any node",
                        ypath,
                        hint="a sha256: reference names a CA already in a node's config",
                    )
                if KINDS[pki_name].holders == "controlplane" and live is not None and ref not in keys:
                    raise desired.error(
                        f"{ref} is not a {KINDS[pki_name].name} on any control plane",
                        ypath,
                        hint="a sha256: reference names one already in a control plane's config",
                    )
                if ref in material and material[ref].pki != pki_name:
                    raise desired.error(f"{ref} is a {material[ref].pki} CA, not a {pki_name} CA", ypath)
                fps.append(ref)
            elif ref in refs:
                fps.append(refs[ref])
            elif not generate:
                fps.append(f"name:{ref}")
        if fps:
            accepted = tuple(dict.fromkeys(f for f in fps[1:] if f != fps[0]))
            drain = tspec.drain if tspec.drain is not None else _default_drain(pki_name, live_drain)
            wanted.append(DesiredTrust(pki_name, fps[0], accepted, drain))
    names = [name for name, _ in new] + [name for name, _ in new_keys]
    return Resolved(
        material, refs, tuple(wanted), warnings, new, {name: indexed.get(name) for name in names}, keys, new_keys
    )


def _still_wanted(ca: pki.CACert, algorithm: str, validity_days: int | None) -> bool:
    """A CA generated earlier still matches its `generate:` spec (algorithm and, if given, validity)."""
    if ca.algorithm != algorithm:
        return False
    validity = dt.timedelta(days=validity_days) if validity_days else certgen.CA_VALIDITY
    return ca.not_after - ca.not_before == validity


def _import(
    desired: DesiredState, cert_path: object, key_path: object, ypath: str
) -> tuple[pki.CACert, pki.PrivateKey]:
    from pathlib import Path

    assert isinstance(cert_path, Path) and isinstance(key_path, Path)
    for p, sub in ((cert_path, "certificate"), (key_path, "key")):
        if not p.exists():
            raise desired.error(f"file not found: {p}", f"{ypath}.{sub}")
    ca = pki.CACert.from_pem(read_regular(cert_path, what="CA certificate"), str(cert_path))
    key = pki.load_key_pem(read_regular(key_path, what="CA key"), str(key_path))
    if not pki.key_matches(ca.cert, key):
        raise CAError(str(key_path), f"the private key does not match the certificate {cert_path}", path=None)
    return ca, key


#: what trustplan assumes the longest token lifetime is when the API servers set no
#: --service-account-max-token-expiration: kube-apiserver then extends kubelet-requested tokens
#: (--service-account-extend-token-expiration, on by default) to a year
DEFAULT_DRAIN = dt.timedelta(days=365)


def _default_drain(kind: str, live_drain: dt.timedelta | None) -> dt.timedelta | None:
    if kind != "serviceaccount":
        return None
    return live_drain if live_drain is not None else DEFAULT_DRAIN


def _resolve_key(
    desired: DesiredState,
    keystore: Keystore,
    name: str,
    kind: PKI,
    now: dt.datetime,
    generate: bool,
    indexed: dict[str, str | None],
) -> tuple[str, KeyMaterial, bool] | None:
    """(fingerprint, the authority, whether it was minted now) for a control-plane-only kind."""
    spec = desired.authorities[name]
    ypath = f"authorities.{name}"
    if spec.kind == "import":
        assert spec.key is not None
        if spec.certificate is not None:  # an aggregator CA: certificate + key
            ca, key = _import(desired, spec.certificate, spec.key, ypath)
            m = kubecreds.Material(ca.pem, pki.key_to_pem(key))
        else:
            if not spec.key.exists():
                raise desired.error(f"file not found: {spec.key}", f"{ypath}.key")
            m = kubecreds.import_key(kind, read_regular(spec.key, what="key"), str(spec.key))
        return kubecreds.fingerprint(kind, m), KeyMaterial(kind, "import", name, m), False
    earlier = keystore.generated(name)
    indexed[name] = earlier
    if earlier is not None:
        m = keystore.load_material(earlier, kind)
        return earlier, KeyMaterial(kind, "generate", name, m), False
    if not generate:
        return None
    validity = dt.timedelta(days=spec.validity_days) if spec.validity_days else certgen.CA_VALIDITY
    m = kubecreds.generate(kind, spec.algorithm, now, validity)
    return kubecreds.fingerprint(kind, m), KeyMaterial(kind, "generate", name, m), True

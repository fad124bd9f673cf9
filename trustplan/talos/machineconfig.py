"""Talos machine configs: read the CA fields and write them back. (Validating a config is
trustplan.talos.validation; generating whole clusters, which only the simulator, the examples and the
tests do, is trustplan_sim.configgen.)

A machine config is a multi-document YAML stream; the `v1alpha1` document (the one with
`version: v1alpha1`) holds `machine.ca` / `machine.acceptedCAs` (Talos API PKI). The Kubernetes API
PKI is in one of two layouts, detected per node (docs/talos-model.md: where each credential lives):

- legacy: `cluster.ca` / `cluster.acceptedCAs` in the v1alpha1 document (base64 of the PEM);
- multidoc (Talos 1.14): a `kind: KubeAPIServerCAConfig` document with `issuingCA: {cert, key}` and
  `acceptedCAs: [...]` holding plain PEM strings. Workers carry no issuing CA there: their trust is
  `acceptedCAs` only, current issuer first (talosctl prepends the new CA at swap).

Editing re-encodes only the document that holds the fields; the other documents are kept byte for
byte, and CA entries keep the exact bytes they were read with.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from trustplan.errors import InputError
from trustplan.planner.model import PKI
from trustplan.planner.model import Role as Role  # re-exported for providers/ (below the planner's reach)
from trustplan.system import safeyaml, yamlout
from trustplan.talos import caedit, etcdca, kubecreds, pki, yamledit
from trustplan.talos.fingerprint import sha256_fingerprint

log = logging.getLogger(__name__)

KubeCALayout = Literal["legacy", "multidoc"]
FIELDS: dict[str, tuple[str, str]] = {"talos": ("machine", "ca"), "kubernetes": ("cluster", "ca")}
#: the kinds `ca_fields` reads (model.PKIS names every kind a plan can rotate)
READ_KINDS: tuple[PKI, ...] = ("talos", "kubernetes")
KUBE_CA_DOC_KIND = "KubeAPIServerCAConfig"
KUBE_AGGREGATOR_DOC_KIND = "KubeAggregatorCAConfig"
BOTH_LAYOUTS = (
    "kube-apiserver CA is set both in the v1alpha1 config (.cluster.ca) and in a KubeAPIServerCAConfig document"
)



@dataclass(frozen=True)
class CAFields:
    """One PKI's CA fields in one config, as exact PEM bytes (decoded from base64)."""

    issuer: bytes | None  # PEM of machine.ca.crt / cluster.ca.crt
    issuer_key: bytes | None  # PEM of the key, None when absent or ""
    accepted: tuple[bytes, ...]  # PEMs of acceptedCAs[*].crt, in order

    def cas(self, source: str) -> tuple[pki.CACert | None, tuple[pki.CACert, ...]]:
        """The issuing CA and the accepted CAs, each parsed once (CACert.fingerprint names it and
        CACert.pem keeps the exact bytes); InputError naming `source` for one that is no certificate."""
        issuer = pki.CACert.from_pem(self.issuer, source) if self.issuer is not None else None
        return issuer, tuple(pki.CACert.from_pem(pem, source) for pem in self.accepted)


def digest(data: bytes) -> str:
    return sha256_fingerprint(data)


def load_yaml(text: bytes | str) -> Any:
    """One YAML document with trustplan.system.safeyaml's limits (aliases, depth, size, duplicate keys),
    read in one pass (safeyaml.parse)."""
    return safeyaml.load(text)


#: YAML as Talos writes it (trustplan.system.yamlout), plain and with PEM text as literal blocks
dump_yaml = yamlout.dump
dump_yaml_literal = yamlout.dump_literal


def _split_documents(text: str) -> list[str]:
    """Split a YAML stream on `---` lines, keeping each document's text exactly."""
    docs: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---" or line.startswith("--- "):
            docs.append([line])
        else:
            docs[-1].append(line)
    return ["".join(d) for d in docs if "".join(d).strip() not in ("", "---")]


_MAP, _LIST, _STR = dict, list, str
#: The types of every field trustplan reads (None is always allowed: an absent field). Checked when
#: a config is parsed, so that a wrong type is one error naming the path, not a crash later.
SHAPE: dict[str, Any] = {
    "machine": (_MAP, {
        "type": _STR,
        "ca": (_MAP, {"crt": _STR, "key": _STR}),
        "acceptedCAs": (_LIST, (_MAP, {"crt": _STR})),
        "certSANs": (_LIST, None),
        "network": (_MAP, {
            "hostname": None,
            "interfaces": (_LIST, (_MAP, {"addresses": (_LIST, None)})),
        }),
    }),
    "cluster": (_MAP, {
        "clusterName": None,
        "ca": (_MAP, {"crt": _STR, "key": _STR}),
        "acceptedCAs": (_LIST, (_MAP, {"crt": _STR})),
        "controlPlane": (_MAP, {"endpoint": None}),
    }),
}
KUBE_DOC_SHAPE: dict[str, Any] = {
    "issuingCA": (_MAP, {"cert": _STR, "key": _STR}),
    "acceptedCAs": (_LIST, _STR),
}


def _check_shape(value: Any, shape: Any, source: str, path: str = "") -> None:
    """Raise InputError at the first field whose type is not what `shape` says."""
    if shape is None or value is None:
        return
    if isinstance(shape, dict):  # the fields of a mapping
        for key, sub in shape.items():
            _check_shape(value.get(key), sub, source, f"{path}.{key}" if path else key)
        return
    if isinstance(shape, tuple):
        kind, inner = shape
    else:
        kind, inner = shape, None
    if not isinstance(value, kind) or isinstance(value, bool):
        name = {dict: "a mapping", list: "a list", str: "a string"}[kind]
        raise InputError(source, f"expected {name}, got {type(value).__name__}", path=path or "(top level)")
    if kind is list and inner is not None:
        for i, item in enumerate(value):
            _check_shape(item, inner, source, f"{path}[{i}]")
    elif kind is dict and inner is not None:
        _check_shape(value, inner, source, path)


class MachineConfig:
    """A parsed machine config; `data` is the exact bytes it came from."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.digest = digest(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(source, "machine config is not UTF-8 text") from None
        self._texts = _split_documents(text)
        self._docs: list[Any] = []
        for chunk in self._texts:
            try:
                self._docs.append(load_yaml(chunk))
            except yaml.YAMLError as exc:
                problem, line = safeyaml.problem(exc)
                raise InputError(source, problem, line=line) from None
        index = [i for i, d in enumerate(self._docs) if isinstance(d, dict) and d.get("version") == "v1alpha1"]
        if not index:
            raise InputError(source, "no v1alpha1 machine config document (a document with 'version: v1alpha1')")
        self._v1 = index[0]
        _check_shape(self._docs[self._v1], SHAPE, source)
        for doc in self._docs:
            if isinstance(doc, dict) and doc.get("kind") == KUBE_CA_DOC_KIND:
                _check_shape(doc, KUBE_DOC_SHAPE, source, KUBE_CA_DOC_KIND)

    @property
    def v1alpha1(self) -> dict[str, Any]:
        doc: dict[str, Any] = self._docs[self._v1]
        return doc

    @property
    def documents(self) -> list[Any]:
        return list(self._docs)

    @property
    def machine_type(self) -> str:
        value = (self.v1alpha1.get("machine") or {}).get("type")
        if value not in ("controlplane", "worker", "init"):
            raise InputError(
                self.source,
                f"unknown machine type {value!r}",
                path="machine.type",
                hint="expected controlplane, init or worker",
            )
        return str(value)

    @property
    def role(self) -> Role:
        return "worker" if self.machine_type == "worker" else "controlplane"

    @property
    def hostname(self) -> str | None:
        net = (self.v1alpha1.get("machine") or {}).get("network") or {}
        name = net.get("hostname")
        return str(name) if name else None

    @property
    def has_kube_ca_document(self) -> bool:
        return self._kube_doc is not None

    @property
    def _kube_doc(self) -> int | None:
        return next(
            (i for i, d in enumerate(self._docs) if isinstance(d, dict) and d.get("kind") == KUBE_CA_DOC_KIND), None
        )

    @property
    def kube_ca_layout(self) -> KubeCALayout:
        """Where this node keeps its Kubernetes API CA. A node with both layouts is refused."""
        if self._kube_doc is None:
            return "legacy"
        cluster = self.v1alpha1.get("cluster") or {}
        ca = cluster.get("ca") or {}
        if (isinstance(ca, dict) and (ca.get("crt") or ca.get("key"))) or cluster.get("acceptedCAs"):
            raise InputError(
                self.source,
                BOTH_LAYOUTS,
                path="cluster.ca",
                hint="Talos refuses such a config: keep the CA in one place (Talos 1.14+: the KubeAPIServerCAConfig)",
            )
        return "multidoc"

    def ca_fields(self, pki_name: PKI) -> CAFields:
        """Read one PKI's CA fields, from whichever layout this node uses."""
        if pki_name == "kubernetes" and self.kube_ca_layout == "multidoc":
            return self._multidoc_fields()
        section, _ = FIELDS[pki_name]
        sec = self.v1alpha1.get(section) or {}
        path = f"{section}.ca"
        ca = sec.get("ca") or {}
        issuer = issuer_key = None
        if ca.get("crt"):
            issuer = pki.b64decode_pem(ca["crt"], self.source, f"{path}.crt")
        if ca.get("key"):
            issuer_key = pki.b64decode_pem(ca["key"], self.source, f"{path}.key")
        accepted = []
        for i, entry in enumerate(sec.get("acceptedCAs") or []):
            if not isinstance(entry, dict) or not entry.get("crt"):
                raise InputError(self.source, "entry has no 'crt'", path=f"{section}.acceptedCAs[{i}]")
            accepted.append(pki.b64decode_pem(entry["crt"], self.source, f"{section}.acceptedCAs[{i}].crt"))
        return CAFields(issuer=issuer, issuer_key=issuer_key, accepted=tuple(accepted))

    def _pem(self, value: object, path: str) -> bytes:
        if not isinstance(value, str) or "-----BEGIN " not in value:
            raise InputError(self.source, "not a PEM string", path=path)
        return value.encode("utf-8")

    def _multidoc_fields(self) -> CAFields:
        """issuingCA / acceptedCAs of the KubeAPIServerCAConfig document, as CAFields.

        A worker without `issuingCA.cert` keeps its whole trust in `acceptedCAs`, current issuer
        first; it is read as issuer = acceptedCAs[0], accepted = the rest (and written back the
        same way), so the planner sees the same trust as in the legacy layout."""
        index = self._kube_doc
        assert index is not None
        doc = self._docs[index]
        kind = KUBE_CA_DOC_KIND
        issuing = doc.get("issuingCA") or {}
        if not isinstance(issuing, dict):
            raise InputError(self.source, "issuingCA is not a mapping", path=f"{kind}.issuingCA")
        issuer = self._pem(issuing["cert"], f"{kind}.issuingCA.cert") if issuing.get("cert") else None
        key = self._pem(issuing["key"], f"{kind}.issuingCA.key") if issuing.get("key") else None
        entries = doc.get("acceptedCAs") or []
        if not isinstance(entries, list):
            raise InputError(self.source, "acceptedCAs is not a list", path=f"{kind}.acceptedCAs")
        accepted = tuple(self._pem(e, f"{kind}.acceptedCAs[{i}]") for i, e in enumerate(entries))
        if issuer is None and self.role == "worker" and accepted:
            return CAFields(issuer=accepted[0], issuer_key=None, accepted=accepted[1:])
        return CAFields(issuer=issuer, issuer_key=key, accepted=accepted)

    def with_ca_fields(self, changes: dict[str, CAFields]) -> bytes:
        """The config bytes with these PKIs' CA fields replaced; everything else kept. Pure: this
        object is not changed. Each PKI is written into the layout the node uses; only the
        documents holding changed fields are re-encoded."""
        return self.edited(changes).data

    def edited(self, changes: dict[str, CAFields]) -> MachineConfig:
        """A new MachineConfig with these CA fields (see with_ca_fields), built without re-parsing:
        the data is the edited documents' (checked against their new text in _surgical)."""
        texts, docs = list(self._texts), list(self._docs)
        legacy = {k: v for k, v in changes.items() if not (k == "kubernetes" and self.kube_ca_layout == "multidoc")}
        if legacy:
            docs[self._v1] = self._legacy_doc(legacy)
            want = {FIELDS[k][0]: (f.issuer, f.issuer_key, f.accepted) for k, f in legacy.items()}
            texts[self._v1] = self._surgical(
                self._v1, docs[self._v1], lambda t: caedit.edit_v1alpha1(t, want), dump_yaml
            )
        if "kubernetes" in changes and self.kube_ca_layout == "multidoc":
            index = self._kube_doc
            assert index is not None
            docs[index] = self._multidoc_doc(changes["kubernetes"])
            issuing, accepted = self._multidoc_want(changes["kubernetes"])
            texts[index] = self._surgical(
                index, docs[index], lambda t: caedit.edit_kube_ca_document(t, issuing, accepted), dump_yaml_literal
            )
        texts = [t if t.endswith("\n") or i == len(texts) - 1 else t + "\n" for i, t in enumerate(texts)]
        new = object.__new__(MachineConfig)
        new.data = "".join(texts).encode("utf-8")
        new.source, new.digest = self.source, digest(new.data)
        new._texts, new._docs, new._v1 = texts, docs, self._v1
        return new

    def _surgical(self, index: int, doc: Any, edit: Callable[[str], str], dump: Any) -> str:
        """The document's text with only its CA fields edited in place (caedit), checked by parsing it
        back once (safeyaml.parse: the limits cannot newly fail, a duplicate key could): it must mean
        exactly `doc`. A shape the in-place editor does not handle (a flow-style section, say) is
        re-encoded whole instead, which keeps the meaning but not the layout.

        The edit composes the text it starts from for positions, again, rather than keeping each
        config's node tree from its read: a tree is ~5 Python objects per value, and holding one for
        each of 500 configs makes every full garbage collection walk ~250,000 more objects, which
        costs more than composing a 10 KB document (~0.2 ms with libyaml)."""
        try:
            text = edit(self._texts[index])
            if _without_empty_ca(safeyaml.parse(text, checked=False).data) == _without_empty_ca(doc):
                return text
            log.debug("%s: in-place CA edit did not round-trip; re-encoding the document", self.source)
        except (yamledit.Unsupported, yaml.YAMLError) as exc:
            log.debug("%s: CA fields not editable in place (%s); re-encoding the document", self.source, exc)
        return self._encode(index, doc, dump)

    def _multidoc_want(self, fields: CAFields) -> tuple[tuple[bytes, bytes | None] | None, tuple[bytes, ...]]:
        """issuingCA and acceptedCAs of the KubeAPIServerCAConfig document for these fields (the
        layout rules of _multidoc_doc)."""
        index = self._kube_doc
        assert index is not None
        had_issuer = bool((self._docs[index].get("issuingCA") or {}).get("cert"))
        if fields.issuer is None:
            return None, fields.accepted
        if self.role == "worker" and not had_issuer:
            return None, (fields.issuer, *fields.accepted)
        return (fields.issuer, fields.issuer_key), fields.accepted

    def _encode(self, index: int, doc: Any, dump: Any) -> str:
        text: str = dump(doc)
        if index > 0 or self._texts[0].startswith("---"):
            text = "---\n" + text
        return text

    def _legacy_doc(self, changes: dict[str, CAFields]) -> dict[str, Any]:
        # copy on write: only the edited sections are new dicts (configs are never changed in place,
        # so the rest can be shared with this config; a deep copy was ~2 ms a write)
        doc = dict(self.v1alpha1)
        for pki_name, fields in sorted(changes.items()):
            section, _ = FIELDS[pki_name]
            sec = doc[section] = dict(doc.get(section) or {})
            ca: dict[str, str] = {}
            if fields.issuer is not None:
                ca["crt"] = pki.b64encode_pem(fields.issuer)
                ca["key"] = pki.b64encode_pem(fields.issuer_key) if fields.issuer_key else ""
            if ca:
                sec["ca"] = ca
            else:
                sec.pop("ca", None)
            if fields.accepted:
                sec["acceptedCAs"] = [{"crt": pki.b64encode_pem(p)} for p in fields.accepted]
            else:
                sec.pop("acceptedCAs", None)
        return doc

    def _multidoc_doc(self, fields: CAFields) -> dict[str, Any]:
        index = self._kube_doc
        assert index is not None
        doc: dict[str, Any] = copy.deepcopy(self._docs[index])
        had_issuer = bool((doc.get("issuingCA") or {}).get("cert"))
        accepted = [p.decode("utf-8") for p in fields.accepted]
        if fields.issuer is None:
            doc.pop("issuingCA", None)
        elif self.role == "worker" and not had_issuer:
            # talosctl's layout for workers: no issuingCA, the issuer first in acceptedCAs
            doc.pop("issuingCA", None)
            accepted.insert(0, fields.issuer.decode("utf-8"))
        else:
            issuing = {"cert": fields.issuer.decode("utf-8")}
            if fields.issuer_key:
                issuing["key"] = fields.issuer_key.decode("utf-8")
            doc["issuingCA"] = issuing
        if accepted:
            doc["acceptedCAs"] = accepted
        else:
            doc.pop("acceptedCAs", None)
        return doc


def kind_fields(cfg: MachineConfig, kind: PKI) -> kubecreds.KindFields:
    """A control-plane-only kind's fields (aggregator, serviceaccount, encryption: either layout; etcd:
    its v1alpha1 field)."""
    return kubecreds.read(cfg.documents, cfg.v1alpha1, kind, cfg.source)


def with_kind_fields(cfg: MachineConfig, changes: dict[PKI, kubecreds.KindFields]) -> MachineConfig:
    """A new config with these kinds' fields: a kind in its 1.14 document gets that document
    re-encoded; a legacy value asked for in layout "document" is moved into a new document (and
    dropped from the v1alpha1 document, which is then re-encoded). Every other document keeps its
    bytes."""
    texts, docs = list(cfg._texts), list(cfg._docs)
    appended: list[str] = []
    for kind, fields in changes.items():
        now = kind_fields(cfg, kind)
        if now.layout == "document":
            name = kubecreds.DOC_KINDS[kind]
            index = next(i for i, d in enumerate(docs) if isinstance(d, dict) and d.get("kind") == name)
            docs[index] = kubecreds.write(docs[index], kind, fields)
            texts[index] = cfg._encode(index, docs[index], dump_yaml_literal)
        elif now.layout == "field" and kind == "etcd":  # cluster.etcd.ca: issuer first, then the others
            assert fields.issuer is not None and fields.issuer.secret is not None
            doc = copy.deepcopy(docs[cfg._v1])
            etcdca.write(doc, fields.issuer.public, fields.issuer.secret, [m.public for m in fields.accepted])
            docs[cfg._v1] = doc
            texts[cfg._v1] = cfg._encode(cfg._v1, doc, dump_yaml)
        elif now.layout == "legacy" and fields.layout == "legacy":  # replaced in place (disruptive)
            docs[cfg._v1] = kubecreds.write_legacy(docs[cfg._v1], kind, fields)
            texts[cfg._v1] = cfg._encode(cfg._v1, docs[cfg._v1], dump_yaml)
        elif now.layout == "legacy" and fields.layout == "document":
            docs[cfg._v1], new_doc = kubecreds.moved(docs[cfg._v1], kind, fields)
            texts[cfg._v1] = cfg._encode(cfg._v1, docs[cfg._v1], dump_yaml)
            appended.append("---\n" + dump_yaml_literal(new_doc))
        else:
            where = kubecreds.LEGACY_PATHS[kind]
            raise InputError(cfg.source, f"cannot write {kind} in the {now.layout} layout", path=where)
    texts = [t if t.endswith("\n") else t + "\n" for t in texts] + appended
    return MachineConfig("".join(texts).encode("utf-8"), cfg.source)


def _without_empty_ca(doc: Any) -> Any:
    """`doc` with empty CA keys dropped: `acceptedCAs: []`, `acceptedCAs:` and no key mean the same."""
    if not isinstance(doc, dict):
        return doc
    out = {k: v for k, v in doc.items() if not (k in ("acceptedCAs", "issuingCA") and not v)}
    for section in ("machine", "cluster"):
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if not (k in ("ca", "acceptedCAs") and not v)}
    return out


def parse(data: bytes, source: str) -> MachineConfig:
    return MachineConfig(data, source)

"""What apply writes for people once the new CA is proven (after the swap gate, before the remove
phase): talosconfig, kubeconfig, secrets.yaml. The engine writes every output through this module.

Each file holds a private key and is written atomically with mode 0600; the file it replaces is kept
as `<name>.backup` (0600), so a credential that worked before the run is never lost.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any, assert_never

import yaml

from trustplan.errors import InputError
from trustplan.planner.model import PKI
from trustplan.system import safeyaml
from trustplan.system.atomic import replace_with_backup
from trustplan.system.safeio import read_regular
from trustplan.talos import caedit, certgen, kubecreds, pki, yamledit
from trustplan.talos.clientconfig import kube_context, read_client_config, talosconfig_yaml
from trustplan.talos.machineconfig import dump_yaml, load_yaml


def merge_kubeconfig(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Replace or add the new cluster, user and context by name; keep everything else."""
    merged = dict(existing)
    for section in ("clusters", "users", "contexts"):
        names = {n["name"] for n in new[section]}
        items = [i for i in (existing.get(section) or []) if not (isinstance(i, dict) and i.get("name") in names)]
        merged[section] = items + new[section]
    merged["current-context"] = new["current-context"]
    merged.setdefault("apiVersion", "v1")
    merged.setdefault("kind", "Config")
    return merged


def write_kubeconfig(path: Path, document: dict[str, Any], merge: bool = False) -> None:
    if merge and path.exists():
        try:
            existing = read_client_config(path, what="kubeconfig to merge into") or {}
        except yaml.YAMLError as exc:
            problem, line = safeyaml.problem(exc)
            raise InputError(str(path), f"cannot merge into it: {problem}", line=line) from None
        if not isinstance(existing, dict) or not all(
            isinstance(existing.get(k) or [], list) for k in ("clusters", "users", "contexts")
        ):
            raise InputError(str(path), "cannot merge into it: not a kubeconfig (clusters, users, contexts lists)")
        document = merge_kubeconfig(existing, document)
    replace_with_backup(path, dump_yaml(document).encode())


def write_talosconfig(
    path: Path, *, context: str, endpoints: list[str], ca_pem: bytes, crt_pem: bytes, key_pem: bytes
) -> Path:
    """A single-context talosconfig (as `talosctl rotate-ca` writes it), atomically with mode 0600;
    the file it replaces, if different, is kept as `<name>.backup` (0600)."""
    replace_with_backup(path, talosconfig_yaml(context, endpoints, ca_pem, crt_pem, key_pem))
    return path


def trust_also(path: Path, ca_pem: bytes, *, context: str | None = None, cluster: str | None = None) -> bool:
    """Add a CA to what a talosconfig (`context`) or kubeconfig (the `admin@<cluster>` context, else
    the current one) trusts for server certificates, keeping everything else. Done before a swap
    phase, so the credential on disk keeps working while nodes switch to certificates from the new
    CA and until the new credential is written. False when the file is absent, unreadable, or
    already trusts the CA."""
    try:
        doc = read_client_config(path, what="credential file")
    except (InputError, yaml.YAMLError):
        return False
    if not isinstance(doc, dict):
        return False
    fp = pki.CACert.from_pem(ca_pem).fingerprint
    try:
        if context is not None or "contexts" in doc and isinstance(doc.get("contexts"), dict):
            entry = doc["contexts"][context or doc["context"]]
            key = "ca"
        else:
            used = kube_context(doc, cluster=cluster)
            if used is None:
                return False
            entry, key = used.cluster, "certificate-authority-data"
        bundle = pki.b64decode_pem(entry[key], str(path), key)
        if fp in pki.bundle_fingerprints(bundle):
            return False
        entry[key] = pki.b64encode_pem(pki.pem_bundle([bundle, ca_pem]))
    except (KeyError, TypeError, StopIteration, AttributeError, InputError):
        return False
    replace_with_backup(path, dump_yaml(doc).encode())
    return True


def admin_credentials(ca: pki.CACert, key: pki.PrivateKey, pki_name: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """An admin client cert for the PKI (os:admin for Talos, system:masters for Kubernetes): PEMs."""
    if pki_name == "talos":
        cert, ckey = certgen.issue_client_cert(ca.cert, key, "os:admin", now)
        return pki.cert_to_pem(cert), pki.key_to_pem(ckey)
    cert, ckey = certgen.issue_client_cert(ca.cert, key, "system:masters", now, common_name="admin")
    return pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(ckey)


def update_secrets(
    path: Path, updates: dict[str, tuple[bytes, bytes]], kinds: dict[PKI, kubecreds.Material] | None = None
) -> None:
    """Set certs.os / certs.k8s in a Talos secrets.yaml to the new CA (cert and key PEMs), and the
    control-plane-only kinds' fields (`kinds`): certs.k8saggregator, certs.k8sserviceaccount.key,
    secrets.secretboxencryptionsecret, certs.etcd (the names of Talos's secrets.Bundle, generate/secrets)."""
    doc = read_secrets(path)
    text = read_regular(path, what="secrets file").decode()
    for key, (crt, k) in updates.items():
        doc["certs"][key] = {"crt": pki.b64encode_pem(crt), "key": pki.b64encode_pem(k)}
    for kind, m in (kinds or {}).items():
        assert m.secret is not None
        match kind:
            case "aggregator":
                doc["certs"]["k8saggregator"] = {"crt": pki.b64encode_pem(m.public), "key": pki.b64encode_pem(m.secret)}
            case "serviceaccount":
                doc["certs"]["k8sserviceaccount"] = {"key": pki.b64encode_pem(m.secret)}
            case "encryption":
                doc.setdefault("secrets", {})["secretboxencryptionsecret"] = base64.b64encode(m.secret).decode()
            case "etcd":
                doc["certs"]["etcd"] = {"crt": pki.b64encode_pem(m.public), "key": pki.b64encode_pem(m.secret)}
            case "talos" | "kubernetes":
                raise ValueError(kind)
            case _:
                assert_never(kind)
    mode = os.stat(path).st_mode & 0o777
    new = dump_yaml(doc) if kinds else _secrets_text(text, doc, updates)
    replace_with_backup(path, new.encode(), mode=mode & 0o600 or 0o600)


def read_secrets(path: Path) -> dict[str, Any]:
    """A Talos secrets bundle (a mapping with a `certs` mapping); InputError otherwise."""
    try:
        doc = load_yaml(read_regular(path, what="secrets file"))
    except yaml.YAMLError as exc:
        problem, line = safeyaml.problem(exc)
        raise InputError(str(path), problem, line=line) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("certs"), dict):
        raise InputError(str(path), "not a Talos secrets bundle (no 'certs' mapping)", path="certs")
    return doc


def _secrets_text(text: str, doc: dict[str, Any], updates: dict[str, tuple[bytes, bytes]]) -> str:
    """The new secrets.yaml: only the changed CA lines edited in place (a file kept in git stays
    reviewable), checked to mean `doc`; re-encoded when its shape is not editable in place."""
    try:
        edited = caedit.edit_secrets(text, updates)
        if load_yaml(edited) == doc:
            return edited
    except (yamledit.Unsupported, yaml.YAMLError):
        pass
    return dump_yaml(doc)

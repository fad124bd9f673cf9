"""The Talos validation rules a CA rotation can break (docs/talos-model.md: validation): what Talos itself
refuses in ApplyConfiguration, checked on the v1alpha1 document and, for the Talos 1.14 layout, the
KubeAPIServerCAConfig document. An empty list means the config passes.
"""

from __future__ import annotations

import base64

from trustplan.errors import InputError
from trustplan.talos import pki
from trustplan.talos.machineconfig import BOTH_LAYOUTS, KUBE_CA_DOC_KIND, MachineConfig


def validate(cfg: MachineConfig) -> list[str]:
    """What Talos would refuse in `cfg`, one sentence per broken rule."""
    errors: list[str] = []
    machine = cfg.v1alpha1.get("machine") or {}
    cluster = cfg.v1alpha1.get("cluster") or {}
    role = cfg.role
    try:
        multidoc = cfg.kube_ca_layout == "multidoc"
    except InputError:
        errors.append(BOTH_LAYOUTS)
        multidoc = False
    for section, label, name in ((machine, "machine", "Talos API"), (cluster, "cluster", "Kubernetes API")):
        if section is cluster and cfg.has_kube_ca_document:
            continue
        ca = section.get("ca") or {}
        if role == "controlplane":
            if (section is machine or ca) and (not ca.get("crt") or not ca.get("key")):
                errors.append(f"{label}.ca: a control plane needs the issuing {name} CA with its key")
        else:
            if ca.get("key"):
                errors.append(f"{label}.ca.key: issuing {name} CA key is not allowed on non-controlplane nodes")
            if section is machine and not ca.get("crt") and not section.get("acceptedCAs"):
                errors.append(f"{label}: a worker needs {label}.ca.crt or {label}.acceptedCAs")
    if not machine.get("ca") and not machine.get("acceptedCAs"):
        errors.append("machine: at least one of machine.ca or machine.acceptedCAs is required")
    for section, label in ((machine, "machine"), (cluster, "cluster")):
        for i, entry in enumerate(section.get("acceptedCAs") or []):
            try:
                pem = base64.b64decode(entry.get("crt", ""), validate=True)
                pki.load_cert_pem(pem, cfg.source)
            except Exception:  # noqa: BLE001 - any failure is a validation failure
                errors.append(f"{label}.acceptedCAs[{i}]: not a base64 PEM certificate")
    if multidoc:
        errors += _validate_kube_doc(cfg)
    return errors


def _validate_kube_doc(cfg: MachineConfig) -> list[str]:
    errors: list[str] = []
    kind = KUBE_CA_DOC_KIND
    doc = next(d for d in cfg.documents if isinstance(d, dict) and d.get("kind") == kind)
    issuing = doc.get("issuingCA") or {}
    accepted = doc.get("acceptedCAs") or []
    if not isinstance(issuing, dict) or not isinstance(accepted, list):
        return [f"{kind}: issuingCA must be a mapping and acceptedCAs a list"]
    if cfg.role == "controlplane":
        if not issuing.get("cert") or not issuing.get("key"):
            errors.append(f"{kind}.issuingCA: a control plane needs the issuing Kubernetes API CA with its key")
    else:
        if issuing.get("key"):
            errors.append(
                f"{kind}.issuingCA.key: issuing Kubernetes API CA key is not allowed on non-controlplane nodes"
            )
        if not issuing.get("cert") and not accepted:
            errors.append(f"{kind}: a worker needs issuingCA.cert or acceptedCAs")
    checks = [("issuingCA.cert", issuing.get("cert"))] if issuing.get("cert") else []
    checks += [(f"acceptedCAs[{i}]", e) for i, e in enumerate(accepted)]
    for path, value in checks:
        try:
            assert isinstance(value, str)
            pki.load_cert_pem(value.encode("utf-8"), cfg.source)
        except Exception:  # noqa: BLE001 - any failure is a validation failure
            errors.append(f"{kind}.{path}: not a PEM certificate")
    return errors

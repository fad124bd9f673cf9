"""Refuse to rotate the Kubernetes CA of the cluster that holds the state backend.

While its Kubernetes CA rotates, a cluster's API server restarts on every control plane and its
serving certificate moves to the new CA: the backend's kubeconfig (which trusts the old CA) stops
reaching it halfway, the Lease cannot be renewed, and the state of the apply that most needs a
record could not be written. trustplan therefore refuses such a plan, at plan time and again at
apply time, before any node changes. The backend is recognised by the CA bundle its kubeconfig
trusts: when that bundle holds a Kubernetes CA the plan touches, it lives in this cluster.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import assert_never

import yaml
from cryptography import x509

from trustplan.errors import InputError, StateError, UnsafePlanError
from trustplan.formats.desired import DesiredState
from trustplan.planner import Plan
from trustplan.planner.ops import AcceptCA, MoveToDocument, RemoveCA, SwapIssuer
from trustplan.system.safeio import read_regular
from trustplan.talos import pki
from trustplan.talos.clientconfig import kube_context, read_client_config


def check_backend_outside(desired: DesiredState, plan: Plan) -> None:
    """UnsafePlanError if the plan edits the Kubernetes PKI of the cluster the state lives in."""
    remote = desired.state_remote
    if remote is None:
        return
    edits = [e for e in plan.edits if e.pki == "kubernetes"]
    if not edits:
        return
    touched = {a.fingerprint for a in plan.authorities if a.pki == "kubernetes"}
    for e in edits:
        match e:
            case AcceptCA(ca=ca) | RemoveCA(ca=ca):
                touched.add(ca)
            case SwapIssuer(new=new, old=old):
                touched |= {new} | ({old} if old else set())
            case MoveToDocument():
                pass
            case _:
                assert_never(e)
    shared = sorted(touched & backend_ca_fingerprints(remote.kubeconfig, remote.context))
    if shared:
        raise UnsafePlanError(
            f"refusing: this plan rotates the Kubernetes CA {pki.short(shared[0])} of the cluster that holds the "
            f"state backend ({remote.namespace}/{remote.name}); its API server restarts and changes its serving "
            "certificate halfway through, so the state could not be written or the lock renewed",
            hint="keep the state in another cluster (a management cluster), or move it to a file for this "
            "rotation: `trustplan state migrate --to trustplan.state.json`",
        )


def backend_ca_fingerprints(kubeconfig: Path | None, context: str | None) -> set[str]:
    """Fingerprints of the CA certificates the backend's kubeconfig trusts for its context."""
    path = kubeconfig or Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube/config")
    try:
        doc = read_client_config(path) or {}
    except (InputError, yaml.YAMLError) as exc:
        raise StateError(f"{path}: cannot read the state backend's kubeconfig ({exc})") from None
    used = kube_context(doc, context)  # the named context, else the current one
    cluster = used.cluster if used is not None else {}
    if cluster.get("certificate-authority-data"):
        bundle = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca_path = Path(cluster["certificate-authority"])
        bundle = read_regular(ca_path if ca_path.is_absolute() else path.parent / ca_path, str(path),
                              "certificate-authority file")
    else:
        return set()
    found = set()
    for pem in pki.split_pem_bundle(bundle):
        try:
            found.add(pki.fingerprint(x509.load_pem_x509_certificate(pem)))
        except ValueError:
            continue
    return found

"""Do the credentials the desired state writes (talosconfig, kubeconfig, secrets.yaml) work against
the live cluster? Plan rewrites every one that does not, even when no node changes, so an operator
is never left with only refused credentials on disk (e.g. after a run killed between remove and the
outputs, or a file restored from an old backup).

    check_outputs(desired, live, now) -> list[OutputCheck]

The check runs on the live configs with Talos's trust rules (the same ones the safety check uses):
a talosconfig works when every node trusts its client cert's issuer and its CA bundle holds the CA
of every node's server cert; a kubeconfig when every control plane's API server trusts its client
cert's issuer and its CA data holds every API server's CA; a secrets.yaml when it holds the issuing
CA of each managed PKI. No key material is read into a message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from trustplan.engine.live import LiveCluster
from trustplan.errors import InputError
from trustplan.formats.desired import DesiredState
from trustplan.formats.outputs import read_secrets
from trustplan.planner import Outputs
from trustplan.talos import pki
from trustplan.talos.clientconfig import kube_context, read_client_config


@dataclass(frozen=True)
class OutputCheck:
    output: str  # "talosconfig" | "kubeconfig" | "secrets"
    path: Path
    problem: str | None  # None: it works on every node

    @property
    def works(self) -> bool:
        return self.problem is None


def check_outputs(desired: DesiredState, live: LiveCluster, now: dt.datetime) -> list[OutputCheck]:
    """Check every configured output of a managed PKI against the live cluster."""
    out: list[OutputCheck] = []
    if "talos" in desired.trust and desired.talosconfig_output is not None:
        out.append(OutputCheck("talosconfig", desired.talosconfig_output, _talosconfig(desired, live, now)))
    if "kubernetes" in desired.trust and desired.kubeconfig_output is not None:
        out.append(OutputCheck("kubeconfig", desired.kubeconfig_output, _kubeconfig(desired, live, now)))
    if desired.secrets is not None and desired.trust:
        out.append(OutputCheck("secrets", desired.secrets, _secrets(desired, live)))
    return out


def planned_outputs(desired: DesiredState, checks: list[OutputCheck]) -> Outputs:
    """The outputs the plan writes: those configured, with the ones that do not work rewritten even
    when no node changes. One function for plan and for apply's recomputation, which must agree."""
    return Outputs(
        talosconfig=desired.talosconfig_output is not None,
        kubeconfig=desired.kubeconfig_output is not None,
        secrets=desired.secrets is not None,
        refresh=tuple(c.output for c in checks if not c.works),
    )


def _issuer(cert: x509.Certificate, live: LiveCluster, pki_name: str) -> str | None:
    return next(
        (fp for fp, c in live.cas.items() if c.pki == pki_name and pki.verify_issued_by(cert, c.ca.cert)), None
    )


def _client_problem(
    cert_pem: bytes, bundle: bytes, source: str, live: LiveCluster, pki_name: str, now: dt.datetime,
    servers: dict[str, frozenset[str]], clients: dict[str, frozenset[str]],
) -> str | None:
    """Why a client cert + CA bundle does not reach every server (`servers`: address -> CAs that
    may have issued its server cert; `clients`: address -> CAs whose client certs it accepts)."""
    cert = pki.load_cert_pem(cert_pem, source)
    if cert.not_valid_after_utc <= now:
        return f"its client certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    issuer = _issuer(cert, live, pki_name)
    if issuer is None:
        return "its client certificate was issued by a CA no node trusts"
    refusing = sorted(a for a, trusted in clients.items() if issuer not in trusted)
    if refusing:
        return f"{len(refusing)} of {len(clients)} nodes refuse its client certificate ({', '.join(refusing)})"
    trusted = set(pki.bundle_fingerprints(bundle, source))
    untrusted = sorted(a for a, issuers in servers.items() if not issuers <= trusted)
    if untrusted:
        return f"its CA bundle does not verify the server certificate of {', '.join(untrusted)}"
    return None


def _talosconfig(desired: DesiredState, live: LiveCluster, now: dt.datetime) -> str | None:
    from trustplan.providers.talos.talosconfig import load_talosconfig

    path = desired.talosconfig_output
    assert path is not None
    if not path.exists():
        return "the file does not exist"
    try:
        # a fresh talosconfig (`endpoints: []`, as talosctl gen config writes it) is checked for its
        # certificates: the endpoints are where it is used from, not what trusts it
        tc = load_talosconfig(path, desired.context if path == desired.talosconfig else None, need_endpoints=False)
    except InputError as exc:
        return f"unusable ({exc})"
    cps = [n for n in live.nodes if n.role == "controlplane"]
    cp_issuers = frozenset(i for n in cps if (i := n.talos.issuer))
    servers = {n.address: frozenset({n.talos.issuer} - {None}) if n.role == "controlplane" else cp_issuers
               for n in live.nodes}
    clients = {n.address: n.talos.trusted for n in live.nodes}
    return _client_problem(tc.crt_pem, tc.ca_pem, str(path), live, "talos", now, servers, clients)  # type: ignore[arg-type]


def _kubeconfig(desired: DesiredState, live: LiveCluster, now: dt.datetime) -> str | None:
    path = desired.kubeconfig_output
    assert path is not None
    if not path.exists():
        return "the file does not exist"
    try:
        used = kube_context(read_client_config(path), cluster=desired.cluster)
        if used is None:
            raise KeyError("context")
        crt = pki.b64decode_pem(used.user["client-certificate-data"], str(path), "client-certificate-data")
        ca = pki.b64decode_pem(used.cluster["certificate-authority-data"], str(path), "certificate-authority-data")
    except (KeyError, TypeError, ValueError, InputError) as exc:
        return f"unusable: no context with an embedded client certificate and CA data ({type(exc).__name__})"
    cps = [n for n in live.nodes if n.role == "controlplane"]
    servers = {n.address: frozenset({n.kubernetes.issuer} - {None}) for n in cps}
    clients = {n.address: n.kubernetes.trusted for n in cps}
    return _client_problem(crt, ca, str(path), live, "kubernetes", now, servers, clients)  # type: ignore[arg-type]


def _secrets(desired: DesiredState, live: LiveCluster) -> str | None:
    """secrets.yaml must hold the CA that issues on the control planes, for each managed PKI, so
    that `talosctl gen config --with-secrets` keeps producing configs the cluster accepts."""
    path = desired.secrets
    assert path is not None
    certs = read_secrets(path)["certs"]  # the safe loader's rules, one clear InputError otherwise
    for pki_name, key in (("talos", "os"), ("kubernetes", "k8s")):
        if pki_name not in desired.trust:
            continue
        issuers = {i for n in live.nodes if n.role == "controlplane" and (i := n.trust(pki_name).issuer)}
        try:
            held = pki.CACert.from_pem(pki.b64decode_pem(certs[key]["crt"], str(path), f"certs.{key}.crt")).fingerprint
        except (KeyError, TypeError, InputError):
            held = None
        if len(issuers) == 1 and held not in issuers:
            return f"certs.{key} is not the {pki_name} CA the control planes issue from"
    return None

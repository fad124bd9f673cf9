"""The client credentials apply wrote, kept next to the state so the next CI run reads them.

    Secret <namespace>/<state name>-credentials   data["talosconfig.age"], data["kubeconfig.age"]:
                                                  each file, age-encrypted to keystore.age.recipients

A rotation revokes the talosconfig CI started with (the one in its secret store); the new one is
written on the runner and would be lost with it. `trustplan state push-credentials` stores what
apply wrote; `trustplan state pull-credentials` writes it back before the next plan or apply. Only
ciphertext is stored: whoever can read Secrets in that namespace (the state's readers) cannot use it
without the age identity that opens the keystore. Every update is a compare-and-swap like the state's.
"""

from __future__ import annotations

import base64
from typing import Any

from trustplan.state.backend import KubernetesStateSpec
from trustplan.state.kubeapi import CALL_TIMEOUT, MANAGED_BY, KubeAPI, api_message, call

from trustplan.errors import StateError

SUFFIX = "-credentials"
KINDS = ("talosconfig", "kubeconfig")


def secret_name(spec: KubernetesStateSpec) -> str:
    return spec.name + SUFFIX


def where(spec: KubernetesStateSpec) -> str:
    return f"kubernetes secret {spec.namespace}/{secret_name(spec)}"


def _read(api: KubeAPI, spec: KubernetesStateSpec) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return call(api, spec, "read the stored credentials", lambda: api.core().read_namespaced_secret(
            secret_name(spec), spec.namespace, _request_timeout=CALL_TIMEOUT))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise StateError(f"{where(spec)}: cannot read it: {api_message(exc)}") from None


def pull(api: KubeAPI, spec: KubernetesStateSpec) -> dict[str, bytes]:
    """The stored (encrypted) files by kind; {} when none were stored yet."""
    secret = _read(api, spec)
    data = (secret.data or {}) if secret is not None else {}
    return {k: base64.b64decode(data[f"{k}.age"]) for k in KINDS if f"{k}.age" in data}


def push(api: KubeAPI, spec: KubernetesStateSpec, sealed: dict[str, bytes], annotations: dict[str, str]) -> None:
    """Store the (encrypted) files by kind, replacing those of the same kind and keeping the others."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    current = _read(api, spec)
    data = dict((current.data or {}) if current is not None else {})
    data.update({f"{k}.age": base64.b64encode(v).decode() for k, v in sealed.items()})
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=secret_name(spec), namespace=spec.namespace, labels=MANAGED_BY, annotations=annotations,
            resource_version=current.metadata.resource_version if current is not None else None,
        ),
        type="Opaque",
        data=data,
    )
    core = api.core()
    try:
        if current is None:
            call(api, spec, "store the credentials", lambda: core.create_namespaced_secret(
                spec.namespace, body, _request_timeout=CALL_TIMEOUT))
        else:
            call(api, spec, "store the credentials", lambda: core.replace_namespaced_secret(
                secret_name(spec), spec.namespace, body, _request_timeout=CALL_TIMEOUT))
    except ApiException as exc:
        raise StateError(f"{where(spec)}: cannot store the credentials: {api_message(exc)}",
                         hint="nothing was stored; run `trustplan state push-credentials` again") from None

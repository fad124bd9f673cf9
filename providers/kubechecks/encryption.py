"""The encryption-at-rest key's storage migration and the check that reads etcd itself (issue 22).

- `rewrite_secrets`: every Secret read through one API server and written back unchanged, so the
  API server stores it again under its current first key (Kubernetes' documented rotation: add the
  key second, move it first, rewrite all Secrets, remove the old key).
- `secret_key_names`: etcd read directly (its v3 JSON gateway, `POST /v3/kv/range` over the prefix
  `/registry/secrets/`, paged), counting the stored Secrets by the key name of their
  `k8s:enc:secretbox:v1:<name>:` prefix (`(identity)` for a value stored unencrypted). etcd is
  reached at a control plane's address:2379 as on Talos, with a client certificate the caller mints
  in memory from the etcd CA of that control plane's live config.
- `all_under`: the check of the gate: every stored Secret is under the given key name.
"""

from __future__ import annotations

import base64
from collections import Counter

from trustplan.providers.base import TLSIdentity
from trustplan.providers.kubechecks.api import CheckFailed, call, context, host
from trustplan.providers.kubechecks.nodes import CALL_TIMEOUT, _Client, describe_error

from trustplan.errors import GateFailedError

SECRETS_PREFIX = b"/registry/secrets/"
ENC_PREFIX = b"k8s:enc:secretbox:v1:"
PLAIN = "(identity)"
PAGE = 500


def secret_key_names(etcd_url: str, ca_bundle: bytes, cert_pem: bytes, key_pem: bytes) -> Counter[str]:
    """How many Secrets etcd stores under each encryption key name (PLAIN: not encrypted)."""
    ctx = context(ca_bundle, cert_pem, key_pem)
    end = SECRETS_PREFIX[:-1] + bytes([SECRETS_PREFIX[-1] + 1])
    start, names = SECRETS_PREFIX, Counter[str]()
    while True:
        body = {"key": _b64(start), "range_end": _b64(end), "limit": PAGE}
        status, doc = call(etcd_url, ctx, "POST", "/v3/kv/range", body)
        if status != 200:
            raise CheckFailed(f"{host(etcd_url)}: etcd range over {SECRETS_PREFIX.decode()}: HTTP {status}")
        kvs = doc.get("kvs") or []
        for kv in kvs:
            value = base64.b64decode(kv.get("value") or "")
            if value.startswith(ENC_PREFIX):
                names[value[len(ENC_PREFIX) :].split(b":", 1)[0].decode(errors="replace")] += 1
            else:
                names[PLAIN] += 1
        if not doc.get("more") or not kvs:
            return names
        start = base64.b64decode(kvs[-1]["key"]) + b"\x00"


def all_under(etcd_url: str, ca_bundle: bytes, cert_pem: bytes, key_pem: bytes, name: str) -> int:
    """Every Secret in etcd is stored under the key `name`; returns how many. Raises CheckFailed
    naming the other key names (or unencrypted values) and how many Secrets each still holds."""
    names = secret_key_names(etcd_url, ca_bundle, cert_pem, key_pem)
    others = {k: v for k, v in names.items() if k != name}
    if others:
        listed = ", ".join(f"{v} under {k}" for k, v in sorted(others.items()))
        raise CheckFailed(f"{host(etcd_url)}: etcd still holds Secrets not under {name}: {listed}")
    return names[name]


def all_decrypt(server: str, admin: TLSIdentity) -> None:
    """Every Secret decrypts on `server`: listing them all answers 200 (kube-apiserver fails the
    whole list with 500 when one value cannot be decrypted by any of its keys)."""
    ctx = context(admin.ca_bundle_pem, admin.cert_pem, admin.key_pem)
    status, doc = call(server, ctx, "GET", "/api/v1/secrets")
    if status != 200:
        message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        raise CheckFailed(f"{host(server)}: listing every Secret failed: HTTP {status} {message[:200]}".rstrip())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rewrite_secrets(server: str, credential: TLSIdentity, call_timeout: float = CALL_TIMEOUT) -> int:
    """Read every Secret through `server` and write it back unchanged, so the API server stores it
    again under its current first encryption key (the storage migration an encryption-key rotation
    needs before the old key is removed). A Secret changed meanwhile (409) is read again and
    rewritten; one deleted meanwhile (404) is skipped. Returns how many were rewritten."""
    from kubernetes.client.exceptions import ApiException

    api = _Client(server, credential, call_timeout)
    try:
        done = 0
        for item in api.core.list_secret_for_all_namespaces(_request_timeout=call_timeout).items or []:
            meta = item.metadata
            assert meta is not None  # the API server names every object it lists
            name, namespace = str(meta.name), str(meta.namespace)
            for _ in range(5):
                try:
                    api.core.replace_namespaced_secret(name, namespace, item, _request_timeout=call_timeout)
                    done += 1
                    break
                except ApiException as exc:
                    if exc.status == 404:
                        break
                    if exc.status != 409:
                        raise GateFailedError(
                            f"{server}: rewriting Secret {namespace}/{name} failed: {describe_error(exc)}"
                        ) from None
                    item = api.core.read_namespaced_secret(name, namespace, _request_timeout=call_timeout)
            else:
                raise GateFailedError(f"{server}: Secret {namespace}/{name} kept changing while it was rewritten")
        return done
    finally:
        api.close()

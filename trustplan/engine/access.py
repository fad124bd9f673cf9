"""How trustplan reaches the cluster: the provider the desired state names, the operator's
credential by fingerprint, and reading every node, falling back to credentials from our own CAs
after a half-done run. Used by plan, apply and status alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import assert_never

from trustplan.engine.authorities import resolve
from trustplan.engine.live import LiveCluster, read_cluster
from trustplan.errors import InputError, NodeUnreachableError, ProviderError
from trustplan.formats.desired import DesiredState
from trustplan.formats.keystore import Keystore
from trustplan.formats.outputs import admin_credentials
from trustplan.planner import Credential
from trustplan.providers.base import Provider, TLSIdentity
from trustplan.talos import pki


def make_provider(desired: DesiredState) -> Provider:
    """The provider the desired state names (the only place that knows the providers by name)."""
    match desired.provider:
        case "files":
            from trustplan.providers.files import FilesProvider

            return FilesProvider(desired.machine_configs)
        case "talos":
            from trustplan.providers.talos.provider import TalosProvider

            assert desired.talosconfig is not None
            return TalosProvider(
                desired.talosconfig, desired.context, list(desired.nodes),
                verify_timeout=desired.rollout.timeout("talos"),
            )
        case _:
            assert_never(desired.provider)


def operator_credential(desired: DesiredState, provider: Provider, live: LiveCluster) -> Credential | None:
    """The talosconfig's client identity by fingerprint (None: the provider takes no credential)."""
    if not provider.capabilities.needs_credential:
        return None
    from trustplan.providers.talos.talosconfig import load_talosconfig

    assert desired.talosconfig is not None
    tc = load_talosconfig(desired.talosconfig, desired.context)
    cert = pki.load_cert_pem(tc.crt_pem, str(desired.talosconfig), "crt")
    issuer = next((fp for fp, c in live.cas.items() if pki.verify_issued_by(cert, c.ca.cert)), None)
    trusted = pki.bundle_fingerprints(tc.ca_pem)
    if issuer is None:
        raise InputError(
            str(desired.talosconfig),
            "the talosconfig's client certificate was not issued by any CA the nodes know",
            path="contexts.*.crt",
        )
    return Credential(issuer, trusted)


def operator_context(desired: DesiredState) -> tuple[str, list[str]]:
    """The talosconfig's context name and endpoints (`host`, or `host:port` off port 50000)."""
    from trustplan.providers.talos.talosconfig import DEFAULT_PORT, load_talosconfig

    assert desired.talosconfig is not None
    tc = load_talosconfig(desired.talosconfig, desired.context)
    return tc.context, [e.host if e.port == DEFAULT_PORT else str(e) for e in tc.endpoints]


async def read_live(
    desired: DesiredState,
    provider: Provider,
    keystore: Keystore,
    managed: tuple[str, ...],
    now: dt.datetime,
    on_read: Callable[[str], None] | None = None,
) -> tuple[LiveCluster, TLSIdentity | None]:
    """Read every node; return the cluster and the credential that worked (None: the talosconfig's).

    After a rotation that died halfway, the talosconfig may no longer verify the nodes' new server
    certificates, or (after a partial remove) be refused. Then read again with the talosconfig's
    cert trusting our own CAs too, and then with an admin cert from the desired issuer: TLS stays
    verified, against CAs whose keys we hold.
    """
    try:
        return await read_cluster(provider, desired.nodes, managed, on_read=on_read), None
    except NodeUnreachableError:
        raise
    except ProviderError as first:
        if not provider.capabilities.needs_credential or "talos" not in desired.trust:
            raise
        for credential in _fallback_credentials(desired, keystore, now):
            try:
                return await read_cluster(provider, desired.nodes, managed, credential), credential
            except NodeUnreachableError:
                raise
            except ProviderError:
                continue
        raise first


def reader_label(desired: DesiredState, reader: TLSIdentity) -> str:
    """What a fallback credential is, for the notes of plan and status (never its key)."""
    from trustplan.providers.talos.talosconfig import load_talosconfig

    assert desired.talosconfig is not None
    tc = load_talosconfig(desired.talosconfig, desired.context)
    if reader.cert_pem == tc.crt_pem:
        how = "its client certificate, trusting the keystore's CAs as well"
    else:
        how = f"an admin certificate minted from the keystore's CA {pki.short(reader.issuer)}"
    return f"{desired.talosconfig} does not work against every node; used {how}"


def _fallback_credentials(desired: DesiredState, keystore: Keystore, now: dt.datetime) -> list[TLSIdentity]:
    from trustplan.providers.talos.talosconfig import load_talosconfig, make_credential

    assert desired.talosconfig is not None
    tc = load_talosconfig(desired.talosconfig, desired.context)
    offline = resolve(desired, keystore, None, now, generate=False)
    ours = [m for m in offline.material.values() if m.pki == "talos"]
    bundle = tc.ca_pem + b"".join(m.ca.pem for m in ours)
    out = [make_credential(tc.crt_pem, tc.key_pem, bundle, source=str(desired.talosconfig))]
    issuer = offline.refs.get(desired.trust["talos"].issuer)
    # an admin cert from each Talos CA we hold a key for, the desired issuer first
    for material in sorted(ours, key=lambda m: m.ca.fingerprint != issuer):
        if material.key is not None:
            crt, key = admin_credentials(material.ca, material.key, "talos", now)
            out.append(make_credential(crt, key, bundle, source="admin certificate"))
    return out

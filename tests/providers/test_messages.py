"""Messages say what happened: a TLS verification failure is a trust failure (unknown authority or
hostname mismatch, and which CAs the client trusted), a timeout is a timeout with its deadline, and
neither is reported as "unreachable"."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import pytest
import yaml
from simharness import run_with_cluster
from trustplan.providers.base import NodeRef
from trustplan.providers.talos import client as talos_client
from trustplan.providers.talos.provider import TalosProvider
from trustplan.providers.talos.talosconfig import load_talosconfig, make_credential
from trustplan.providers.talos.tls import server_context
from trustplan_sim.cluster import SimCluster

from trustplan.errors import NodeTimeoutError, ProviderError
from trustplan.talos import certgen, pki


def test_an_unknown_authority_is_a_trust_failure_naming_the_trusted_cas(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        tc = load_talosconfig(cluster.talosconfig)
        other, _ = certgen.generate_ca("talos", pki.utcnow())
        cred = make_credential(tc.crt_pem, tc.key_pem, pki.cert_to_pem(other))
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs(), retry_timeout=1,
                                 tls_retry_timeout=0.5) as provider:
            with pytest.raises(ProviderError) as info:
                await provider.read(cluster.node_refs()[0], cred)
        message = str(info.value)
        assert "TLS trust failure: unknown authority: the server's certificate was not issued by any CA this " \
               "client trusts" in message
        assert f"the client trusts {pki.short(pki.fingerprint(other))}" in message
        assert "unreachable" not in message and "check that the node is up" not in (info.value.hint or "")
        assert "talosconfig `ca`" in (info.value.hint or "")

    run_with_cluster(scenario, tmp_path, controlplanes=1, workers=0)


def _talosconfig(path: Path, endpoint: str, ca_pem: bytes, crt: bytes, key: bytes) -> Path:
    doc = {"context": "t", "contexts": {"t": {"endpoints": [endpoint], "ca": base64.b64encode(ca_pem).decode(),
                                              "crt": base64.b64encode(crt).decode(),
                                              "key": base64.b64encode(key).decode()}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_certificate_for_another_address_is_a_hostname_mismatch(tmp_path: Path) -> None:
    now = pki.utcnow()
    ca, ca_key = certgen.generate_ca("talos", now)
    server, server_key = certgen.issue_server_cert(ca, ca_key, now, ips=("10.9.9.9",))
    client, client_key = certgen.issue_client_cert(ca, ca_key, "os:admin", now)
    port = _free_port()
    talosconfig = _talosconfig(tmp_path / "talosconfig", f"127.0.0.1:{port}", pki.cert_to_pem(ca),
                               pki.cert_to_pem(client), pki.key_to_pem(client_key))

    async def scenario() -> str:
        ctx = server_context(pki.cert_to_pem(server), pki.key_to_pem(server_key), pki.cert_to_pem(ca))
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port, ssl=ctx)
        try:
            async with TalosProvider(talosconfig, retry_timeout=1, tls_retry_timeout=0.5) as provider:
                with pytest.raises(ProviderError) as info:
                    await provider.read(NodeRef("127.0.0.1", "controlplane"))
            return str(info.value)
        finally:
            listener.close()

    message = asyncio.run(scenario())
    assert "TLS trust failure: hostname mismatch: the server's certificate is not valid for the address dialled" \
        in message
    assert "unreachable" not in message


def test_a_node_that_never_answers_is_a_timeout_with_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(talos_client, "CALL_TIMEOUT", 0.3)
    monkeypatch.setattr("trustplan.providers.talos.provider.CALL_TIMEOUT", 0.3)
    now = pki.utcnow()
    ca, ca_key = certgen.generate_ca("talos", now)
    client, client_key = certgen.issue_client_cert(ca, ca_key, "os:admin", now)
    port = _free_port()
    talosconfig = _talosconfig(tmp_path / "talosconfig", f"127.0.0.1:{port}", pki.cert_to_pem(ca),
                               pki.cert_to_pem(client), pki.key_to_pem(client_key))

    async def scenario() -> NodeTimeoutError:
        held: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accept the connection, never say a word

        listener = await asyncio.start_server(silent, "127.0.0.1", port)
        try:
            async with TalosProvider(talosconfig, retry_timeout=1) as provider:
                with pytest.raises(NodeTimeoutError) as info:
                    await provider.read(NodeRef("127.0.0.1", "controlplane"))
            return info.value
        finally:
            for w in held:
                w.close()
            listener.close()

    error = asyncio.run(scenario())
    assert "timed out: no answer within the 0.3 s deadline of one call (retried for 1 s)" in str(error)
    assert "unreachable" not in str(error)
    assert "nothing answered within the deadline" in (error.hint or "")


def test_kubernetes_gate_errors_name_the_trust_failure_and_the_deadline() -> None:
    import ssl

    from trustplan.providers.kubechecks.nodes import CALL_TIMEOUT, describe_error
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError, SSLError

    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 64, "IP address mismatch, certificate is not valid for '10.0.0.1'"
    assert describe_error(mismatch) == (
        "TLS trust failure: hostname mismatch: the server's certificate is not valid for the address dialled "
        "(IP address mismatch, certificate is not valid for '10.0.0.1')"
    )
    unknown = MaxRetryError(None, "/api/v1/nodes", SSLError(  # type: ignore[arg-type]
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate"))
    assert describe_error(unknown).startswith("TLS trust failure: unknown authority")
    slow = MaxRetryError(None, "/version", ReadTimeoutError(None, "/version", "read timed out"))  # type: ignore[arg-type]
    assert describe_error(slow) == f"timed out: no answer within the {CALL_TIMEOUT:g} s deadline of one call"

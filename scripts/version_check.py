"""Call /machine.MachineService/Version on every simulated node with two talosconfigs.

Uses grpclib and Python's ssl directly (not trustplan's provider), so it checks the cluster the way
any other client would: the first talosconfig (the old one) must be refused by every node, the
second (the new one) accepted by every node. Exit 1 otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import tempfile
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from google.protobuf import empty_pb2
from grpclib.client import Channel
from grpclib.const import Cardinality
from trustplan.providers.talos.proto import machine_pb2


def context_for(talosconfig: Path) -> ssl.SSLContext:
    doc = yaml.safe_load(talosconfig.read_text())
    ctx = doc["contexts"][doc["context"]]
    ca, crt, key = (base64.b64decode(ctx[k]) for k in ("ca", "crt", "key"))
    if b"ED25519 PRIVATE KEY" in key:  # Talos's header for a PKCS#8 body
        der = base64.b64decode(b"".join(key.split(b"\n")[1:-2]))
        key = serialization.load_der_private_key(der, None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.decode())
    with tempfile.TemporaryDirectory(prefix="version-check-") as tmp:  # 0700, removed at once
        fd = os.open(Path(tmp) / "credential.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(crt.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(Path(tmp) / "credential.pem")
    context.set_alpn_protocols(["h2"])
    return context


async def version(address: str, port: int, context: ssl.SSLContext) -> str:
    channel = Channel(address, port, ssl=context)
    try:
        method = "/machine.MachineService/Version"
        async with channel.request(method, Cardinality.UNARY_UNARY, empty_pb2.Empty,
                                   machine_pb2.VersionResponse, timeout=5) as stream:
            await stream.send_message(empty_pb2.Empty(), end=True)
            reply = await stream.recv_message()
            await stream.recv_trailing_metadata()
        return f"accepted ({reply.messages[0].version.tag})"
    except Exception as exc:  # noqa: BLE001 - any failure is a refusal here
        return f"refused ({type(exc).__name__})"
    finally:
        channel.close()


async def main(old: Path, new: Path) -> int:
    nodes = json.loads(Path("sim.json").read_text())["nodes"]
    ok = True
    for label, path, want in (("old", old, "refused"), ("new", new, "accepted")):
        context = context_for(path)
        for node in nodes:
            result = await version(node["address"], node["port"], context)
            print(f"  {label} talosconfig -> {node['name']:<9} {node['address']:<12} {result}")
            ok &= result.startswith(want)
    print("as expected" if ok else "UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]))))

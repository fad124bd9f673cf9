"""Read and write talosctl's client config (`talosconfig`, docs/talos-model.md: talosconfig).

context: <name>
contexts:
  <name>:
    endpoints: [host or host:port, ...]   # port defaults to 50000
    ca:  <base64 of the PEM CA bundle>
    crt: <base64 of the PEM client cert>
    key: <base64 of the PEM client key>   # Ed25519 keys use the `ED25519 PRIVATE KEY` header
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trustplan.providers.base import TLSIdentity
from trustplan.providers.talos.tls import pkcs8_key_pem

from trustplan.errors import InputError
from trustplan.system import safeio, safeyaml
from trustplan.talos import pki

DEFAULT_PORT = 50000


@dataclass(frozen=True)
class Endpoint:
    """One apid endpoint: host (IP or name) and port."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class TalosConfig:
    """One context of a talosconfig, decoded: endpoints and PEM material (exact bytes)."""

    path: Path
    context: str
    endpoints: tuple[Endpoint, ...]
    ca_pem: bytes = field(repr=False)
    crt_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)  # as found in the file (may be `ED25519 PRIVATE KEY`)

    def credential(self) -> TLSIdentity:
        """The talosconfig's own client identity as a provider TLSIdentity (key as PKCS#8 PEM)."""
        return make_credential(self.crt_pem, self.key_pem, self.ca_pem, source=str(self.path))


def make_credential(crt_pem: bytes, key_pem: bytes, ca_bundle_pem: bytes, source: str = "<credential>") -> TLSIdentity:
    """A talos TLSIdentity from PEMs; `issuer` is the bundle CA that signed the cert, if any."""
    cert = pki.load_cert_pem(crt_pem, source, "crt")
    cas = [pki.load_cert_pem(block, source, "ca") for block in pki.split_pem_bundle(ca_bundle_pem)]
    issuer = next((pki.fingerprint(ca) for ca in cas if pki.verify_issued_by(cert, ca)), "")
    return TLSIdentity(
        pki="talos",
        issuer=issuer,
        trusted=tuple(pki.fingerprint(ca) for ca in cas),
        cert_pem=crt_pem,
        key_pem=pkcs8_key_pem(key_pem, source),
        ca_bundle_pem=ca_bundle_pem,
    )


def parse_endpoint(value: str) -> Endpoint:
    """`host`, `host:port`, `[v6]:port`, bare IPv6, or `https://host[:port]` -> Endpoint; ValueError
    for a host that is neither an IP address nor a host name (a NUL or a space, a bad IDNA label)."""
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1].rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return Endpoint(_host(host), _port(port) if port else DEFAULT_PORT)
    if text.count(":") == 1:
        host, port = text.split(":")
        return Endpoint(_host(host), _port(port))
    return Endpoint(_host(text), DEFAULT_PORT)


def _host(host: str) -> str:
    """An IP address, or a host name as DNS (IDNA) can carry it; ValueError otherwise."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not host or any(c.isspace() or not c.isprintable() for c in host) or any(c in host for c in "/?#@[]"):
        raise ValueError(f"{host!r} is not an IP address or a host name")
    try:
        encoded = host.rstrip(".").encode("idna")
        encoded.decode("idna")  # an xn-- label that is not valid punycode fails here
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name (IDNA)") from None
    return host


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def load_talosconfig(path: Path | str, context: str | None = None, *, need_endpoints: bool = True) -> TalosConfig:
    """Read one context (default: the file's `context`) of a talosconfig. Errors name file and path.
    `need_endpoints=False` reads a fresh file (`talosctl gen config` writes `endpoints: []`) too."""
    path = Path(path)
    source = str(path)
    data = safeio.read_regular(path, source, "talosconfig", safeyaml.MAX_BYTES)
    try:
        doc = safeyaml.load(data)
    except yaml.YAMLError as exc:
        problem, line = safeyaml.problem(exc)
        raise InputError(source, problem, line=line) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts"), dict):
        raise InputError(source, "not a talosconfig: no 'contexts' mapping")
    name = context or doc.get("context")
    if not name:
        raise InputError(source, "no current context set and none given", path="context")
    if not isinstance(name, str):
        raise InputError(source, f"the context name must be a string, not {type(name).__name__}", path="context")
    ctx = doc["contexts"].get(name)
    if not isinstance(ctx, dict):
        known = ", ".join(sorted(map(str, doc["contexts"]))) or "none"
        raise InputError(source, f"context {name!r} not found (contexts: {known})", path="contexts")
    base = f"contexts.{name}"
    raw_endpoints = ctx.get("endpoints") or []
    if not isinstance(raw_endpoints, list) or (not raw_endpoints and need_endpoints):
        raise InputError(
            source,
            "no endpoints (talosctl needs at least one control-plane address)",
            path=f"{base}.endpoints",
        )
    try:
        endpoints = tuple(parse_endpoint(str(e)) for e in raw_endpoints)
    except ValueError as exc:
        raise InputError(source, f"bad endpoint in {raw_endpoints!r}: {exc}", path=f"{base}.endpoints") from None
    if ctx.get("auth"):
        raise InputError(
            source,
            "siderov1/basic auth (Omni) is not supported; a client cert is needed",
            path=f"{base}.auth",
        )
    pems = {}
    for key in ("ca", "crt", "key"):
        if not ctx.get(key):
            raise InputError(source, f"missing '{key}'", path=f"{base}.{key}")
        pems[key] = pki.b64decode_pem(ctx[key], source, f"{base}.{key}")
    pki.load_cert_pem(pems["crt"], source, f"{base}.crt")
    pki.load_key_pem(pems["key"], source, f"{base}.key")
    if not pki.split_pem_bundle(pems["ca"]):
        raise InputError(source, "CA bundle holds no certificate", path=f"{base}.ca")
    return TalosConfig(path, str(name), endpoints, pems["ca"], pems["crt"], pems["key"])

"""Real etcd members run the way Talos runs them on its control planes: the judge of an etcd CA rotation.

Talos v1.14.1 (docs/talos-model.md, "The etcd CA") writes `cluster.etcd.ca.crt` verbatim to
/system/secrets/etcd/ca.crt, passes it as both `--trusted-ca-file` and `--peer-trusted-ca-file`, and
issues each member's server, peer and client certificates from the FIRST PEM block of that field and
its key (siderolabs/crypto GetCert: one pem.Decode). This module does the same with the real etcd
server (scripts/peers/etcd.sh builds v3.7.1, the version Talos 1.14 ships) on loopback, one member per
address, on Talos's ports 2379 (client) and 2380 (peer):

    cluster = EtcdCluster.start(workdir, addresses, ca_crt, ca_key)
    cluster.write_pki(member, ca_crt, ca_key)   what a config apply does: new files, etcd keeps running
    cluster.restart(member)                     what a reboot does to etcd: it reads its CA file again
    client = EtcdClient(cluster, ca_bundle, cert_pem, key_pem)
    client.health(member) / status(member) / put(key, value) / get_prefix(prefix)

The HTTP calls go to etcd's gRPC gateway (/v3/...) over TLS 1.3 with a client certificate, verified
against the CA bundle the caller trusts.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan.system import safeio
from trustplan.talos import certgen, pki

VERSION = "v3.7.1"
CLIENT_PORT = 2379
PEER_PORT = 2380
LEAF_VALIDITY = dt.timedelta(hours=87600)  # internal/pkg/etcd/certs.go: NotAfter(now + 87600h)


def binary() -> Path | None:
    """The etcd server to run: $TRUSTPLAN_ETCD, else the one scripts/peers/etcd.sh cached; None if absent."""
    env = os.environ.get("TRUSTPLAN_ETCD")
    if env:
        return Path(env)
    cache = Path(os.environ.get("TRUSTPLAN_PEERS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "trustplan" / "peers")
    path = cache / f"etcd-{VERSION}"
    return path if path.exists() else None


def missing() -> str | None:
    """Why real etcd members cannot run here, or None."""
    if binary() is None:
        return f"etcd {VERSION} is not built: run scripts/peers/etcd.sh (a few minutes, once)"
    return None


def generate_etcd_ca(now: dt.datetime) -> tuple[bytes, bytes]:
    """An etcd CA as Talos's NewEtcdCA makes it (O=etcd, ECDSA P-256, 10 years, CA:true, keyCertSign):
    (crt PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now)
        .not_valid_after(now + certgen.CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return pki.cert_to_pem(cert), pki.key_to_pem(key)


def issuing_certificate(ca_crt: bytes) -> x509.Certificate:
    """The certificate Talos issues from: the first PEM block of `cluster.etcd.ca.crt`, the rest ignored."""
    blocks = pki.split_pem_bundle(ca_crt)
    if not blocks:
        raise ValueError("cluster.etcd.ca.crt holds no PEM certificate")
    return x509.load_pem_x509_certificate(blocks[0])


def issue_leaf(ca_crt: bytes, ca_key: bytes, kind: str, hostname: str, ips: tuple[str, ...],
               now: dt.datetime) -> tuple[bytes, bytes]:
    """One of the leaves Talos's CertificateGenerator (internal/pkg/etcd/certs.go) makes: `server`
    (node IPs + 127.0.0.1, ::1, localhost), `peer` (node IPs), or a client `client:<CN>`; EKU
    serverAuth+clientAuth for server and peer, clientAuth alone for a client; ECDSA P-256."""
    issuer = issuing_certificate(ca_crt)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cn: str
    usages: list[x509.ObjectIdentifier]
    sans_ips: tuple[str, ...]
    dns: tuple[str, ...]
    if kind.startswith("client:"):
        cn, usages, sans_ips, dns = kind.split(":", 1)[1], [ExtendedKeyUsageOID.CLIENT_AUTH], (), ()
    elif kind == "server":
        cn, usages, sans_ips, dns = hostname, both, (*ips, "127.0.0.1", "::1"), (hostname, "localhost")
    elif kind == "peer":
        cn, usages, sans_ips, dns = hostname, both, ips, (hostname,)
    else:
        raise ValueError(f"unknown etcd certificate kind {kind}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now - pki.BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(certgen.authority_key_identifier(issuer), critical=False)
    )
    if sans_ips or dns:
        names: list[x509.GeneralName] = [x509.IPAddress(ip_address(a)) for a in sans_ips]
        names += [x509.DNSName(d) for d in dns]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return pki.cert_to_pem(builder.sign(signer, hashes.SHA256())), pki.key_to_pkcs8_pem(key)


@dataclass
class Member:
    """One control plane's etcd: its name (the node's hostname), address, and directories."""

    name: str
    address: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def client_url(self) -> str:
        return f"https://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.address}:{PEER_PORT}"

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"


@dataclass
class EtcdCluster:
    """N real etcd members with Talos's flags and Talos-made certificates."""

    dir: Path
    members: list[Member] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, addresses: list[str], ca_crt: bytes, ca_key: bytes,
              now: dt.datetime | None = None) -> EtcdCluster:
        """Bootstrap a cluster of len(addresses) members (names cp-1, cp-2, ...), all started together."""
        workdir.mkdir(parents=True, exist_ok=True)
        cluster = cls(workdir)
        for k, address in enumerate(addresses, start=1):
            cluster.members.append(Member(f"cp-{k}", address, workdir / f"cp-{k}"))
        for m in cluster.members:
            cluster.write_pki(m, ca_crt, ca_key, now)
            cluster._spawn(m)
        for m in cluster.members:
            cluster.wait_started(m)
        return cluster

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def write_pki(self, m: Member, ca_crt: bytes, ca_key: bytes, now: dt.datetime | None = None) -> None:
        """What Talos's etcd PKI controller does after a config change: the CA file verbatim, the leaves
        issued again from the first block (the member's server and peer certificates, Talos's own client
        certificate, and kube-apiserver's etcd client certificate). A running etcd reads the new leaves
        at its next handshake and its CA file only when it starts."""
        now = now or pki.utcnow()
        d = m.pki_dir
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {"ca.crt": ca_crt}
        # On loopback a member dials its peers from 127.0.0.1, not from its own address, and etcd checks
        # a peer's certificate against the address it connects from: the one deviation from Talos here.
        for kind, stem, ips in (("server", "server", (m.address,)), ("peer", "peer", (m.address, "127.0.0.1")),
                                ("client:talos", "admin", ()), ("client:kube-apiserver", "kube-apiserver", ())):
            crt, key = issue_leaf(ca_crt, ca_key, kind, m.name, ips, now)
            files[f"{stem}.crt"], files[f"{stem}.key"] = crt, key
        for name, data in files.items():
            tmp = d / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o600)
            tmp.replace(d / name)

    def _args(self, m: Member) -> list[str]:
        bin_path = binary()
        if bin_path is None:
            raise RuntimeError(missing() or "etcd is missing")
        d = m.pki_dir
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            str(bin_path), "--name", m.name, "--data-dir", str(m.dir / "data"),
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--auto-tls=false", "--peer-auto-tls=false",
            "--client-cert-auth=true", f"--cert-file={d / 'server.crt'}", f"--key-file={d / 'server.key'}",
            f"--trusted-ca-file={d / 'ca.crt'}",
            "--peer-client-cert-auth=true", f"--peer-cert-file={d / 'peer.crt'}",
            f"--peer-key-file={d / 'peer.key'}", f"--peer-trusted-ca-file={d / 'ca.crt'}",
            "--tls-min-version=TLS1.3", "--heartbeat-interval=100", "--election-timeout=1000",
        ]

    def _spawn(self, m: Member) -> None:
        log = m.dir / "etcd.log"
        m.dir.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            m.proc = subprocess.Popen(self._args(m), stdout=f, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_die_with_parent)
        m.starts += 1

    def wait_started(self, m: Member, timeout: float = 30) -> None:
        """Return once the member's client port answers TLS (its own admin certificate); RuntimeError if
        the process exits or the timeout passes."""
        client = EtcdClient.from_files(m.pki_dir / "ca.crt", m.pki_dir / "admin.crt", m.pki_dir / "admin.key")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m.proc is not None and m.proc.poll() is not None:
                raise RuntimeError(f"etcd {m.name} exited with {m.proc.returncode}; see {m.dir / 'etcd.log'}")
            if client.health(m):
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd {m.name} not healthy after {timeout}s; see {m.dir / 'etcd.log'}")

    def stop(self, m: Member) -> None:
        _stop(m.proc)
        m.proc = None

    def restart(self, m: Member) -> None:
        """Stop the member and start it again with the files now on disk (Talos: a reboot of the node).
        Returns once it has started; whether it rejoined is for the caller's gate to find out."""
        self.stop(m)
        self._spawn(m)

    def stop_all(self) -> None:
        for m in self.members:
            self.stop(m)


@dataclass(frozen=True)
class EtcdClient:
    """An etcd client over TLS: trusts `ca_bundle`, presents the given client certificate."""

    context: ssl.SSLContext
    timeout: float = 2.0

    @classmethod
    def from_pem(cls, ca_bundle: bytes, cert_pem: bytes, key_pem: bytes, workdir: Path,
                 timeout: float = 2.0) -> EtcdClient:
        workdir.mkdir(parents=True, exist_ok=True)
        crt, key = workdir / f"client-{os.urandom(4).hex()}.crt", workdir / f"client-{os.urandom(4).hex()}.key"
        crt.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        key.chmod(0o600)
        context = _context(ca_bundle, crt, key)
        crt.unlink()
        key.unlink()
        return cls(context, timeout)

    @classmethod
    def from_files(cls, ca: Path, crt: Path, key: Path, timeout: float = 2.0) -> EtcdClient:
        return cls(_context(safeio.read_regular(ca, what="etcd CA file"), crt, key), timeout)

    def call(self, m: Member, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST (GET without a body) to the member's gateway; OSError when refused or unreachable."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(m.client_url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self.context, timeout=self.timeout) as r:
            answer: dict[str, Any] = json.loads(r.read() or b"{}")
            return answer

    def health(self, m: Member) -> bool:
        """etcd's /health: true when the member answers over TLS and sees a leader (quorum)."""
        try:
            return self.call(m, "/health").get("health") == "true"
        except (OSError, ValueError):
            return False

    def status(self, m: Member) -> dict[str, int]:
        """Maintenance.Status: member id, leader id, revision, raft index."""
        s = self.call(m, "/v3/maintenance/status", {})
        header = s.get("header", {})
        return {"member": int(header.get("member_id", 0)), "leader": int(s.get("leader", 0)),
                "revision": int(header.get("revision", 0)), "raft_index": int(s.get("raftIndex", 0))}

    def member_count(self, m: Member) -> int:
        return len(self.call(m, "/v3/cluster/member/list", {}).get("members", []))

    def put(self, m: Member, key: str, value: str) -> int:
        """Put; returns the revision etcd acknowledged."""
        r = self.call(m, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(r.get("header", {}).get("revision", 0))

    def get_prefix(self, m: Member, prefix: str) -> dict[str, str]:
        """Every key under prefix (a linearizable read) and its value."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self.call(m, "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in r.get("kvs", [])}

    def refused(self, m: Member) -> bool:
        """True when the member refuses this client at the TLS handshake or answers no call."""
        try:
            self.call(m, "/v3/maintenance/status", {})
        except (urllib.error.URLError, ssl.SSLError, OSError):
            return True
        return False


def served_certificate(m: Member) -> x509.Certificate:
    """The server certificate the member presents now (a fresh handshake, unverified: for inspection)."""
    pem = ssl.get_server_certificate((m.address, CLIENT_PORT), timeout=2)
    return x509.load_pem_x509_certificate(pem.encode())


def _context(ca_bundle: bytes, crt: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_bundle.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(crt, key)
    return context


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _die_with_parent() -> None:
    """In the child: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG), so no etcd outlives a
    killed test."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

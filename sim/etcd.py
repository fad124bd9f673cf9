"""Real etcd members behind the simulated control planes (`trustplan sim up --k8s real`).

Each control plane runs one etcd member on its own loopback address, client port 2379 and peer port
2380 as on Talos, clustered with peer TLS. Everything comes from that node's machine config, made the
way Talos v1.14.1 makes it (docs/talos-model.md, "etcd"):

- the CA file is `cluster.etcd.ca.crt` written verbatim (internal/app/machined/pkg/controllers/etcd/
  pki.go), used as both `--trusted-ca-file` and `--peer-trusted-ca-file`
  (internal/app/machined/pkg/system/services/etcd.go);
- the peer and server certificates are issued by the first certificate of `cluster.etcd.ca` with its
  key (siderolabs/crypto `NewCertificateAuthorityFromCertificateAndKey` reads the first PEM block),
  CN = hostname, DNS = hostname, IP = the node's address (server: also 127.0.0.1, ::1, localhost),
  key usage digitalSignature|keyEncipherment, extended key usage serverAuth+clientAuth, 87600 h
  (internal/pkg/etcd/certs.go); kube-apiserver's client certificate has only clientAuth and CN
  kube-apiserver.

    member = EtcdMember(node_name, hostname, address, workdir, binary)
    member.write_pki(ca_crt, ca_key)         # files into workdir/pki
    await member.start(initial_cluster)      # spawn; await member.wait_healthy()
    await member.restart()                   # as machined restarts the etcd service

The binary is `--etcd PATH`, else the newest etcd in the peers cache (~/.cache/trustplan/peers/etcd-*),
else `etcd` on PATH (Debian's etcd-server 3.4.23).
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import logging
import os
import shutil
import signal
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustplan.errors import TrustplanError
from trustplan.talos import certgen, kubecreds, pki

log = logging.getLogger("trustplan.sim.real")


class PeerError(TrustplanError):
    """A real peer process (etcd, kube-apiserver) exited or did not become ready; names its log."""

CLIENT_PORT = 2379
PEER_PORT = 2380
#: internal/pkg/etcd/certs.go: x509.NotAfter(time.Now().Add(87600 * time.Hour))
LEAF_VALIDITY = dt.timedelta(hours=87600)


def peers_cache() -> Path:
    """~/.cache/trustplan/peers (or $TRUSTPLAN_PEERS): where the real peers are built once per machine."""
    env = os.environ.get("TRUSTPLAN_PEERS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trustplan" / "peers"


def find_etcd(explicit: str | None = None) -> str | None:
    """The etcd binary to run: `explicit`, else the newest etcd-v* in the peers cache, else PATH."""
    if explicit:
        return explicit
    built = sorted(peers_cache().glob("etcd-v*"), key=lambda p: _version_key(p.name))
    built = [p for p in built if p.is_file() and os.access(p, os.X_OK) and not p.name.endswith(".partial")]
    if built:
        return str(built[-1])
    return shutil.which("etcd")


def _version_key(name: str) -> tuple[int, ...]:
    digits = name.split("-v", 1)[-1].split(".")
    return tuple(int(d) if d.isdigit() else 0 for d in digits)


def first_ca(ca_crt: bytes, ca_key: bytes, source: str) -> tuple[x509.Certificate, pki.PrivateKey]:
    """The CA that signs leaves: the first certificate of the (maybe bundled) PEM, and its key."""
    first = pki.split_pem_bundle(ca_crt)[0] if b"-----BEGIN" in ca_crt else ca_crt
    return pki.load_cert_pem(first, source), pki.load_key_pem(ca_key, source)


def _leaf_key(ca_key: pki.PrivateKey) -> pki.PrivateKey:
    """siderolabs/crypto NewKeyPair: the leaf's key type follows the CA's signature algorithm."""
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(ca_key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return ec.generate_private_key(ec.SECP256R1())


def generate_etcd_ca(now: dt.datetime) -> tuple[bytes, bytes]:
    """A new etcd CA as Talos's NewEtcdCA makes it (ECDSA P-256, O=etcd, 10 years), made by trustplan's
    own generator (trustplan.talos.kubecreds.generate): (cert PEM, key PEM)."""
    m = kubecreds.generate("etcd", None, now, certgen.CA_VALIDITY)
    assert m.secret is not None
    return m.public, m.secret


def issue_leaf(
    ca: tuple[x509.Certificate, pki.PrivateKey],
    *,
    common_name: str,
    organization: str | None = None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = True,
    key_encipherment: bool = True,
    validity: dt.timedelta = LEAF_VALIDITY,
) -> tuple[bytes, bytes]:
    """A leaf as siderolabs/crypto NewKeyPair issues it; (cert PEM, PKCS#8 key PEM)."""
    ca_cert, ca_key = ca
    key = _leaf_key(ca_key)
    now = dt.datetime.now(dt.UTC)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, key_encipherment, False, False, False, False, False, False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(certgen.authority_key_identifier(ca_cert), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    sign_hash = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(ca_key, sign_hash)
    return pki.cert_to_pem(cert), pki.key_to_pkcs8_pem(key)


def write_secret(path: Path, data: bytes) -> None:
    """A file only this user reads (keys and certs of the simulated node), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def die_with_parent() -> None:
    """In the child: SIGKILL when the simulator dies, even by SIGKILL (Linux PR_SET_PDEATHSIG), so a
    killed simulator leaves no etcd or kube-apiserver behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


async def spawn(args: list[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start a peer process in its own session, its output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with log_path.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )


async def terminate(proc: asyncio.subprocess.Process | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; returns once the process is gone."""
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def https_ok(url: str, ca: Path, cert: Path | None = None, key: Path | None = None, timeout: float = 2) -> bool:
    """GET `url` over verified TLS (optionally with a client cert): True on HTTP 200."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


@dataclass
class EtcdMember:
    """One control plane's etcd member: its PKI files, data directory and process."""

    name: str
    hostname: str
    address: str
    dir: Path
    binary: str
    proc: asyncio.subprocess.Process | None = None
    #: what the PKI files were made from (CA cert, CA key, hostname, address)
    made_from: tuple[bytes, bytes, str, str] | None = None
    restarts: list[float] = field(default_factory=list)
    #: --initial-cluster of the last start
    initial: str = ""
    #: kube-apiserver's etcd client cert and key (PEM), issued with the member's PKI
    apiserver_client: tuple[bytes, bytes] = (b"", b"")

    @property
    def client_url(self) -> str:
        return f"https://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.address}:{PEER_PORT}"

    def pki_path(self, name: str) -> Path:
        return self.dir / "pki" / name

    def write_pki(self, ca_crt: bytes, ca_key: bytes) -> bool:
        """Write the CA verbatim and issue peer, server and kube-apiserver client certs from it.
        Returns whether anything changed (False: same CA and names as the files already hold)."""
        made_from = (ca_crt, ca_key, self.hostname, self.address)
        if made_from == self.made_from:
            return False
        ca = first_ca(ca_crt, ca_key, f"{self.name}: cluster.etcd.ca")
        write_secret(self.pki_path("ca.crt"), ca_crt)
        # 127.0.0.1 as well: a peer dials from 127.0.0.1 (the kernel's source for 127.x.y.z), and
        # etcd checks a peer's client cert against the address it dialled from; on Talos that is
        # the node's own address
        peer = issue_leaf(ca, common_name=self.hostname, dns=(self.hostname,), ips=(self.address, "127.0.0.1"))
        srv = issue_leaf(ca, common_name=self.hostname, dns=(self.hostname, "localhost"),
                         ips=(self.address, "127.0.0.1", "::1"))
        apiserver = issue_leaf(ca, common_name="kube-apiserver", server=False)
        self.apiserver_client = apiserver
        for stem, (crt, key) in (("peer", peer), ("server", srv), ("apiserver-client", apiserver)):
            write_secret(self.pki_path(f"{stem}.crt"), crt)
            write_secret(self.pki_path(f"{stem}.key"), key)
        self.made_from = made_from
        return True

    def args(self, initial_cluster: str) -> list[str]:
        """The etcd command line (the flags Talos's etcd service sets that matter here)."""
        p = self.pki_path
        return [
            self.binary, f"--name={self.hostname}", f"--data-dir={self.dir / 'data'}",
            f"--listen-client-urls={self.client_url}", f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}", "--initial-cluster-state=new",
            "--initial-cluster-token=trustplan-sim",
            f"--cert-file={p('server.crt')}", f"--key-file={p('server.key')}",
            f"--trusted-ca-file={p('ca.crt')}", "--client-cert-auth=true",
            f"--peer-cert-file={p('peer.crt')}", f"--peer-key-file={p('peer.key')}",
            f"--peer-trusted-ca-file={p('ca.crt')}", "--peer-client-cert-auth=true",
            "--listen-metrics-urls=", "--logger=zap",
        ]

    async def start(self, initial_cluster: str) -> None:
        """Spawn the member (no-op when it runs). It is healthy once a quorum of members runs."""
        if self.proc is not None and self.proc.returncode is None:
            return
        (self.dir / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.initial = initial_cluster
        self.proc = await spawn(self.args(initial_cluster), self.dir / "etcd.log")

    def healthy(self) -> bool:
        p = self.pki_path
        return https_ok(f"{self.client_url}/health", p("ca.crt"), p("apiserver-client.crt"),
                        p("apiserver-client.key"))

    async def wait_healthy(self, timeout: float = 60) -> None:
        """Return once /health answers 200 (PeerError if etcd exits or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                code = None if self.proc is None else self.proc.returncode
                raise PeerError(f"{self.name}: etcd exited ({code}); see {self.dir / 'etcd.log'}",
                                hint=f"another simulator on {self.address} holds ports {CLIENT_PORT}/{PEER_PORT}? "
                                "pick another --subnet")
            if await asyncio.to_thread(self.healthy):
                return
            await asyncio.sleep(0.2)
        raise PeerError(f"{self.name}: etcd not healthy after {timeout:g}s; see {self.dir / 'etcd.log'}")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        await terminate(proc)

    async def restart(self) -> float:
        """Stop and start again with the current PKI files and data; the seconds until healthy
        (a lone restarted member of a cluster that lost quorum waits for its peers)."""
        started = time.monotonic()
        await self.stop()
        await self.start(self.initial)
        await self.wait_healthy()
        took = time.monotonic() - started
        self.restarts.append(took)
        log.info("%s: etcd restarted in %.1fs", self.name, took)
        return took


def initial_cluster(members: list[EtcdMember]) -> str:
    """--initial-cluster: every member's name=peer URL."""
    return ",".join(f"{m.hostname}={m.peer_url}" for m in members)

"""A real kube-apiserver (built by scripts/peers/kube-apiserver.sh) backed by Debian's etcd, on
loopback with certificates generated here: what the kubernetes state backend and gate tests run on.

    api = KubeAPIServer.start(workdir)   etcd + kube-apiserver, ready; api.kubeconfig is a file
    api.restart()                         stop kube-apiserver and start it again on the same port
    api.stop()                            stop both, keep nothing running
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustplan.talos import certgen, pki

REPO = Path(__file__).resolve().parents[1]
VERSION = "v1.34.4"


def binary() -> Path | None:
    """The cached kube-apiserver, or $TRUSTPLAN_KUBE_APISERVER; None if it was never built here."""
    env = os.environ.get("TRUSTPLAN_KUBE_APISERVER")
    if env:
        return Path(env)
    cache = Path(os.environ.get("TRUSTPLAN_PEERS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "trustplan" / "peers")
    path = cache / f"kube-apiserver-{VERSION}"
    return path if path.exists() else None


def missing() -> str | None:
    """Why the real components cannot run here, or None."""
    if binary() is None:
        return f"kube-apiserver {VERSION} is not built: run scripts/peers/kube-apiserver.sh (about 12 min, once)"
    if shutil.which("etcd") is None:
        return "etcd is not installed: apt-get install etcd-server"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class KubeAPIServer:
    dir: Path
    port: int
    etcd_port: int
    ca_pem: bytes
    kubeconfig: Path
    admin_crt: Path
    admin_key: Path
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None
    log: list[Path] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path) -> KubeAPIServer:
        workdir.mkdir(parents=True, exist_ok=True)
        now = pki.utcnow()
        ca, ca_key = certgen.generate_ca("kubernetes", now)
        srv, srv_key = certgen.issue_server_cert(ca, ca_key, now, ips=("127.0.0.1",), dns=("localhost", "kubernetes"))
        adm, adm_key = certgen.issue_client_cert(ca, ca_key, "system:masters", now, common_name="trustplan-test-admin")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": pki.cert_to_pem(ca),
            "ca.key": pki.key_to_pkcs8_pem(ca_key),
            "server.crt": pki.cert_to_pem(srv),
            "server.key": pki.key_to_pkcs8_pem(srv_key),
            "admin.crt": pki.cert_to_pem(adm),
            "admin.key": pki.key_to_pkcs8_pem(adm_key),
            "sa.key": sa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (workdir / name).write_bytes(data)
            (workdir / name).chmod(0o600)
        api = cls(workdir, free_port(), free_port(), files["ca.crt"], workdir / "kubeconfig",
                  workdir / "admin.crt", workdir / "admin.key")
        api.kubeconfig.write_text(yaml.safe_dump(api.kubeconfig_dict()))
        api._start_etcd()
        api._start_apiserver()
        return api

    def kubeconfig_dict(self, ca_bundle: bytes | None = None, context: str = "test") -> dict[str, object]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority-data": b64(ca_bundle or self.ca_pem)}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64(self.admin_crt.read_bytes()),
                "client-key-data": b64(self.admin_key.read_bytes())}}],
            "contexts": [{"name": context, "context": {"cluster": "test", "user": "admin"}}],
            "current-context": context,
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.dir / f"{name}.log"
        self.log.append(log)
        with log.open("ab") as f:
            return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)

    def _start_etcd(self) -> None:
        peer = free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd = self._spawn("etcd", [
            "etcd", "--name", "test", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
        ])
        self._wait(lambda: _http_ok(f"{client}/health"), "etcd", self.etcd)

    def _start_apiserver(self, wait: bool = True) -> None:
        d = self.dir
        bin_path = binary()
        assert bin_path is not None
        self.apiserver = self._spawn("kube-apiserver", [
            str(bin_path),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
            f"--cert-dir={d / 'certs'}",
        ])
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Return once kube-apiserver answers /readyz (RuntimeError if it exits or takes 90 s)."""
        self._wait(self.ready, "kube-apiserver", self.apiserver, timeout=90)

    def ready(self) -> bool:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(self.admin_crt, self.admin_key)
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _wait(self, check: object, what: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.log[-1]}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready after {timeout}s; see {self.log[-1]}")

    def stop_etcd(self) -> None:
        """Stop etcd (the API server keeps running, and fails every call that needs it)."""
        _stop(self.etcd)
        self.etcd = None

    def start_etcd(self) -> None:
        """Start etcd again on its port and data (after stop_etcd); returns once it is healthy."""
        self._start_etcd()

    def stop_apiserver(self) -> None:
        _stop(self.apiserver)
        self.apiserver = None

    def restart(self, wait: bool = True) -> None:
        """Stop kube-apiserver and start it again on the same port. With wait=False this returns
        before it is ready: it takes seconds, during which calls are refused (wait_ready() waits)."""
        self.stop_apiserver()
        self._start_apiserver(wait)

    def stop(self) -> None:
        _stop(self.apiserver)
        _stop(self.etcd)
        self.apiserver = self.etcd = None

    def core(self):  # noqa: ANN201 - a kubernetes CoreV1Api on the admin kubeconfig
        from kubernetes import client, config

        return client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig), persist_config=False))

    def coordination(self):  # noqa: ANN201
        from kubernetes import client, config

        return client.CoordinationV1Api(config.new_client_from_config(str(self.kubeconfig), persist_config=False))


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, even by SIGKILL (no teardown runs then),
    so a killed test run leaves no etcd or kube-apiserver behind (Linux prctl PR_SET_PDEATHSIG)."""
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


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def utc(seconds: float = 0) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


TRUSTPLAN = Path(__import__("sys").executable).with_name("trustplan")


def use_kubernetes_state(desired: Path, api: KubeAPIServer, name: str, extra: str = "") -> None:
    """Point trustplan.yaml's `state:` at a Secret/Lease `name` in the test API server."""
    text = desired.read_text()
    assert "state: trustplan.state.json\n" in text
    block = (f"state: {{backend: kubernetes, kubeconfig: {api.kubeconfig}, namespace: trustplan, "
             f"name: {name}{extra}}}\n")
    desired.write_text(text.replace("state: trustplan.state.json\n", block))


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`trustplan ARGS` in `cwd` as its own process."""
    return subprocess.run([str(TRUSTPLAN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)

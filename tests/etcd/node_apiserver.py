"""A real kube-apiserver (scripts/peers/kube-apiserver.sh) on one control plane of a real etcd cluster,
wired as Talos wires it (controllers/k8s/control_plane_final.go): `--etcd-servers` its own node's member
only, `--etcd-cafile` that node's cluster.etcd.ca.crt verbatim, `--etcd-certfile` the kube-apiserver leaf
issued from the node's field. Talos restarts the pod when those secrets change; `sync()` does that."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubeapi import _die_with_parent, _stop, free_port
from kubeapi import binary as apiserver_binary
from trustplan_sim import etcd_members as em

from trustplan.talos import certgen, pki


@dataclass
class NodeAPIServer:
    dir: Path
    member: em.Member
    port: int
    ca_pem: bytes
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @classmethod
    def start(cls, workdir: Path, member: em.Member) -> NodeAPIServer:
        workdir.mkdir(parents=True, exist_ok=True)
        now = pki.utcnow()
        ca, ca_key = certgen.generate_ca("kubernetes", now)
        srv, srv_key = certgen.issue_server_cert(ca, ca_key, now, ips=("127.0.0.1",), dns=("localhost",))
        adm, adm_key = certgen.issue_client_cert(ca, ca_key, "system:masters", now, common_name="admin")
        sa = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": pki.cert_to_pem(ca), "server.crt": pki.cert_to_pem(srv),
            "server.key": pki.key_to_pkcs8_pem(srv_key), "admin.crt": pki.cert_to_pem(adm),
            "admin.key": pki.key_to_pkcs8_pem(adm_key),
            "sa.key": sa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()),
            "sa.pub": sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for name, data in files.items():
            (workdir / name).write_bytes(data)
            (workdir / name).chmod(0o600)
        api = cls(workdir, member, free_port(), files["ca.crt"])
        api.sync()
        return api

    def sync(self) -> None:
        """Copy the node's etcd secrets as Talos renders them and (re)start kube-apiserver; wait until ready."""
        _stop(self.proc)
        src, d = self.member.pki_dir, self.dir
        shutil.copyfile(src / "ca.crt", d / "etcd-client-ca.crt")
        shutil.copyfile(src / "kube-apiserver.crt", d / "etcd-client.crt")
        shutil.copyfile(src / "kube-apiserver.key", d / "etcd-client.key")
        binary = apiserver_binary()
        assert binary is not None
        with (d / "kube-apiserver.log").open("ab") as log:
            self.proc = subprocess.Popen([
                str(binary), f"--etcd-servers={self.member.client_url}",
                f"--etcd-cafile={d / 'etcd-client-ca.crt'}", f"--etcd-certfile={d / 'etcd-client.crt'}",
                f"--etcd-keyfile={d / 'etcd-client.key'}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
                f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
                f"--client-ca-file={d / 'ca.crt'}", "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
                f"--cert-dir={d / 'certs'}",
            ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.restarts += 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited with {self.proc.returncode}; see {d / 'kube-apiserver.log'}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"kube-apiserver not ready after 120 s; see {d / 'kube-apiserver.log'}")

    def healthy(self) -> bool:
        """/readyz and its etcd check both answer 200 (the admin client certificate, TLS verified)."""
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(self.dir / "admin.crt", self.dir / "admin.key")
        try:
            for path in ("/readyz", "/readyz/etcd"):
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=context, timeout=3) as r:
                    if r.status != 200:
                        return False
        except OSError:
            return False
        return True

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

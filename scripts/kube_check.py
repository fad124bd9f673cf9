"""GET /api/v1/nodes on every simulated control plane with two kubeconfigs, with a plain client.

Uses `curl` when it is installed (else Python's ssl + http.client), not trustplan's code: the first
kubeconfig (the old one) must be refused by every API server, the second (the new one) must list
every node Ready on every API server. Exit 1 otherwise.

usage: kube_check.py OLD_KUBECONFIG NEW_KUBECONFIG SIM_JSON
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml


def files_for(kubeconfig: Path, dir: Path) -> tuple[Path, Path, Path]:
    """ca.pem, crt.pem, key.pem of the kubeconfig's first cluster and user (key mode 0600)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    paths = (dir / "ca.pem", dir / "crt.pem", dir / "key.pem")
    values = (
        doc["clusters"][0]["cluster"]["certificate-authority-data"],
        doc["users"][0]["user"]["client-certificate-data"],
        doc["users"][0]["user"]["client-key-data"],
    )
    for path, value in zip(paths, values, strict=True):
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(value))
    return paths


def get_nodes(url: str, ca: Path, crt: Path, key: Path) -> tuple[bool, str, Any]:
    """(answered, how, NodeList or error text)."""
    if shutil.which("curl"):
        args = ["curl", "-sS", "--fail", "--max-time", "5", "--cacert", ca, "--cert", crt, "--key", key, url]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit {proc.returncode}"
            return False, "curl", first
        return True, "curl", json.loads(proc.stdout)
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(crt), str(key))
    try:
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
        conn.request("GET", "/api/v1/nodes")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, "http.client", f"{type(exc).__name__}: {exc}"
    if response.status != 200:
        return False, "http.client", f"HTTP {response.status}"
    return True, "http.client", json.loads(body)


def _mkdir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


def ready(nodelist: dict[str, Any]) -> dict[str, bool]:
    return {
        item["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in item["status"].get("conditions", [])
        )
        for item in nodelist.get("items", [])
    }


def main() -> int:
    old, new, sim_json = (Path(a) for a in sys.argv[1:4])
    sim = json.loads(sim_json.read_text())
    servers = [f"https://{n['k8s']['address']}:{n['k8s']['port']}" for n in sim["nodes"] if n.get("k8s")]
    total = len(sim["nodes"])
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        new_ca, _, _ = files_for(new, _mkdir(Path(tmp) / "new"))
        old_ca, old_crt, old_key = files_for(old, _mkdir(Path(tmp) / "old"))
        _, new_crt, new_key = files_for(new, Path(tmp) / "new")
        cases = (
            ("old kubeconfig           ", old_ca, old_crt, old_key, False),
            ("old cert, trusting new CA", new_ca, old_crt, old_key, False),
            ("new kubeconfig           ", new_ca, new_crt, new_key, True),
        )
        for label, ca, crt, key, expect in cases:
            for server in servers:
                answered, how, result = get_nodes(f"{server}/api/v1/nodes", ca, crt, key)
                if answered:
                    states = ready(result)
                    n_ready = sum(states.values())
                    line = f"{n_ready}/{total} nodes Ready ({', '.join(sorted(states))})"
                    good = expect and n_ready == total == len(states)
                else:
                    line = f"refused: {result}"
                    good = not expect
                ok &= good
                print(f"  {label}  {server}  [{how}]  {line}  {'ok' if good else 'UNEXPECTED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

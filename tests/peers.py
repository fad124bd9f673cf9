"""Where the tests find a Go-built peer (opa, conftest): on PATH, else in the peer cache that
`scripts/peers/go-install.sh NAME MODULE VERSION` fills (.ci/run and `make peers` run it); and
whether the real Kubernetes peers (kube-apiserver, etcd) are there. A missing one fails under CI=true
and skips elsewhere: a test that skips in CI proves nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")


def tool(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in sorted(CACHE.glob(f"{name}-v*")) if os.access(p, os.X_OK)),
                                       None)
    if found is None:
        message = f"{name} not found on PATH or in {CACHE}: run `make peers` (scripts/peers/go-install.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def need_kubernetes(*also: Path) -> None:
    """kube-apiserver v1.34.4 and etcd, as `--k8s real` runs them (the simulator finds them), and the
    peer binaries `also` names (e.g. a cached talosctl)."""
    from trustplan_sim import etcd, realk8s

    missing = [f"{p.name} at {p} (scripts/peers/)" for p in also if not (p.is_file() and os.access(p, os.X_OK))]
    if realk8s.find_apiserver() is None:
        missing.append("kube-apiserver v1.34.4 (scripts/peers/kube-apiserver.sh)")
    if etcd.find_etcd() is None:
        missing.append("etcd (scripts/peers/etcd.sh, or apt-get install etcd-server)")
    if missing:
        message = "not built/installed here: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)

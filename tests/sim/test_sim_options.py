"""SimOptions (trustplan_sim.options) is the one list of what a simulated cluster is made of: each
bad value is refused with a message naming it, before anything listens, and `trustplan sim up` says
that message as a usage error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from simharness import TRUSTPLAN
from trustplan_sim.cluster import SimCluster
from trustplan_sim.options import SimOptions


@pytest.mark.parametrize(("options", "message"), [
    ({"controlplanes": 0}, "a cluster needs at least one control plane"),
    ({"workers": -1}, "workers cannot be negative"),
    ({"workers": 300}, "subnet 127.20.0.0/24 is too small for 301 nodes"),
    ({"subnet": "10.0.0.0/24"}, "subnet 10.0.0.0/24 is not a loopback network"),
    ({"config_layout": "flat"}, "unknown config layout 'flat'"),
    ({"kubelet_rejoin_ms": -1}, "restart and rejoin times cannot be negative"),
    ({"k8s_mode": "kind"}, "unknown Kubernetes mode 'kind'"),
])
def test_a_bad_option_is_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimOptions(**options)


def test_the_cluster_is_made_of_its_options(tmp_path: Path) -> None:
    options = SimOptions(controlplanes=2, workers=1, subnet="127.99.7.0/24", latency_ms=5, port=50001, k8s=True)
    cluster = SimCluster(tmp_path, options)
    assert [(n.name, n.address, n.port) for n in cluster.nodes] == [
        ("cp-1", "127.99.7.2", 50001), ("cp-2", "127.99.7.3", 50001), ("worker-1", "127.99.7.4", 50001)]
    assert cluster.latency == 0.005 and cluster.k8s and cluster.options is options


def test_sim_up_reports_a_bad_option_as_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([*TRUSTPLAN, "sim", "up", "--dir", str(tmp_path), "--subnet", "10.1.2.0/24"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2 and "subnet 10.1.2.0/24 is not a loopback network" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "sim.json").exists()

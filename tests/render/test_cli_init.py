"""`trustplan init` writes a commented desired state that validates, names the live CAs, and never
overwrites a file without --force."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "examples" / "files"
TRUSTPLAN = str(Path(sys.executable).with_name("trustplan"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    shutil.copytree(FILES / "nodes", tmp_path / "nodes")
    shutil.copy(FILES / "secrets.yaml", tmp_path / "secrets.yaml")
    return tmp_path


def test_init_from_machine_configs_writes_a_valid_commented_file(repo: Path) -> None:
    result = run("init", "--machine-configs", "nodes", cwd=repo)
    assert result.returncode == 0, result.stderr
    text = (repo / "trustplan.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    doc = yaml.safe_load(text)
    assert doc["cluster"]["name"] == "demo"
    assert doc["cluster"]["machineConfigs"]["10.5.0.2"] == "nodes/cp-1.yaml"
    assert doc["cluster"]["nodes"] == {
        "controlplane": ["10.5.0.2", "10.5.0.3", "10.5.0.4"],
        "worker": ["10.5.0.5", "10.5.0.6"],
    }
    assert set(doc["trust"]) == {"talos", "kubernetes", "aggregator", "serviceaccount", "encryption", "etcd"}
    others = ("aggregator", "serviceaccount", "encryption", "etcd")
    assert all(doc["trust"][k]["issuer"].startswith("sha256:") for k in others)
    assert doc["authorities"][doc["trust"]["talos"]["issuer"]] == {"generate": {"algorithm": "ed25519"}}
    assert "#   talos-current: sha256:" in text and "#   k8s-current: sha256:" in text
    assert "PRIVATE KEY" not in text and "LS0tLS1CRUdJTi" not in text  # no key, no base64 PEM
    validated = run("validate", cwd=repo)
    assert validated.returncode == 0, validated.stderr
    planned = run("plan", "--detailed-exitcode", cwd=repo)
    assert planned.returncode == 2, planned.stderr
    assert "2 authorities to create" in planned.stdout


def test_init_names_the_live_cas_by_fingerprint(repo: Path) -> None:
    from trustplan.talos import machineconfig, pki

    cfg = machineconfig.parse((repo / "nodes" / "cp-1.yaml").read_bytes(), "cp-1")
    talos = pki.CACert.from_pem(cfg.ca_fields("talos").issuer or b"").fingerprint
    assert run("init", "--machine-configs", "nodes", cwd=repo).returncode == 0
    assert f"talos-current: {talos}" in (repo / "trustplan.yaml").read_text()


def test_init_never_overwrites_without_force(repo: Path) -> None:
    (repo / "trustplan.yaml").write_text("mine\n")
    refused = run("init", "--machine-configs", "nodes", cwd=repo)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert (repo / "trustplan.yaml").read_text() == "mine\n"
    forced = run("init", "--machine-configs", "nodes", "--force", cwd=repo)
    assert forced.returncode == 0 and "machineConfigs" in (repo / "trustplan.yaml").read_text()


def test_address_falls_back_to_cert_sans_then_file_name(repo: Path) -> None:
    for name, sans in (("worker-1.yaml", ["10.9.0.7"]), ("worker-2.yaml", ["node.example"])):
        doc = yaml.safe_load((repo / "nodes" / name).read_text())
        doc["machine"]["network"]["interfaces"] = []
        doc["machine"]["certSANs"] = sans
        (repo / "nodes" / name).write_text(yaml.safe_dump(doc))
    assert run("init", "--machine-configs", "nodes", cwd=repo).returncode == 0
    configs = yaml.safe_load((repo / "trustplan.yaml").read_text())["cluster"]["machineConfigs"]
    assert configs["10.9.0.7"] == "nodes/worker-1.yaml"
    assert configs["worker-2"] == "nodes/worker-2.yaml"


def test_init_from_talosconfig_with_explicit_nodes_and_secrets(repo: Path) -> None:
    (repo / "talosconfig").write_text("context: demo\ncontexts: {}\n")
    result = run(
        "init",
        "--talosconfig",
        "talosconfig",
        "--secrets",
        "secrets.yaml",
        "--controlplane",
        "10.5.0.2,10.5.0.3",
        "--controlplane",
        "10.5.0.4",
        "--worker",
        "10.5.0.5",
        cwd=repo,
    )
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load((repo / "trustplan.yaml").read_text())
    assert doc["cluster"]["talosconfig"] == "talosconfig" and doc["cluster"]["name"] == "demo"
    assert doc["cluster"]["nodes"] == {"controlplane": ["10.5.0.2", "10.5.0.3", "10.5.0.4"], "worker": ["10.5.0.5"]}
    assert doc["secrets"] == "secrets.yaml"
    assert "talos-current: sha256:" in (repo / "trustplan.yaml").read_text()
    assert run("validate", cwd=repo).returncode == 0


def test_init_from_a_live_cluster_with_nodes_from_members(tmp_path: Path) -> None:
    """Against `trustplan sim up`: the member list gives the topology, the first control plane's
    live config names the CAs, and the written file validates and plans."""
    from simharness import SimProcess

    with SimProcess(tmp_path / "sim", controlplanes=2, workers=1) as simulator:
        sim = simulator.dir
        nodes = simulator.doc["nodes"]
        result = run("init", "--talosconfig", "talosconfig", "--nodes-from", "members", "-o", "mine.yaml", cwd=sim)
        assert result.returncode == 0, result.stderr
        assert "found 3 members" in result.stderr
        doc = yaml.safe_load((sim / "mine.yaml").read_text())
        assert doc["cluster"]["nodes"] == {
            "controlplane": [n["address"] for n in nodes if n["role"] == "controlplane"],
            "worker": [n["address"] for n in nodes if n["role"] == "worker"],
        }
        # the aggregator CA, service-account key and encryption key read from the live control plane:
        # the ones its secrets.yaml names, kept as they are (issue 22)
        from trustplan.cli import init_kinds

        found = init_kinds.from_secrets(sim / "secrets.yaml").ordered()
        assert {k: doc["trust"][k] for k in found} == {k: {"issuer": c[0].fingerprint, "accepted": []}
                                                       for k, c in found.items()}
        assert set(found) == {"aggregator", "serviceaccount", "encryption", "etcd"}
        assert run("validate", "-c", "mine.yaml", cwd=sim).returncode == 0
        plan = run("plan", "-c", "mine.yaml", "--detailed-exitcode", cwd=sim)
        assert plan.returncode == 2, plan.stderr


def test_nodes_from_members_takes_no_explicit_lists(repo: Path) -> None:
    (repo / "talosconfig").write_text("context: demo\ncontexts: {}\n")
    result = run("init", "--talosconfig", "talosconfig", "--nodes-from", "members", "--worker", "10.5.0.5", cwd=repo)
    assert result.returncode != 0 and "--nodes-from members" in result.stderr
    assert not (repo / "trustplan.yaml").exists()

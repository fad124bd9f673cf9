"""`trustplan init` makes a safe repository (issue 24): a .gitignore for keys, locks, credentials and
plans; a refusal (init and plan) while git tracks a plaintext CA key; talosctl gen config's output
read as it is (secrets.yaml set aside and proposed, addresses from the configs or --address, never a
file name). On the configs talosctl v1.12.1 generated (tests/fixtures/talosctl); the whole walkthrough
with the real talosctl is tests/test_walkthrough.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "tests" / "fixtures" / "talosctl"
TRUSTPLAN = str(Path(sys.executable).with_name("trustplan"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def generated(tmp_path: Path) -> Path:
    """`talosctl gen secrets` + `gen config --with-secrets` output, in a git repository."""
    for name in ("controlplane.yaml", "worker.yaml", "secrets.yaml"):
        shutil.copy(GEN / name, tmp_path / name)
    git("init", "-q", cwd=tmp_path)
    return tmp_path


def test_secrets_beside_the_configs_is_set_aside_and_proposed(generated: Path) -> None:
    result = run("init", "--machine-configs", ".", "--address", "worker.yaml=10.5.0.5", cwd=generated)
    assert result.returncode == 0, result.stderr
    assert "found secrets.yaml: proposing `secrets: secrets.yaml`" in result.stderr
    doc = yaml.safe_load((generated / "trustplan.yaml").read_text())
    assert doc["secrets"] == "secrets.yaml"
    assert doc["cluster"]["machineConfigs"] == {"10.5.0.2": "controlplane.yaml", "10.5.0.5": "worker.yaml"}
    assert doc["cluster"]["nodes"] == {"controlplane": ["10.5.0.2"], "worker": ["10.5.0.5"]}
    assert "address from the control-plane endpoint" in (generated / "trustplan.yaml").read_text()
    assert run("validate", cwd=generated).returncode == 0


def test_a_config_without_an_address_is_refused_naming_the_option(generated: Path) -> None:
    result = run("init", "--machine-configs", ".", cwd=generated)
    assert result.returncode == 1
    assert "worker.yaml: names no node address" in result.stderr
    assert "--address worker.yaml=<IP or DNS name>" in result.stderr
    assert not (generated / "trustplan.yaml").exists() and not (generated / ".gitignore").exists()
    typo = run("init", "--machine-configs", ".", "--address", "wrker.yaml=10.5.0.5", cwd=generated)
    assert typo.returncode == 1 and "no machine config named wrker.yaml" in typo.stderr


def test_the_gitignore_keeps_keys_locks_credentials_and_plans_out(generated: Path) -> None:
    (generated / ".gitignore").write_text("node_modules/\n")
    assert run("init", "--machine-configs", ".", "--address", "worker.yaml=10.5.0.5", cwd=generated).returncode == 0
    ignore = (generated / ".gitignore").read_text()
    assert ignore.startswith("node_modules/\n")
    for line in ("/.trustplan/keys/*.key", "/.trustplan/keys/index.lock", "*.state.json.lock", "/talosconfig",
                 "/kubeconfig", "/secrets.yaml", "*.backup", "plan.bin"):
        assert line in ignore.splitlines()
    again = run("init", "--machine-configs", ".", "--address", "worker.yaml=10.5.0.5", "--force", cwd=generated)
    assert again.returncode == 0 and (generated / ".gitignore").read_text() == ignore  # nothing repeated
    assert run("plan", "-o", "plan.bin", cwd=generated).returncode == 0
    git("add", "-A", cwd=generated)
    staged = git("diff", "--cached", "--name-only", cwd=generated).split()
    assert staged and not [f for f in staged if f.endswith((".key", ".lock", ".bin")) or f == "secrets.yaml"]


def test_a_tracked_plaintext_key_stops_init_and_plan(generated: Path) -> None:
    assert run("init", "--machine-configs", ".", "--address", "worker.yaml=10.5.0.5", cwd=generated).returncode == 0
    assert run("plan", cwd=generated).returncode == 0  # mints the new CAs into .trustplan/keys
    keys = sorted((generated / ".trustplan" / "keys").glob("*.key"))
    assert keys
    git("add", "-f", str(keys[0]), cwd=generated)
    for args in (("plan",), ("init", "--machine-configs", ".", "--address", "worker.yaml=10.5.0.5", "--force")):
        before = (generated / "trustplan.yaml").read_text()
        result = run(*args, cwd=generated)
        assert result.returncode == 1, result.stderr
        assert "git tracks 1 plaintext CA key file(s)" in result.stderr and keys[0].name in result.stderr
        assert "keystore rekey" in result.stderr and "git rm --cached" in result.stderr
        assert (generated / "trustplan.yaml").read_text() == before
    git("rm", "-q", "--cached", str(keys[0]), cwd=generated)
    assert run("plan", cwd=generated).returncode == 0


def test_addresses_from_a_multi_document_config(generated: Path) -> None:
    """talosctl v1.13+ writes network settings as documents: a LinkConfig address or a HostnameConfig."""
    worker = (generated / "worker.yaml").read_text()
    (generated / "worker.yaml").write_text(
        worker + "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\naddresses:\n  - address: 10.9.0.7/24\n")
    result = run("init", "--machine-configs", ".", cwd=generated)
    assert result.returncode == 0, result.stderr
    configs = yaml.safe_load((generated / "trustplan.yaml").read_text())["cluster"]["machineConfigs"]
    assert configs["10.9.0.7"] == "worker.yaml"

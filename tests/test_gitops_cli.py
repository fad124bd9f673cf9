"""The CLI items of issue 24, each as a user meets it on the bundled example (examples/files): a plan
path in a folder that does not exist, a plan applied from another working directory, the hints for
kubectl/Terraform habits (`show -json`, `--json`, `status -o wide`, `plan -f FILE`), `--sign-key`
with a file that is not a key, a machine config missing from cluster.nodes, the demo's subnet, and
what apply prints (each `wrote ...` once) and where plan prints `Saved the plan ...` (last)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "examples" / "files"
TRUSTPLAN = str(Path(sys.executable).with_name("trustplan"))


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, **env})


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    shutil.copytree(FILES, work)
    return work


def test_plan_into_a_folder_that_does_not_exist_is_refused_and_creates_nothing(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "plan.bin"
    result = run("plan", "-o", str(target), cwd=repo)
    assert result.returncode == 1, result.stderr
    assert f"the folder {target.parent} does not exist" in result.stderr and "mkdir -p" in result.stderr
    assert not (tmp_path / "nonexistent").exists()
    assert not (repo / ".trustplan" / "keys").exists()  # refused before any work: no CA minted


def test_a_plan_made_in_one_directory_applies_from_another(repo: Path, tmp_path: Path) -> None:
    made = run("plan", "-o", "plan.bin", cwd=repo)
    assert made.returncode == 0, made.stderr
    elsewhere = tmp_path / "ci-job"
    elsewhere.mkdir()
    applied = run("apply", str(repo / "plan.bin"), "-c", str(repo / "trustplan.yaml"), cwd=elsewhere)
    assert applied.returncode == 0, applied.stderr
    assert "Apply complete" in applied.stdout
    assert (repo / "talosconfig").exists() and not (elsewhere / "talosconfig").exists()


def test_apply_prints_each_written_output_once_and_plan_says_where_it_saved_last(repo: Path) -> None:
    made = run("plan", "-o", "plan.bin", cwd=repo)
    last = made.stderr.rstrip().splitlines()[-1]
    assert last == "Saved the plan to plan.bin; apply it with: trustplan apply plan.bin"
    applied = run("apply", "plan.bin", cwd=repo)
    assert applied.returncode == 0, applied.stderr
    wrote = [line for line in applied.stderr.splitlines() if "wrote kubeconfig kubeconfig" in line]
    assert wrote == ["outputs: wrote kubeconfig kubeconfig"], applied.stderr
    assert applied.stderr.count("wrote secrets secrets.yaml") == 1


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["show", "-json", "plan.bin"], "-json: no such option; did you mean --format json?"),
        (["show", "plan.bin", "--json"], "--json: no such option; did you mean --format json?"),
        (["status", "-o", "wide"], "-o wide: this command has no -o"),
        (["plan", "-f", "trustplan.yaml"], "-f is --format here; the desired-state file is given with -c "
                                           "(did you mean -c trustplan.yaml?)"),
    ],
)
def test_habits_from_other_tools_get_a_hint(repo: Path, args: list[str], hint: str) -> None:
    result = run(*args, cwd=repo)
    assert result.returncode == 2 and hint in result.stderr, result.stderr
    assert not (repo / ".trustplan" / "keys").exists()


def test_sign_key_with_a_file_that_is_not_a_key(repo: Path) -> None:
    result = run("plan", "-o", "plan.bin", "--sign-key", "trustplan.yaml", cwd=repo)
    assert result.returncode == 1
    assert "trustplan.yaml: not a PEM private key" in result.stderr
    assert "openssl genpkey -algorithm ed25519" in result.stderr and "https://" not in result.stderr
    assert not (repo / "plan.bin").exists()


def test_a_machine_config_missing_from_cluster_nodes_is_refused(repo: Path) -> None:
    path = repo / "trustplan.yaml"
    path.write_text(path.read_text().replace("worker: [10.5.0.5, 10.5.0.6]", "worker: [10.5.0.5]"))
    for command in ("validate", "plan"):
        result = run(command, cwd=repo)
        assert result.returncode == 1, result.stdout
        assert "cluster.machineConfigs.10.5.0.6: node 10.5.0.6 has a machine config but is in neither " \
               "cluster.nodes.controlplane nor cluster.nodes.worker" in result.stderr


def test_the_demo_subnet_override_is_documented_and_named_when_the_simulator_cannot_start(tmp_path: Path) -> None:
    assert "TRUSTPLAN_DEMO_SUBNET=127.21.0.0/24 make demo" in (ROOT / "Makefile").read_text()
    assert "TRUSTPLAN_DEMO_SUBNET" in (ROOT / "docs" / "gitops.md").read_text()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True,
                            env={**os.environ, "TRUSTPLAN_DEMO_SUBNET": "not-a-subnet"}, timeout=120, check=False)
    assert result.returncode == 1
    assert "choose another: TRUSTPLAN_DEMO_SUBNET=127.21.0.0/24 make demo" in result.stderr

"""`state:` and `keystore:` in trustplan.yaml: the kubernetes backend's settings, clear errors for bad
ones, and the commands that work on any backend (migrate, force-unlock) with the local file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from trustplan.state import KubernetesState, LocalState

from trustplan.formats import desired as desired_mod


def set_state(example: Path, block: str) -> Path:
    path = example / "trustplan.yaml"
    path.write_text(re.sub(r"(?m)^state: .*\n", block, path.read_text()))
    return path


def test_kubernetes_backend_settings(example: Path) -> None:
    path = set_state(example, "state: {backend: kubernetes, kubeconfig: kube/mgmt.yaml, context: mgmt, "
                              "namespace: trustplan, name: prod-eu-1, leaseSeconds: 15}\n")
    desired = desired_mod.load(path)
    backend = desired.state_backend()
    assert isinstance(backend, KubernetesState)
    assert backend.where == "kubernetes secret trustplan/prod-eu-1 (context mgmt)"
    assert backend.spec.kubeconfig == example / "kube" / "mgmt.yaml" and backend.spec.lease_seconds == 15
    assert isinstance(desired_mod.load(example / "trustplan.yaml").state_backend(), KubernetesState)


def test_a_plain_path_and_the_local_form_are_the_file_backend(example: Path) -> None:
    path = set_state(example, "state: {backend: local, path: states/demo.json}\n")
    backend = desired_mod.load(path).state_backend()
    assert isinstance(backend, LocalState) and backend.path == example / "states" / "demo.json"


def test_bad_backend_settings_are_one_clear_error(example: Path, cli) -> None:  # noqa: ANN001
    set_state(example, "state: {backend: kubernetes, namespace: Prod_EU, name: prod}\n")
    result = cli("validate")
    assert result.code == 1
    assert "trustplan.yaml:24: state.namespace: 'Prod_EU' is not a Kubernetes object name" in result.err
    set_state(example, "state: {backend: kubernetes, namespace: trustplan, name: prod, bucket: x}\n")
    assert "state.bucket: unknown key 'bucket' (allowed here: backend, context, kubeconfig" in cli("validate").err
    set_state(example, "state: {backend: kubernetes, name: prod}\n")
    assert "state: 'namespace' is a required property" in cli("validate").err
    set_state(example, "state: [a, b]\n")
    assert "state: must be a file name, or {backend: kubernetes" in cli("validate").err


def test_force_unlock_on_the_local_backend_explains_why_not(example: Path, cli) -> None:  # noqa: ANN001
    result = cli("force-unlock", "1234")
    assert result.code == 1 and "released by the operating system when its holder exits" in result.err


def test_migrate_between_files_refuses_to_go_backwards(example: Path, cli) -> None:  # noqa: ANN001
    assert cli("plan", "-o", "plan.bin").code == 0 and cli("apply", "plan.bin").code == 0
    applied = json.loads((example / "trustplan.state.json").read_text())
    assert cli("state", "migrate", "--to", "copy.json").code == 0
    assert json.loads((example / "copy.json").read_text()) == applied
    backwards = cli("state", "migrate", "--from", "copy.json")
    assert backwards.code == 1 and "already holds serial 1, not older than serial 1" in backwards.err
    neither = cli("state", "migrate")
    assert neither.code == 2 and "exactly one of --from FILE or --to FILE" in neither.err

"""The GitHub Actions example, run: its plan and apply jobs' shell steps (tests/ci_runner.py) against the
simulator, with the state in the real kube-apiserver. trustplan is installed by the workflow's own
step from this repository at its HEAD commit (offline: the dependencies come from the test's venv).

Covered: the plan job posts a summary, the full plan, the plan file's digest and its signer; it fails
when the identity or the keystore is missing; the apply job applies exactly the reviewed, signed plan
and refuses a plan file with another digest."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import pyrage
import pytest
from ci_runner import JobRun, load, run_job
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubeapi import KubeAPIServer, run
from simharness import SimProcess
from test_team_apply import stored

from trustplan.formats import planfile

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = load(ROOT / "examples" / "github-actions" / "trustplan.yml")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def ci_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv for the workflow's install step: no trustplan in it, the dependencies (and pip,
    setuptools) visible from the test's venv through a .pth line."""
    venv = tmp_path_factory.mktemp("ci") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


class Team:
    """A repository that uses trustplan, set up by an operator, and the secrets its CI gets."""

    def __init__(self, tmp_path: Path, sim: SimProcess, api: KubeAPIServer, ci_venv: Path) -> None:
        self.tmp, self.api, self.name = tmp_path, api, f"ci-{uuid.uuid4().hex[:6]}"
        ident = pyrage.x25519.Identity.generate()
        signing = ed25519.Ed25519PrivateKey.generate()
        self.signer = planfile.key_fingerprint(signing.public_key().public_bytes_raw())
        self.repo = tmp_path / "team-repo"
        self.repo.mkdir()
        text = (sim.dir / "trustplan.yaml").read_text().replace("secrets: secrets.yaml\n", "")
        text = text.replace("keystore: .trustplan/keys\n",
                            f"keystore: {{path: .trustplan/keys, age: {{recipients: [{ident.to_public()}]}}}}\n")
        text = text.replace("state: trustplan.state.json\n",
                            f"state: {{backend: kubernetes, namespace: trustplan, name: {self.name}}}\n")
        (self.repo / "trustplan.yaml").write_text(text + "planSigning: {publicKey: plan-signing.pub}\n")
        (self.repo / "plan-signing.pub").write_bytes(signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (self.repo / ".gitignore").write_text("talosconfig\nplan.bin\n*.md\nshow.log\n")
        self.secrets = {
            "TRUSTPLAN_AGE_IDENTITY": str(ident),
            "TRUSTPLAN_TALOSCONFIG": (sim.dir / "talosconfig").read_text(),
            "TRUSTPLAN_STATE_KUBECONFIG": api.kubeconfig.read_text(),
            "TRUSTPLAN_PLAN_SIGNING_KEY": signing.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
        # The operator mints the new CAs where the identity is kept and commits the encrypted keystore.
        shutil.copy(sim.dir / "talosconfig", self.repo / "talosconfig")
        minted = run(["plan"], self.repo, {"KUBECONFIG": str(api.kubeconfig)})
        assert minted.returncode == 0, minted.stderr
        git("init", "-q", "-b", "main", cwd=self.repo)
        git("add", "-A", cwd=self.repo)
        git("-c", "user.name=op", "-c", "user.email=op@example.com", "commit", "-qm", "rotate", cwd=self.repo)
        self.env = {
            "TRUSTPLAN_REPO": f"file://{ROOT}",
            "TRUSTPLAN_COMMIT": git("rev-parse", "HEAD", cwd=ROOT),
            "PATH": f"{ci_venv / 'bin'}:/usr/bin:/bin",
            "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_IGNORE_INSTALLED": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUAL_ENV": str(ci_venv),
            # (pip reads PIP_NO_BUILD_ISOLATION inverted: "0" means --no-build-isolation)
        }
        self.artifacts: dict[str, bytes] = {}

    def checkout(self, job: str) -> Path:
        workspace = self.tmp / f"ws-{job}-{uuid.uuid4().hex[:4]}"
        git("clone", "-q", str(self.repo), str(workspace), cwd=self.tmp)
        return workspace

    def plan_job(self, **secrets: str) -> tuple[JobRun, Path]:
        workspace = self.checkout("plan")

        def upload() -> dict[str, str]:
            self.artifacts["plan.bin"] = (workspace / "plan.bin").read_bytes()
            return {}

        job = run_job(WORKFLOW, "plan", workspace, secrets={**self.secrets, **secrets}, env=self.env,
                      github={"event": {"pull_request": {"number": 7}}}, uses={"Upload the plan file": upload})
        return job, workspace

    def apply_job(self, reviewed_digest: str, plan_bin: bytes | None = None) -> JobRun:
        workspace = self.checkout("apply")

        def find() -> dict[str, str]:
            return {"found": "true", "pr": "7", "run-id": "1", "digest": reviewed_digest}

        def download() -> dict[str, str]:
            (workspace / "plan.bin").write_bytes(plan_bin if plan_bin is not None else self.artifacts["plan.bin"])
            return {}

        uses: dict[str, Any] = {"Find the merged pull request and its reviewed plan": find,
                                "Download the reviewed plan file": download}
        return run_job(WORKFLOW, "apply", workspace, secrets=self.secrets, env=self.env,
                       github={"token": "t"}, uses=uses)


def reviewed_digest(comment: str) -> str:
    """What the apply job's finder reads from the PR comment (the same regular expression)."""
    m = re.search(r"digest `(sha256:[0-9a-f]{64})`", comment)
    assert m, comment
    return m.group(1)


def test_the_workflow_plans_posts_and_applies_the_reviewed_plan(
    kube_api: KubeAPIServer, tmp_path: Path, ci_venv: Path
) -> None:
    with SimProcess(tmp_path / "sim") as sim:
        team = Team(tmp_path, sim, kube_api, ci_venv)
        planned, ws = team.plan_job()
        assert planned.ok, planned.failed
        assert "trustplan 0.1.0" in planned.step("Install trustplan at the pinned commit").out
        assert planned.outputs["plan"]["exitcode"] == "2"
        comment = (ws / "comment.md").read_text()
        digest = reviewed_digest(comment)
        assert digest == "sha256:" + __import__("hashlib").sha256(team.artifacts["plan.bin"]).hexdigest()
        assert f"signed by Ed25519 key `{team.signer}`" in comment
        assert comment.startswith("<!-- trustplan -->\n") and "<details><summary>The full plan</summary>" in comment
        assert "PRIVATE KEY" not in comment

        other = bytearray(team.artifacts["plan.bin"])  # an unreviewed file under the reviewed name
        refused = team.apply_job(digest, bytes(other) + b"\n")
        assert refused.failed is not None and refused.failed.name == "Apply the reviewed plan"
        assert "is not the reviewed plan" in refused.failed.out

        applied = team.apply_job(digest)
        assert applied.ok, applied.failed
        assert "Apply complete" in applied.step("Apply the reviewed plan").out
    state = stored(kube_api, team.name)
    assert state["serial"] == 1 and state["history"][0]["plan_digest"] == digest


def test_the_plan_job_fails_without_the_identity_or_the_keystore(
    kube_api: KubeAPIServer, tmp_path: Path, ci_venv: Path
) -> None:
    with SimProcess(tmp_path / "sim") as sim:
        team = Team(tmp_path, sim, kube_api, ci_venv)
        no_identity, _ = team.plan_job(TRUSTPLAN_AGE_IDENTITY="")
        assert no_identity.failed is not None and no_identity.failed.name == "Check the keystore and its identity"
        assert "TRUSTPLAN_AGE_IDENTITY secret is missing" in no_identity.failed.out
        assert "Plan" not in [s.name for s in no_identity.steps]

        git("rm", "-rq", ".trustplan/keys", cwd=team.repo)
        git("-c", "user.name=op", "-c", "user.email=op@example.com", "commit", "-qm", "no keys", cwd=team.repo)
        no_keystore, _ = team.plan_job()
        assert no_keystore.failed is not None and no_keystore.failed.name == "Check the keystore and its identity"
        assert "the keystore holds no keys" in no_keystore.failed.err

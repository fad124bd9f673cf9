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
        (self.repo / ".gitignore").write_text("talosconfig\nkubeconfig\n*.backup\nplan.bin\nplan.json\n*.md\n*.log\n"
                                              "*.out\n")
        (self.repo / "policy").mkdir()
        shutil.copy(ROOT / "examples" / "policy" / "policy.rego", self.repo / "policy" / "policy.rego")
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
        opa = _peer("opa")  # the workflow's "Install opa" step finds it on PATH and builds nothing
        (ci_venv / "bin" / "opa").unlink(missing_ok=True)
        (ci_venv / "bin" / "opa").symlink_to(opa)
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
                      github={"event_name": "pull_request", "event": {"pull_request": {"number": 7}}},
                      uses={"Upload the plan file": upload})
        return job, workspace

    def apply_job(self, reviewed_digest: str, plan_bin: bytes | None = None) -> JobRun:
        workspace = self.checkout("apply")

        def find() -> dict[str, str]:
            return {"found": "true", "pr": "7", "run-id": "1", "digest": reviewed_digest}

        def download() -> dict[str, str]:
            (workspace / "plan.bin").write_bytes(plan_bin if plan_bin is not None else self.artifacts["plan.bin"])
            return {}

        uses: dict[str, Any] = {"Find the reviewed plan": find, "Download the reviewed plan file": download}
        return run_job(WORKFLOW, "apply", workspace, secrets=self.secrets, env=self.env,
                       github={"token": "t", "event_name": "push"}, uses=uses)

    def operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A trustplan command on the operator's machine (the identity and the state's kubeconfig)."""
        env = {"KUBECONFIG": str(self.api.kubeconfig), "TRUSTPLAN_AGE_IDENTITY": self.secrets["TRUSTPLAN_AGE_IDENTITY"]}
        return run(list(args), self.repo, env)

    def next_rotation(self, name: str) -> None:
        """The next rotation's pull request: new CA names, minted where the identity is kept (with the
        credentials the last apply stored), the encrypted keystore committed. CI's secrets stay as
        they were."""
        pulled = self.operator("state", "pull-credentials")
        assert pulled.returncode == 0 and "Wrote talosconfig" in pulled.stdout, pulled.stderr
        path = self.repo / "trustplan.yaml"
        path.write_text(path.read_text().replace("talos-new", f"talos-{name}").replace("k8s-new", f"k8s-{name}"))
        minted = self.operator("plan")
        assert minted.returncode == 0, minted.stderr
        git("add", "-A", cwd=self.repo)
        git("-c", "user.name=op", "-c", "user.email=op@example.com", "commit", "-qm", f"rotate to {name}",
            cwd=self.repo)


def _peer(name: str) -> str:
    import os

    cache = Path(os.environ.get("TRUSTPLAN_PEERS") or Path.home() / ".cache" / "trustplan" / "peers")
    found = shutil.which(name) or next((str(p) for p in sorted(cache.glob(f"{name}-v*"))), None)
    if found is None:
        pytest.fail(f"{name} not found: run scripts/peers/{name}.sh (the workflow's policy check runs it)")
    return found


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
        assert comment.startswith("<!-- trustplan -->\n## trustplan plan for")
        assert comment.count("### New authorities") == 1 and comment.count("**Verdict:") == 1  # no repeated block
        assert "**Policy** (`opa eval --fail-defined`, `policy`): passed." in comment
        assert "```mermaid" in comment and "### What restarts, and for how long" in comment
        assert "PRIVATE KEY" not in comment
        assert "**Policy**" in planned.summary and "## trustplan plan for" in planned.summary  # the job summary

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


def test_ci_survives_its_own_rotation_two_rotations_in_a_row(
    kube_api: KubeAPIServer, tmp_path: Path, ci_venv: Path
) -> None:
    """Rotate, then rotate again with the credentials the first run left: CI's secrets are never
    touched, although the talosconfig in TRUSTPLAN_TALOSCONFIG is revoked by the first rotation."""
    with SimProcess(tmp_path / "sim") as sim:
        team = Team(tmp_path, sim, kube_api, ci_venv)
        secrets_before = dict(team.secrets)
        for rotation, name in enumerate(("new", "2027"), start=1):
            if rotation > 1:
                team.next_rotation(name)
            planned, ws = team.plan_job()
            assert planned.ok, (planned.failed.name, planned.failed.out, planned.failed.err) if planned.failed else None
            assert planned.outputs["plan"]["exitcode"] == "2"
            pulled = planned.step("Write the cluster and state credentials")
            if rotation > 1:  # the stored credentials replaced the secret's revoked talosconfig
                assert "Wrote talosconfig talosconfig" in pulled.out, pulled.err
            else:
                assert "no stored credentials yet" in pulled.err
            applied = team.apply_job(reviewed_digest((ws / "comment.md").read_text()))
            assert applied.ok, (applied.failed.name, applied.failed.out, applied.failed.err) if applied.failed else None
            step = applied.step("Apply the reviewed plan")
            assert "Apply complete" in step.out and "Stored talosconfig" in step.out
            assert "### trustplan apply" in applied.summary
        assert team.secrets == secrets_before  # no human step: CI's secret store never changed
        # the secret's talosconfig no longer reaches the cluster: only the stored one made run 2 possible
        stale = tmp_path / "stale"
        stale.mkdir()
        (stale / "talosconfig").write_text(secrets_before["TRUSTPLAN_TALOSCONFIG"])
        shutil.copy(team.repo / "trustplan.yaml", stale / "trustplan.yaml")
        refused = run(["status"], stale, {"KUBECONFIG": str(kube_api.kubeconfig)})
        assert refused.returncode != 0 and "TLS trust failure" in refused.stderr, refused.stderr
    state = stored(kube_api, team.name)
    assert state["serial"] == 2

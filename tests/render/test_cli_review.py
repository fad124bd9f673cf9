"""The review commands on the files example: `plan`/`show --format markdown|json`, `--summary`,
`--split-dir`, and `status --format markdown`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from trustplan import schemas

ROOT = Path(__file__).resolve().parents[2]
TRUSTPLAN = str(Path(sys.executable).with_name("trustplan"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRUSTPLAN, *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("files")
    shutil.copytree(ROOT / "examples" / "files", work, dirs_exist_ok=True)
    result = run("plan", "-o", "plan.bin", "--format", "markdown", cwd=work)
    assert result.returncode == 0, result.stderr
    (work / "plan.md").write_text(result.stdout)
    return work


def test_show_markdown_is_what_plan_printed(planned: Path) -> None:
    shown = run("show", "plan.bin", "--format", "markdown", cwd=planned)
    assert shown.returncode == 0
    assert shown.stdout == (planned / "plan.md").read_text()


def test_show_markdown_for_review(planned: Path) -> None:
    md = run("show", "plan.bin", "--format", "markdown", cwd=planned).stdout
    doc = json.loads(run("show", "plan.bin", "--format", "json", cwd=planned).stdout)
    assert md.startswith("## trustplan plan for `demo`\n\n**Verdict: changes the Talos API and Kubernetes API CA")
    assert "\nPlan: 2 authorities to create, 30 CA changes (10 accept, 10 swap, 10 remove) in 15 config writes, " in md
    digest = hashlib.sha256((planned / "plan.bin").read_bytes()).hexdigest()
    assert f"\nPlan file: `plan.bin`, SHA-256 `{digest}`, unsigned.\n" in md
    edit_phases = [p for p in doc["phases"] if p["name"] != "outputs"]
    assert md.count("<details><summary>Phase ") == len(edit_phases) == 3
    live = {fp for n in doc["nodes"] for t in n["live"].values() for fp in [t["issuer"], *t["accepted"]]}
    new = [a["fingerprint"] for a in doc["authorities"] if a["fingerprint"] not in live]
    assert len(new) == 2 and all(fp in md for fp in new)
    assert "PRIVATE KEY" not in md and "(sensitive)" in md
    keys = [p.read_text() for p in (planned / ".trustplan" / "keys").rglob("*.key")]
    assert keys, "the plan should have stored the new CA keys"
    for key in keys:
        body = "".join(line for line in key.splitlines() if not line.startswith("-----"))
        assert body[:40] not in md


def test_show_json_validates_against_the_schema(planned: Path) -> None:
    shown = run("show", "plan.bin", "--format", "json", cwd=planned)
    doc = json.loads(shown.stdout)
    jsonschema.validate(doc, schemas.load("plan"), cls=jsonschema.Draft202012Validator)
    assert doc["format_version"] == 1
    assert shown.stdout == json.dumps(doc, indent=2, sort_keys=True) + "\n"  # stable: sorted keys


def test_summary_and_split_dir(planned: Path) -> None:
    summary = run("show", "plan.bin", "--format", "markdown", "--summary", "--split-dir", "parts", cwd=planned)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("## trustplan plan for `demo`") and "```diff" not in summary.stdout
    assert (planned / "parts" / "part-1.md").read_text() == summary.stdout
    text = run("show", "plan.bin", "--summary", cwd=planned)
    assert text.stdout.startswith("Plan: ") and len(text.stdout.splitlines()) < 5
    wrong = run("show", "plan.bin", "--format", "json", "--split-dir", "parts", cwd=planned)
    assert wrong.returncode != 0 and "--split-dir" in wrong.stderr


def test_status_markdown_shows_where_each_ca_issues_and_its_expiry(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "files", tmp_path, dirs_exist_ok=True)
    before = run("status", "--format", "markdown", cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("### Trust matrix of `demo`")
    assert "| issuing on | accepted on | expires |" in before.stdout
    assert before.stdout.count("| all 5 nodes | none |") == 2 and "(in 36" in before.stdout
    assert run("plan", "-o", "plan.bin", cwd=tmp_path).returncode == 0
    assert run("apply", "plan.bin", cwd=tmp_path).returncode == 0
    after = run("status", "--format", "markdown", cwd=tmp_path).stdout
    assert "talos-2026" in after and "k8s-2026" in after
    assert after.count("| all 5 nodes | none |") == 2

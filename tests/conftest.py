import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


# --- shared fixtures for the foundation suite (CA material, example cluster copies, the CLI) ---------

import datetime as _dt  # noqa: E402
import shutil as _shutil  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = REPO / "examples" / "files"


@_dataclass(frozen=True)
class CAFiles:
    """CA material written once per session: PEM bytes of certificates and keys."""

    talos_crt: bytes
    talos_key: bytes
    kube_crt: bytes
    kube_key: bytes
    expired_crt: bytes
    expired_key: bytes
    leaf_crt: bytes  # not a CA
    leaf_key: bytes


@pytest.fixture(scope="session")
def ca_files() -> CAFiles:
    """A Talos-shaped CA pair per PKI, an expired CA and a non-CA certificate, generated once."""
    from trustplan.talos import certgen, pki

    now = pki.utcnow()
    t_crt, t_key = certgen.generate_ca("talos", now)
    k_crt, k_key = certgen.generate_ca("kubernetes", now)
    e_crt, e_key = certgen.generate_ca("talos", now - _dt.timedelta(days=30), validity=_dt.timedelta(days=1))
    l_crt, l_key = certgen.issue_client_cert(t_crt, t_key, "os:admin", now)
    return CAFiles(
        pki.cert_to_pem(t_crt), pki.key_to_pem(t_key), pki.cert_to_pem(k_crt), pki.key_to_pem(k_key),
        pki.cert_to_pem(e_crt), pki.key_to_pem(e_key), pki.cert_to_pem(l_crt), pki.key_to_pem(l_key),
    )


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch copy of examples/files (3 control planes + 2 workers); the cwd is set to it."""
    dest = tmp_path / "cluster"
    _shutil.copytree(EXAMPLE_FILES, dest)
    monkeypatch.chdir(dest)
    return dest


class CliClock:
    """The CLI's clock (trustplan.talos.pki.utcnow, the one clock plan and apply read), frozen at
    a whole second; `advance(...)` moves it on. Tests that need time to pass move it instead of sleeping."""

    def __init__(self, now: _dt.datetime) -> None:
        self.now = now

    def __call__(self) -> _dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += _dt.timedelta(**delta)


@pytest.fixture
def cli_clock(monkeypatch: pytest.MonkeyPatch) -> CliClock:
    """Freeze the CLI's clock for in-process runs (the `cli` fixture, run_cli)."""
    from trustplan.talos import pki

    clock = CliClock(pki.utcnow())
    monkeypatch.setattr(pki, "utcnow", clock)
    return clock


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root`: relative path -> (mode, bytes). Compare before/after a command."""
    return {
        str(p.relative_to(root)): (p.stat().st_mode & 0o777, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@_dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """Run `trustplan ARGS...` in-process (the cwd is the test's); returns exit code, stdout, stderr."""
    from trustplan.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_cli(cwd: Path, *args: str) -> CliResult:
    """Run `trustplan ARGS...` in-process in `cwd`, capturing stdout and stderr (for any fixture scope)."""
    import contextlib
    import io
    import os

    from trustplan.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    return CliResult(code, out.getvalue(), err.getvalue())


def copy_example(dest: Path) -> Path:
    """A scratch copy of examples/files at `dest`."""
    _shutil.copytree(EXAMPLE_FILES, dest)
    return dest


# --- a real kube-apiserver + etcd, once per session (tests/kubeapi.py) ---------------------------------


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """etcd + kube-apiserver on loopback with generated certs, and a `trustplan` namespace. Skipped where
    the binary was never built (a developer's laptop); in CI (CI=true) that is a failure."""
    import os

    import kubeapi

    why = kubeapi.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    api = kubeapi.KubeAPIServer.start(tmp_path_factory.mktemp("kube-api"))
    try:
        from kubernetes import client

        api.core().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="trustplan")))
        yield api
    finally:
        api.stop()


# --- the interop suite (tests/interop): every case that takes `talosctl_version` or `talosctl_path`
# runs once per talosctl release, or against $TALOSCTL alone when it is set (interop_tools). Here and
# not in tests/interop/conftest.py, which would shadow this module (tests import it as `conftest`).


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "talosctl_version" in metafunc.fixturenames:
        from interop_tools import talosctl_versions

        versions = talosctl_versions()
        metafunc.parametrize("talosctl_version", versions, ids=[f"talosctl-{v}" for v in versions])


@pytest.fixture
def talosctl_path(talosctl_version: str) -> Path:
    """The talosctl binary of the release this interop case runs against."""
    from interop_tools import talosctl_binary

    return talosctl_binary(talosctl_version)


@pytest.fixture(scope="session")
def story(tmp_path_factory: pytest.TempPathFactory) -> object:
    """tests/realk8s: the issue 22 rotation on one real-Kubernetes cluster, run once per session and
    shared by test_real_credentials.py and test_real_shared_gates.py (tests/realk8s/credstory.py)."""
    from credstory import need_binaries, run_story

    need_binaries()
    return run_story(tmp_path_factory.mktemp("issue22"))

"""A simulated cluster in its own process (`trustplan sim up`), the trustplan CLI run against it as
a user runs it, and checks that the credentials on disk work on every node.

The CLI runs in separate processes so that tests can send it SIGTERM or SIGKILL; the simulator lives
on in its own process, like a real cluster does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import simharness as testing


def trustplan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trustplan", *args]


@dataclass
class Proc:
    """A running CLI command whose stderr lines are collected as they come."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stdout: str = ""
    readers: list[threading.Thread] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)  # a line came, or stderr ended
    ended: bool = False

    @classmethod
    def start(cls, args: list[str], cwd: Path) -> Proc:
        popen = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = cls(popen)
        proc.readers = [threading.Thread(target=proc._read_err, daemon=True),
                        threading.Thread(target=proc._read_out, daemon=True)]
        for reader in proc.readers:
            reader.start()
        return proc

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def _read_out(self) -> None:
        assert self.popen.stdout is not None
        self.stdout = self.popen.stdout.read()

    def wait_for(self, text: str, timeout: float) -> bool:
        """Has a stderr line containing `text` come (waiting for each line as it comes, until stderr
        ends or `timeout` seconds pass)?"""
        def seen() -> bool:
            return any(text in line for line in self.lines)

        with self.changed:
            self.changed.wait_for(lambda: seen() or self.ended, timeout)
            return seen()

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        for reader in self.readers:
            reader.join(10)  # both pipes end with the process: every last line is taken
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def run_cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(trustplan_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


class SimProcess(testing.SimProcess):
    """`trustplan sim up` in a child process (tests/simharness.py starts and stops it), with
    quick API server restarts and kubelet re-joins, and the edits the fault tests make to its files."""

    def __init__(self, dir: Path, controlplanes: int, workers: int, *, latency_ms: float = 0, k8s: bool = False,
                 apiserver_restart_ms: float = 200, kubelet_rejoin_ms: float = 150) -> None:
        super().__init__(dir, controlplanes, workers, latency_ms=latency_ms, k8s=k8s,
                         apiserver_restart_ms=apiserver_restart_ms, kubelet_rejoin_ms=kubelet_rejoin_ms)

    def set_verify_timeout(self, seconds: float) -> None:
        path = self.dir / "trustplan.yaml"
        text = path.read_text()
        path.write_text(text.replace("verify: {timeout: 60}", f"verify: {{timeout: {seconds}}}"))

    def rotate_to(self, generation: int) -> None:
        """Point trustplan.yaml at newly generated CAs named for `generation` (a new rotation)."""
        path = self.dir / "trustplan.yaml"
        text = path.read_text()
        marker = "trust:\n"
        head, tail = text.split("authorities:\n", 1)
        _, rest = tail.split(marker, 1)
        trust_block, after = rest.split("keystore:", 1)
        name = f"{generation}".replace("-", "w")
        auth = f"  talos-{name}: {{generate: {{algorithm: ed25519}}}}\n"
        trust = f"  talos: {{issuer: talos-{name}, accepted: []}}\n"
        if self.k8s:
            auth += f"  k8s-{name}: {{generate: {{algorithm: ecdsa-p256}}}}\n"
            trust += f"  kubernetes: {{issuer: k8s-{name}, accepted: []}}\n"
        del trust_block
        path.write_text(f"{head}authorities:\n{auth}{marker}{trust}keystore:{after}")


def credential_report(sim: SimProcess) -> dict[str, str]:
    """Every node with DIR/talosconfig, every API server with DIR/kubeconfig: what -> "ok" or why not."""
    return asyncio.run(_report(sim))


async def _report(sim: SimProcess) -> dict[str, str]:
    from trustplan.providers.kubechecks.nodes import ExpectedNode, KubernetesChecker, server_for
    from trustplan.providers.talos.provider import TalosProvider

    from trustplan.errors import TrustplanError

    out: dict[str, str] = {}
    nodes = sim.nodes()
    try:
        async with TalosProvider(sim.dir / "talosconfig", None, nodes, verify_timeout=5.0) as p:
            for ref in nodes:
                try:
                    await p.verify(ref, None)
                    out[f"talos {ref.address}"] = "ok"
                except TrustplanError as exc:
                    out[f"talos {ref.address}"] = str(exc)
    except TrustplanError as exc:
        out["talosconfig"] = str(exc)
    if sim.k8s:
        from e2e.test_kubernetes_rotation import kubeconfig_credential

        cps = [n.address for n in nodes if n.role == "controlplane"]
        checker = KubernetesChecker([server_for(a) for a in cps], 15.0)
        try:
            doc = json.loads((sim.dir / "sim.json").read_text())
            expected = [ExpectedNode(n["address"], n["name"]) for n in doc["nodes"]]
            await checker.check(kubeconfig_credential(sim.dir / "kubeconfig"), expected)
            out["kubeconfig"] = "ok"
        except TrustplanError as exc:
            out["kubeconfig"] = str(exc)
    return out


def kill_tree(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)

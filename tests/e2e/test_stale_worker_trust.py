"""Issue 8, item 4: resume a rotation another tool left half done, where a worker's client trust
(its trustd bundle, not in its config) is what the safety check needs.

The state: `talosctl rotate-ca` died during its accept step after adding its new CA to every node's
machine.acceptedCAs, and then one control plane was reverted by hand. Every worker asked trustd for
a certificate while all control planes trusted the new CA, so its apid accepts it; but what the
control planes trust *now* (the guess the safety check made before) no longer says so, and plan
refused: "node ... would refuse the proxy certificate of endpoint ...". trustplan now probes each
worker directly and finishes the rotation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
from pathlib import Path

import pytest
from simharness import run_with_cluster
from trustplan.providers.talos.provider import TalosProvider
from trustplan_sim.cluster import SimCluster
from trustplan_sim.node import SimNode

from trustplan.engine import planning as engine
from trustplan.errors import UnsafePlanError
from trustplan.formats import desired as desired_mod
from trustplan.talos import certgen, machineconfig, pki
from trustplan.talos.machineconfig import CAFields


def edit_talos(node: SimNode, accepted: tuple[bytes, ...]) -> None:
    """A config change on one node, as ApplyConfiguration would make it (certs re-issued)."""
    cfg = machineconfig.parse(node.config, node.name)
    f = cfg.ca_fields("talos")
    data = cfg.with_ca_fields({"talos": CAFields(f.issuer, f.issuer_key, accepted)})
    node.set_config(data, machineconfig.parse(data, node.name))


def talosctl_died_in_accept_then_a_control_plane_reverted(cluster: SimCluster) -> bytes:
    """talosctl's new CA accepted on every node in its order (control planes, then workers), then
    cp-3 restored to its config of before. The CA and key the user kept are written into DIR, and
    trustplan.yaml asks to finish the rotation to that CA. Returns the CA's PEM."""
    crt, key = certgen.generate_ca("talos", pki.utcnow())
    crt_pem = pki.cert_to_pem(crt)
    for node in cluster.nodes:
        edit_talos(node, (*machineconfig.parse(node.config, node.name).ca_fields("talos").accepted, crt_pem))
    edit_talos(cluster.node("cp-3"), ())
    (cluster.dir / "talosctl-ca.crt").write_bytes(crt_pem)
    (cluster.dir / "talosctl-ca.key").write_bytes(pki.key_to_pem(key))
    path = cluster.dir / "trustplan.yaml"
    text = path.read_text().replace(
        "  talos-new: {generate: {algorithm: ed25519}}\n",
        "  talosctl-ca: {certificate: talosctl-ca.crt, key: talosctl-ca.key}\n",
    )
    path.write_text(text.replace("issuer: talos-new", "issuer: talosctl-ca"))
    return crt_pem


async def trustplan(cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trustplan", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def test_trustplan_finishes_talosctl_killed_in_accept_with_a_control_plane_reverted(tmp_path: Path) -> None:
    async def scenario(cluster: SimCluster) -> None:
        new = talosctl_died_in_accept_then_a_control_plane_reverted(cluster)
        new_fp = pki.fingerprint(pki.load_cert_pem(new, "ca"))
        for worker in cluster.workers:  # the fact the configs do not tell: workers accept the new CA
            assert new in pki.split_pem_bundle(worker.client_trust_pem)

        code, out = await trustplan(cluster.dir, "plan", "-o", "plan.bin")
        assert code == 0, out
        assert "would refuse the proxy certificate" not in out
        assert out.count("(probed directly, its trust comes from trustd)") == len(cluster.workers), out
        code, out = await trustplan(cluster.dir, "apply", "plan.bin")
        assert code == 0, out

        for node in cluster.nodes:
            fields = machineconfig.parse(node.config, node.name).ca_fields("talos")
            assert fields.issuer == new and fields.accepted == ()
        # the talosconfig on disk works on every node, through every endpoint
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs(), verify_timeout=10) as provider:
            for ref in cluster.node_refs():
                await provider.verify(ref)
            assert provider.config.credential().trusted == (new_fp,)
        code, out = await trustplan(cluster.dir, "plan", "--detailed-exitcode")
        assert code == 0, out

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)


def test_a_worker_whose_trustd_bundle_is_really_stale_is_recertified_by_plan_and_apply(tmp_path: Path) -> None:
    """Issue 20, finding 11: a worker took the new CA into its config before the control planes did (a
    hand edit): its bundle, fetched then, lacks it. The probe sees that; the plan recertifies it (a
    write that adds its address to machine.certSANs, after the control planes accept the new CA, so
    it asks trustd again), apply probes it afterwards, and plan + apply finish with no manual step."""

    async def scenario(cluster: SimCluster) -> None:
        crt, key = certgen.generate_ca("talos", pki.utcnow())
        new = pki.cert_to_pem(crt)
        worker = cluster.workers[0]
        for node in [worker, *cluster.controlplanes]:
            edit_talos(node, (new,))
        edit_talos(cluster.node("cp-3"), ())  # reverted by hand
        assert new not in pki.split_pem_bundle(worker.client_trust_pem)
        (cluster.dir / "talosctl-ca.crt").write_bytes(new)
        (cluster.dir / "talosctl-ca.key").write_bytes(pki.key_to_pem(key))
        path = cluster.dir / "trustplan.yaml"
        text = path.read_text().replace(
            "  talos-new: {generate: {algorithm: ed25519}}\n",
            "  talosctl-ca: {certificate: talosctl-ca.crt, key: talosctl-ca.key}\n",
        )
        path.write_text(text.replace("issuer: talos-new", "issuer: talosctl-ca"))

        code, out = await trustplan(cluster.dir, "plan", "-o", "plan.bin")
        assert code == 0, out
        assert f"~ {worker.address}" in out and "recertify: asks trustd again" in out, out
        code, out = await trustplan(cluster.dir, "apply", "plan.bin")
        assert code == 0, out
        assert worker.address.encode() in worker.config  # the recertify write: its address in certSANs
        for node in cluster.nodes:
            fields = machineconfig.parse(node.config, node.name).ca_fields("talos")
            assert fields.issuer == new and fields.accepted == ()
        async with TalosProvider(cluster.talosconfig, None, cluster.node_refs(), verify_timeout=10) as provider:
            for ref in cluster.node_refs():
                await provider.verify(ref)
        code, out = await trustplan(cluster.dir, "plan", "--detailed-exitcode")
        assert code == 0, out

    run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)


def test_workers_that_cannot_be_probed_directly_are_named_with_both_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers behind a firewall (talos#12295): no direct probe answers, so their trust is guessed
    from the control planes' configs, and the refusal says how to get past it."""

    async def no_answer(self: TalosProvider, node: object, credentials: list[object], timeout: float = 3) -> list[None]:
        return [None] * len(credentials)

    monkeypatch.setattr(TalosProvider, "probe_client_trust", no_answer)

    async def scenario(cluster: SimCluster) -> tuple[str, str]:
        talosctl_died_in_accept_then_a_control_plane_reverted(cluster)
        desired = desired_mod.load(cluster.dir / "trustplan.yaml")
        with pytest.raises(UnsafePlanError) as refused:
            await engine.plan_desired(desired, pki.utcnow(), dt.timedelta(hours=1))
        return str(refused.value), refused.value.hint or ""

    message, hint = run_with_cluster(scenario, tmp_path / "sim", controlplanes=3, workers=2)
    assert "would refuse the proxy certificate" in message
    worker = re.search(r"node (\S+) would refuse", message).group(1)  # type: ignore[union-attr]
    assert f"did not answer a direct probe on {worker}:50000" in hint, hint
    assert f"talosctl -n {worker} patch mc --mode=no-reboot" in hint, hint

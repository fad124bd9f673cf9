"""The etcd CA's rolling restarts inside apply (docs/etcd-ca.md): a control plane whose etcd field the
accept or remove phase changes is rebooted right after its write (etcd reads its CA file only at start,
and Talos refuses ServiceRestart of etcd), and gated before the next control plane is touched:

    the rebooted member took up its new field   accept: it serves a client certificate from the new CA;
                                                remove: it refuses one from the CA removed
    every member answers health and status      over TLS, with a client certificate minted in memory
                                                from a CA every running member trusts
    quorum, one leader                          every member healthy and following the same leader
    every revision caught up                    each member's revision reaches the leader's at the
                                                start of the gate (writes go on meanwhile)
    every kube-apiserver /readyz                its etcd client goes through the same members

A member that does not come back stops the apply there: no other control plane is touched, the state
records the failed step, and the rest still hold quorum. The swap phase restarts nothing (members
load new leaves at the next handshake); its gate after the phase asks the same of every member.

Only with a provider that reboots nodes (capabilities.reboot: the Talos API); with configs on disk the
etcd gates are model checks of the configs, like the other control-plane-only kinds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from trustplan.errors import GateFailedError, TrustplanError
from trustplan.planner import ops as op
from trustplan.planner.etcd import quorum
from trustplan.planner.model import Credential
from trustplan.providers.etcd import EtcdClient, EtcdRefused, EtcdStatus, EtcdUnreachable
from trustplan.talos import certgen, pki
from trustplan.talos.rewrite import trust_of

if TYPE_CHECKING:
    from trustplan.engine.runner import PhaseRunner

#: the phases whose etcd writes change what a member trusts: each is followed by a reboot
RESTART_PHASES = ("accept", "remove")
POLL = 0.25


def _at(node: str | None) -> dict[str, str]:
    return {"node": node} if node is not None else {}


def restarts(phase: op.Phase, address: str) -> bool:
    """Whether `address` reboots after its write of `phase` (its etcd field changes what it trusts)."""
    return phase.name in RESTART_PHASES and any(e.pki == "etcd" for e in phase.edits_for(address))


def rolls(phase: op.Phase) -> bool:
    """Whether the phase reboots control planes (then they go one at a time, whatever the rollout says)."""
    return phase.name in RESTART_PHASES and any(e.pki == "etcd" for e in phase.edits)


class EtcdRoll:
    """The etcd side of one apply: client identities minted once, the members, the gates."""

    def __init__(self, runner: PhaseRunner) -> None:
        self.runner = runner
        self.members = [n.address for n in runner.plan.nodes if n.role == "controlplane"]
        targets = [t for t in runner.plan.targets if t.pki == "etcd"]
        self.cas = tuple(dict.fromkeys(fp for t in targets for fp in (*t.before.trusted, *t.after.trusted)))
        self._clients: dict[str, EtcdClient] = {}

    def client(self, issuer: str) -> EtcdClient:
        """A client certificate from etcd CA `issuer` (in memory), trusting every etcd CA of the plan."""
        if issuer not in self._clients:
            m = self.runner.keys.material_for("etcd", issuer)
            assert m.secret is not None
            ca = pki.load_cert_pem(m.public, "etcd CA")
            key = pki.load_key_pem(m.secret, "etcd CA key")
            crt, ckey = certgen.issue_client_cert(ca, key, "trustplan", self.runner.now, common_name="trustplan")
            bundle = pki.pem_bundle([self.runner.keys.material_for("etcd", fp).public for fp in self.cas])
            self._clients[issuer] = EtcdClient(pki.cert_to_pem(crt), pki.key_to_pkcs8_pem(ckey), bundle)
        return self._clients[issuer]

    def timeout(self) -> float:
        return self.runner.desired.rollout.timeout("etcd")

    def label(self, fp: str) -> str:
        return self.runner.plan.label(fp)

    async def precheck(self) -> None:
        """Before the first write: every member healthy with one leader and caught up, every API server
        ready (a cluster already short of a member must not lose another to a reboot)."""
        runner = self.runner
        if runner.provider.capabilities.reboot is None:
            return
        phase = next((p for p in runner.plan.phases if any(e.pki == "etcd" for e in p.edits)), None)
        targets = [t for t in runner.plan.targets if t.pki == "etcd"]
        if phase is None or not targets:
            return
        new = targets[0].after.issuer or ""
        common = set.intersection(*(set(t.before.trusted) for t in targets))
        # the CA every running member trusts now: the old one until the remove phase, the new one in it
        issuer = new if phase.name == "remove" and new in common else next(
            (fp for fp in sorted(common) if fp != new), new)
        await self.gate(phase.name, issuer, "before the first write")

    async def restart(self, phase: op.Phase, address: str) -> None:
        """Reboot `address` after its write, wait until its member runs the new field, then gate."""
        runner = self.runner
        rebooter = runner.provider.capabilities.reboot
        if rebooter is None:
            return
        edits = [e for e in phase.edits_for(address) if e.pki == "etcd"]
        target = next(t for t in runner.plan.targets if t.pki == "etcd" and t.node == address)
        old, new = target.before.issuer or "", target.after.issuer or ""
        n = len(self.members)
        runner.reporter.note(f"{phase.name}: {address}: rebooting it (its etcd member restarts with the new etcd "
                             f"CA field; {n - 1} of {n} members up, quorum {quorum(n)})")
        try:
            await rebooter.reboot(runner.refs[address], runner.phase_credential(phase))
        except TrustplanError as exc:
            runner.record(phase.name, "reboot", "failed", node=address, message=str(exc))
            raise
        runner.record(phase.name, "reboot", "ok", node=address, detail="reboot (not FORCE) to restart etcd")
        if phase.name == "accept":
            probe, want, what = new, True, f"serves a client certificate from {self.label(new)}"
        else:
            removed = [e.ca for e in edits if isinstance(e, op.RemoveCA)]
            probe, want, what = (removed[0] if removed else old), False, "refuses a client certificate from " + \
                self.label(removed[0] if removed else old)
        deadline = time.monotonic() + self.timeout()
        seen: bool | None = None
        witness = self.client(new)  # a member that answers this one is up (it trusts new from accept on)
        witness = self.client(old) if phase.name == "accept" else witness
        while True:
            seen = await asyncio.to_thread(self._probe, witness, self.client(probe), address)
            if seen is want:
                break
            if time.monotonic() > deadline:
                state = "does not answer" if seen is None else ("still refuses" if want else "still accepts") + \
                    " that certificate"
                message = (f"etcd member {address} did not come back with its new etcd CA field within "
                           f"{self.timeout():g} s after its reboot (it {state}); no other control plane was "
                           f"touched: the other {n - 1} members keep quorum ({quorum(n)} of {n})")
                runner.record(phase.name, "etcd", "failed", node=address, pki="etcd", message=message)
                raise GateFailedError(message, hint="look at the node (talosctl -n NODE dmesg, talosctl -n NODE "
                                      "logs etcd); when it is back, `trustplan plan` resumes from what each "
                                      "member runs")
            await asyncio.sleep(POLL)
        # a member restarted in accept trusts old + new, the others old only: the old CA reaches them all
        await self.gate(phase.name, old if phase.name == "accept" else new, f"{address} restarted: it {what}", address)

    @staticmethod
    def _probe(witness: EtcdClient, probe: EtcdClient, address: str) -> bool | None:
        """Whether the member serves `probe`'s certificate, asked between two answers to `witness`'s (a
        member shutting down drops connections, which is no refusal); None when it is not up."""
        if witness.accepts(address) is not True:
            return None
        seen = probe.accepts(address)
        return seen if witness.accepts(address) is True else None

    async def gate(self, phase: str, issuer: str, why: str, node: str | None = None) -> None:
        """Every member healthy with one leader and caught up, then every kube-apiserver ready."""
        runner = self.runner
        client = self.client(issuer)
        deadline = time.monotonic() + self.timeout()
        mark: int | None = None  # the leader's revision when the members first agreed on a leader
        last = ""
        while True:
            problem, statuses = await self._round(client)
            if problem is None:
                leader = next(s for s in statuses if s.member_id == statuses[0].leader)
                mark = leader.revision if mark is None else mark
                behind = [s.address for s in statuses if s.revision < mark]
                if not behind:
                    break
                problem = f"{', '.join(behind)} not caught up to revision {mark}"
            last = problem
            if time.monotonic() > deadline:
                message = f"etcd gate after {phase} ({why}): {last} after {self.timeout():g} s"
                runner.record(phase, "etcd", "failed", pki="etcd", message=message, **_at(node))
                raise GateFailedError(message, hint="the apply stopped before touching another control plane; "
                                      "look at the members (talosctl -n NODE etcd status)")
            await asyncio.sleep(POLL)
        n = len(statuses)
        detail = (f"{why}; {n} of {n} members healthy with {self.label(issuer)}, one leader, "
                  f"revisions at {mark} or later")
        await self.apiservers(phase, node)
        runner.record(phase, "etcd", "ok", pki="etcd", detail=detail, **_at(node))
        runner.reporter.note(f"gate after {phase}: etcd: {detail}")

    async def _round(self, client: EtcdClient) -> tuple[str | None, list[EtcdStatus]]:
        answers = await asyncio.gather(*(asyncio.to_thread(client.status, a) for a in self.members),
                                       return_exceptions=True)
        statuses: list[EtcdStatus] = []
        for address, answer in zip(self.members, answers, strict=True):
            if isinstance(answer, (EtcdUnreachable, EtcdRefused)):
                return str(answer), statuses
            if isinstance(answer, BaseException):
                raise answer
            if not answer.healthy:
                return f"etcd {address}: not healthy", statuses
            statuses.append(answer)
        leaders = {s.leader for s in statuses}
        if len(leaders) != 1 or 0 in leaders or not any(s.member_id in leaders for s in statuses):
            return f"the members do not agree on one leader ({len(leaders)} seen)", statuses
        return None, statuses

    async def apiservers(self, phase: str, node: str | None) -> None:
        """Every control plane's kube-apiserver answers /readyz (its etcd client works)."""
        runner = self.runner
        if not runner.provider.capabilities.kubernetes_api or runner.desired.kube_endpoints:
            return
        from trustplan.providers.kubechecks.nodes import KubernetesChecker

        # the Kubernetes CA the first control plane runs now: in every phase every API server accepts
        # a client certificate from its issuer, and serves from one of the CAs it trusts
        trust, _ = trust_of(runner.configs[self.members[0]].ca_fields("kubernetes"), "live config")
        assert trust.issuer is not None
        cred = Credential(trust.issuer, tuple(dict.fromkeys((trust.issuer, *trust.accepted))))
        servers = runner.desired.kube_servers(self.members)
        checker = KubernetesChecker(servers, runner.desired.rollout.timeout("kubernetes"))
        identity = runner.mint("kubernetes", cred)
        for server in servers:
            try:
                await runner.stop.race(checker.wait_ready(server, identity))
            except TrustplanError as exc:
                runner.record(phase, "etcd", "failed", pki="etcd", message=str(exc), **_at(node))
                raise

"""Run one plan's phases against a provider: per phase the edits (control planes first, each node once
with all its edits of the phase, a canary of workers when the rollout asks), then the gates; the
outputs where the plan puts them. The journal of what ran goes into the state (engine.applier).

    PhaseRunner(desired, provider, keys, live, plan, now, reporter, ...).run()

It follows the plan: the edits it is given, each phase sent with the plan's `phase.credential`;
what it does beyond that depends on what the provider can do (its capabilities), never on which
provider it is. A forward apply and its rollback (engine.rollback) are both runs of this class.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace
from typing import assert_never

from trustplan.engine import etcdroll
from trustplan.engine.access import operator_context
from trustplan.engine.interrupt import Stop
from trustplan.engine.keyring import KeyRing
from trustplan.engine.live import LiveCluster
from trustplan.engine.phasesteps import (
    bounded,
    check_members,
    check_output,
    confirm,
    fresh,
    outputs_seen,
    read_output,
    send,
)
from trustplan.engine.planning import node_refs
from trustplan.engine.progress import Reporter
from trustplan.engine.recertify import recertify_workers
from trustplan.engine.sharedgates import api_gate, encryption_gate, rewrite_before_remove
from trustplan.errors import GateFailedError, TrustplanError
from trustplan.formats.desired import DesiredState, Rollout
from trustplan.formats.outputs import admin_credentials, trust_also, update_secrets, write_kubeconfig, write_talosconfig
from trustplan.planner import Credential, Plan
from trustplan.planner import ops as op
from trustplan.planner.model import KINDS, PKI
from trustplan.providers.base import KubeletWatcher, ManyVerifier, Provider, TLSIdentity
from trustplan.state.journal import Step
from trustplan.talos import kubecreds, machineconfig, pki
from trustplan.talos.clientconfig import kubeconfig_document
from trustplan.talos.machineconfig import MachineConfig
from trustplan.talos.rewrite import kind_trust, rewrite_config

#: the documents of Talos 1.14 that a control plane's kube-apiserver is made from
APISERVER_DOCUMENTS = frozenset({machineconfig.KUBE_CA_DOC_KIND, *kubecreds.DOC_KINDS.values()})


def restarts_apiserver(before: MachineConfig, after: MachineConfig) -> bool:
    """Whether a control plane's kube-apiserver restarts when `after` replaces `before`: any
    Kubernetes input changed (its CA fields in either layout, the v1alpha1 `cluster` section, which
    holds the legacy aggregator CA, service-account key and encryption secret, or one of the 1.14
    documents of those credentials)."""
    def inputs(cfg: MachineConfig) -> list[object]:
        return [d for d in cfg.documents if isinstance(d, dict) and d.get("kind") in APISERVER_DOCUMENTS]

    return (
        before.ca_fields("kubernetes") != after.ca_fields("kubernetes")
        or before.v1alpha1.get("cluster") != after.v1alpha1.get("cluster")
        or inputs(before) != inputs(after)
    )


#: added to a failed write's message when the node, read back, still has its config of before
NOT_APPLIED = "read back: not applied"


def _names(nodes: Iterable[str], at_most: int = 10) -> str:
    """Node addresses for a message: the first `at_most`, then how many more."""
    names = list(dict.fromkeys(nodes))
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


class PhaseRunner:
    """Runs one plan's phases against a provider: per phase, the edits (control planes first, each
    node once with all its edits of the phase), then the gates; then the outputs. `steps` is the
    journal that goes into the state.

    `operator` is the credential the nodes were read with (None: the provider's own, e.g. the
    talosconfig's), and `operator_identity` its fingerprints: a phase whose plan credential is that
    identity is sent with it; any other plan credential is minted from the keys."""

    def __init__(
        self,
        desired: DesiredState,
        provider: Provider,
        keyring: KeyRing,
        live: LiveCluster,
        plan: Plan,
        now: dt.datetime,
        reporter: Reporter,
        operator: TLSIdentity | None = None,
        stop: Stop | None = None,
        *,
        operator_identity: Credential | None = None,
        rollout: Rollout | None = None,
        workers_first: bool = False,
        trial: bool = True,
        reread: bool = True,
        members_at_start: set[str] | None = None,
    ) -> None:
        self.stop = stop or Stop()
        self.workers_first = workers_first  # a rollback undoes a phase in reverse order
        self.desired = desired
        self.operator = operator
        if operator_identity is None and operator is not None:
            operator_identity = Credential(operator.issuer, operator.trusted)
        self.operator_identity = operator_identity
        self.provider = provider
        self.keys = keyring
        self.configs: dict[str, MachineConfig] = dict(live.configs)
        self.plan = plan
        self.now = now
        self.reporter = reporter
        self.steps: list[Step] = []
        self.refs = {r.address: r for r in node_refs(plan)}
        self._credentials: dict[tuple[str, str, tuple[str, ...]], TLSIdentity] = {}
        self.rollout = rollout or desired.rollout  # apply() passes the plan's
        self.admin: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        #: write each phase in Talos's try mode and confirm it after the phase's gates (a rollback,
        #: which must stick, does not); only when the provider can (capabilities.trial)
        self.trial = trial and provider.capabilities.trial is not None
        self.unconfirmed: dict[str, str] = {}  # node -> phase of its try-mode write not yet confirmed
        #: re-read each node before writing it and keep foreign edits outside the CA fields (apply)
        self.reread = reread
        #: members outside the plan when the apply began (None: not listed, no member check)
        self.members_at_start = members_at_start
        self.outputs_seen = outputs_seen(self)  # the output files as found (read again before each write)
        #: the etcd CA's rolling restarts and gates (a plan that rotates it, a provider that reboots). A
        #: rollback (workers_first) writes the etcd field back without a reboot: a member keeps trusting
        #: the new CA too until it next restarts (harmless; the next plan asks each member what it runs),
        #: and a reboot beside a member that failed could cost quorum
        self.etcd = etcdroll.EtcdRoll(self) if "etcd" in plan.managed and not workers_first else None

    def mint(self, pki_name: str, cred: op.Credential) -> TLSIdentity:
        """An admin cert from `cred.issuer` trusting `cred.trusted`, minted once per apply."""
        key = (pki_name, cred.issuer, cred.trusted)
        if key not in self._credentials:
            crt, k = self.admin_pems(pki_name, cred.issuer)
            bundle = pki.pem_bundle([self.keys.cert_pem(fp) for fp in cred.trusted])
            pkcs8 = pki.key_to_pkcs8_pem(pki.load_key_pem(k, "admin key"))
            self._credentials[key] = TLSIdentity(pki_name, cred.issuer, cred.trusted, crt, pkcs8, bundle)  # type: ignore[arg-type]
        return self._credentials[key]

    def phase_credential(self, phase: op.Phase) -> TLSIdentity | None:
        """What the phase's edits are sent with, as the plan says (`phase.credential`): the operator's
        own credential when the plan names the operator's identity (or none), else an admin cert
        minted for it. None for a provider that takes no credential."""
        want = phase.credential
        if not self.provider.capabilities.needs_credential:
            return None
        who = self.operator_identity
        if want is None or (who is not None and (want.issuer, want.trusted) == (who.issuer, who.trusted)):
            return self.operator
        return self.mint("talos", want)

    def admin_pems(self, pki_name: str, issuer: str) -> tuple[bytes, bytes]:
        if (pki_name, issuer) not in self.admin:
            self.admin[(pki_name, issuer)] = admin_credentials(
                self.keys.ca(issuer), self.keys.key(issuer), pki_name, self.now
            )
        return self.admin[(pki_name, issuer)]

    def record(self, phase: str, kind: str, outcome: str, **extra: str) -> None:
        self.steps.append(Step(phase, kind, outcome, **extra))
        if kind == "output":
            self.reporter.note(f"outputs: wrote {extra.get('detail', '')}")

    async def run(self) -> None:
        if self.etcd is not None:  # the etcd members answer and keep quorum before any write
            await self.stop.race(self.etcd.precheck())
        for phase in self.plan.phases:
            self.stop.check()
            match phase.name:
                case "outputs":
                    self.write_outputs(phase)
                    continue
                case "swap":
                    await check_members(self, phase)
                    self.trust_new_issuers(phase)
                case "remove":
                    await check_members(self, phase)
                    await rewrite_before_remove(self, phase)
                case "move" | "accept":
                    pass
                case _:
                    assert_never(phase.name)
            await self.patch_phase(phase, self.phase_credential(phase))
            if phase.recertify:
                await recertify_workers(self, phase, self.phase_credential(phase))
            for gate in phase.gates:
                await self.stop.race(self.gate(gate))
            await confirm(self, phase)

    def trust_new_issuers(self, phase: op.Phase) -> None:
        """Before a swap: the talosconfig and kubeconfig on disk also trust the new issuers' server
        certificates, so they keep working while nodes switch until the new credentials are written."""
        issuers: dict[str, str] = {}  # per PKI, the first new issuer of the phase
        for e in phase.edits:
            if (issuer := op.new_issuer(e)) is not None:
                issuers.setdefault(e.pki, issuer)
        for pki_name, new in issuers.items():
            if pki_name == "talos" and self.desired.talosconfig_output is not None:
                path = self.desired.talosconfig_output
                context = self.desired.context if path == self.desired.talosconfig else None
                check_output(self, "talosconfig", path)
                if trust_also(path, self.keys.cert_pem(new), context=context):
                    self.outputs_seen[str(path)] = read_output(path)
                    detail = f"talosconfig {path} (now also trusts {self.plan.label(new)})"
                    self.record("swap", "output", "ok", detail=detail)
            if pki_name == "kubernetes" and self.desired.kubeconfig_output is not None:
                path = self.desired.kubeconfig_output
                check_output(self, "kubeconfig", path)
                if trust_also(path, self.keys.cert_pem(new), cluster=self.desired.cluster):
                    self.outputs_seen[str(path)] = read_output(path)
                    detail = f"kubeconfig {path} (now also trusts {self.plan.label(new)})"
                    self.record("swap", "output", "ok", detail=detail)

    def summary(self) -> str:
        """What this run changed, for the message when it stops early."""
        writes = [s for s in self.steps if s.ok("write")]
        per_phase = {p: sum(1 for s in writes if s.phase == p) for p in dict.fromkeys(s.phase for s in writes)}
        gates = sum(1 for s in self.steps if s.ok("gate"))
        outputs = [s.detail or "" for s in self.steps if s.kind == "output"]
        done = ", ".join(f"{p} on {n} nodes ({_names(s.node or '' for s in writes if s.phase == p)})"
                         for p, n in per_phase.items()) or "no node changed"
        unknown = [s.node or "" for s in self.steps if s.kind == "write" and s.outcome == "failed"
                   and NOT_APPLIED not in (s.message or "")]
        if unknown:
            done += f"; unknown whether the write reached {_names(unknown)}"
        wrote = f"; wrote {', '.join(outputs)}" if outputs else "; no output written yet"
        return f"done before the stop: {done}, {gates} gates passed{wrote}"

    async def patch_phase(self, phase: op.Phase, cred: TLSIdentity | None) -> None:
        nodes = phase.nodes()
        self.reporter.start(f"{phase.name}: patching {len(nodes)} nodes", len(nodes))
        roles = {n.address: n.role for n in self.plan.nodes}

        async def patch(address: str) -> None:
            edits = phase.edits_for(address)  # both PKIs' edits of this phase: one ApplyConfiguration
            detail = ", ".join(f"{e.pki}: {self.plan.describe(e)}" for e in edits)
            self.reporter.begin(address)
            try:
                await fresh(self, phase, address, cred)
            except TrustplanError:
                self.reporter.fail(address)
                raise
            before = self.configs[address]  # as read just now: a foreign edit kept is in it
            after = rewrite_config(before, edits, self.keys.cert_pem, self.keys.key_pem, self.keys.material_for)
            reboot = (self.etcd is not None and roles[address] == "controlplane" and etcdroll.restarts(phase, address)
                      and self.provider.capabilities.reboot is not None)
            trial = self.trial
            self.trial = trial and not reboot  # a reboot drops a try-mode config: Talos keeps it in memory only
            mode = {"mode": "try"} if self.trial and self.provider.capabilities.trial is not None else {}
            try:
                kubelet = self.provider.capabilities.kubelet
                if kubelet is not None and self.restarts_kubelet(address, after):
                    await self.write_with_kubelet_restart(kubelet, phase, address, after, cred)
                else:
                    await send(self, phase, address, after.data, cred)
                    self.configs[address] = after
                if roles[address] == "controlplane" and restarts_apiserver(before, after):
                    await self.wait_apiserver(phase, address)
                if reboot and self.etcd is not None:
                    await self.stop.race(self.etcd.restart(phase, address))
            except TrustplanError as exc:
                if self.configs[address] is after:  # the node took the config; what failed came after it
                    self.record(phase.name, "write", "ok", node=address, detail=detail,
                                message=f"applied; then: {exc}", **mode)
                else:
                    self.record(phase.name, "write", "failed", node=address, detail=detail, message=str(exc),
                                **mode)
                self.reporter.fail(address)
                raise
            finally:
                self.trial = trial
            self.record(phase.name, "write", "ok", node=address, detail=detail, **mode)
            self.reporter.advance(address)

        cps = [a for a in nodes if roles[a] == "controlplane"]
        workers = [a for a in nodes if roles[a] != "controlplane"]
        rollout = self.rollout
        if self.workers_first:  # a rollback undoes a phase in reverse order
            await bounded(workers, rollout.worker_parallelism, patch, self.stop)
            await bounded(cps, rollout.controlplane_parallelism, patch, self.stop)
            self.reporter.done()
            return
        # control planes first; one at a time when each reboots (etcd keeps quorum: one member down at most)
        await bounded(cps, 1 if etcdroll.rolls(phase) else rollout.controlplane_parallelism, patch, self.stop)
        canary = workers[: rollout.canary] if len(workers) > rollout.canary else []
        if canary:  # a few workers alone, the phase's gates on what changed so far, then the rest
            await bounded(canary, rollout.worker_parallelism, patch, self.stop)
            self.reporter.done()
            for gate in phase.gates:
                changed = {*cps, *canary}
                await self.stop.race(self.gate(replace(gate, nodes=tuple(a for a in gate.nodes if a in changed)),
                                               "canary"))
            self.reporter.start(f"{phase.name}: patching {len(workers) - len(canary)} more workers",
                                len(workers) - len(canary))
        await bounded(workers[len(canary):], rollout.worker_parallelism, patch, self.stop)
        self.reporter.done()

    def restarts_kubelet(self, address: str, after: MachineConfig) -> bool:
        """Whether writing `after` changes the node's Kubernetes CA fields (its kubelet restarts)."""
        return self.configs[address].ca_fields("kubernetes") != after.ca_fields("kubernetes")

    async def write_with_kubelet_restart(
        self, watcher: KubeletWatcher, step: op.Phase, address: str, after: MachineConfig, cred: TLSIdentity | None
    ) -> None:
        """Apply with a watch on the node's kubelet (talosctl's PatchNodeConfigWithKubeletRestart):
        it must be healthy first, and come back healthy within the Kubernetes verify timeout."""
        timeout = self.desired.rollout.timeout("kubernetes")
        ref = self.refs[address]
        phase = step.name
        async with watcher.kubelet_restart(ref, cred, timeout) as kubelet:
            await send(self, step, address, after.data, cred)
            self.configs[address] = after  # applied
            self.reporter.note(f"{phase}: {address}: waiting for its kubelet to restart")
            try:
                await self.stop.race(kubelet.wait())
            except TrustplanError as exc:
                self.record(phase, "kubelet", "failed", node=address, message=str(exc))
                raise
        self.record(phase, "kubelet", "ok", node=address, detail="kubelet restarted, running and healthy")

    async def wait_apiserver(self, phase: op.Phase, address: str) -> None:
        """After a write that restarts a control plane's kube-apiserver: wait until it answers
        /readyz with the credential of the phase's Kubernetes gate (valid once this node has the
        phase's edits), within the Kubernetes verify timeout, so that the next control plane's API
        server goes down only once this one is back (at most `controlplane_parallelism` down)."""
        gate = next((g for g in phase.gates if g.pki == "kubernetes"), None)
        if gate is None or not self.provider.capabilities.kubernetes_api or self.desired.kube_endpoints:
            return  # no Kubernetes API (configs on disk), no credential for it, or endpoints not per node
        from trustplan.providers.kubechecks.nodes import KubernetesChecker

        server = self.desired.kube_servers([address])[0]
        checker = KubernetesChecker([server], self.desired.rollout.timeout("kubernetes"))
        self.reporter.note(f"{phase.name}: {address}: waiting for its kube-apiserver (/readyz)")
        try:
            await self.stop.race(checker.wait_ready(server, self.mint("kubernetes", gate.credential)))
        except TrustplanError as exc:
            self.record(phase.name, "apiserver", "failed", node=address, message=str(exc))
            raise
        self.record(phase.name, "apiserver", "ok", node=address, detail="kube-apiserver ready (/readyz)")

    async def gate(self, gate: op.Gate, stage: str = "") -> None:
        """Prove the gate's credential reaches its nodes (`stage` "canary": the canaries of a phase)."""
        if gate.pki == "kubernetes" and self.provider.capabilities.kubernetes_api:
            await self.kube_gate(gate)
            return
        if KINDS[gate.pki].holders == "controlplane":
            if gate.pki == "etcd" and self.etcd is not None and self.provider.capabilities.reboot is not None:
                # the members themselves (a member's config can say less than it runs: etcdprobe)
                await self.etcd.gate(gate.after, gate.credential.issuer, f"after the {gate.after} phase")
                return
            self.shared_gate(gate)
            if gate.pki in ("aggregator", "serviceaccount") and self.provider.capabilities.kubernetes_api:
                await api_gate(self, gate)
            if gate.pki == "encryption" and self.provider.capabilities.kubernetes_api:
                await encryption_gate(self, gate)
            return
        cred = self.mint(gate.pki, gate.credential)
        self.reporter.start(
            f"{stage + ' ' if stage else ''}gate after {gate.after}: {gate.pki} API with "
            f"{self.plan.label(gate.credential.issuer)}", len(gate.nodes)
        )

        async def check(address: str) -> None:
            self.reporter.begin(address)
            try:
                await self.provider.verify(self.refs[address], cred)
            except TrustplanError as exc:
                self.record(gate.after, "gate", "failed", node=address, pki=gate.pki, message=str(exc))
                self.reporter.fail(address)
                raise
            self.reporter.advance(address)

        many = self.provider.capabilities.verify_many
        if many is not None:
            await self.gate_in_groups(gate, cred, many)
        else:
            await bounded(list(gate.nodes), self.rollout.gate_parallelism, check)
        detail = f"{stage + ': ' if stage else ''}{len(gate.nodes)} nodes"
        self.record(gate.after, "gate", "ok", pki=gate.pki, detail=detail)
        self.reporter.done()

    def shared_gate(self, gate: op.Gate) -> None:
        """A control-plane-only kind's gate, from the configs the nodes run (each read back after its
        write): every API server accepts what the gate's issuer issues, and issues only from the
        gate's trusted ones. (The API servers' own answer needs a real kube-apiserver: issue 22.)"""
        for address in gate.nodes:
            trust, _ = kind_trust(gate.pki, machineconfig.kind_fields(self.configs[address], gate.pki))
            problem = None
            if gate.credential.issuer not in trust.trusted:
                problem = f"does not accept {self.plan.label(gate.credential.issuer)}"
            elif trust.issuer not in gate.credential.trusted:
                problem = f"still issues from {self.plan.label(trust.issuer or '?')}"
            if problem is not None:
                message = f"node {address}: the {KINDS[gate.pki].name} {problem}"
                self.record(gate.after, "gate", "failed", node=address, pki=gate.pki, message=message)
                raise GateFailedError(message)
        self.record(gate.after, "gate", "ok", pki=gate.pki, detail=f"{len(gate.nodes)} nodes (configs)")

    async def gate_in_groups(self, gate: op.Gate, cred: TLSIdentity, verifier: ManyVerifier) -> None:
        """The gate's nodes in groups of `rollout.gate_parallelism`, one call per group (the
        endpoint fans it out to the group's nodes), group after group; a failed node stops the gate."""
        nodes, size = list(gate.nodes), max(1, self.rollout.gate_parallelism)
        for start in range(0, len(nodes), size):
            group = nodes[start : start + size]
            for address in group:
                self.reporter.begin(address)
            results = await verifier.verify_many([self.refs[a] for a in group], cred)
            failed: TrustplanError | None = None
            for address, result in zip(group, results, strict=True):
                if isinstance(result, TrustplanError):
                    self.record(gate.after, "gate", "failed", node=address, pki=gate.pki, message=str(result))
                    self.reporter.fail(address)
                    failed = failed or result
                else:
                    self.reporter.advance(address)
            if failed is not None:
                raise failed

    async def kube_gate(self, gate: op.Gate) -> None:
        """A Kubernetes gate through the Kubernetes API itself: every control plane's API server
        answers with the phase's admin cert and CA bundle, and lists every gate node Ready."""
        from trustplan.providers.kubechecks.nodes import ExpectedNode, KubernetesChecker

        cred = self.mint("kubernetes", gate.credential)
        cps = [n.address for n in self.plan.nodes if n.role == "controlplane"]
        servers = self.desired.kube_servers(cps)
        expected = [ExpectedNode(a, self.configs[a].hostname) for a in gate.nodes]
        checker = KubernetesChecker(servers, self.desired.rollout.timeout("kubernetes"))
        self.reporter.start(
            f"gate after {gate.after}: Kubernetes API with {self.plan.label(gate.credential.issuer)} "
            f"({len(expected)} nodes Ready on {len(servers)} API servers)",
            len(servers),
        )
        try:
            await checker.check(cred, expected, on_wait=self.reporter.note, on_pass=self.reporter.advance)
        except TrustplanError as exc:
            self.record(gate.after, "gate", "failed", pki=gate.pki, message=str(exc))
            raise
        finally:
            self.reporter.done()
        self.record(
            gate.after, "gate", "ok", pki=gate.pki, detail=f"{len(expected)} nodes Ready on {len(servers)} API servers"
        )

    def write_outputs(self, phase: op.Phase) -> None:
        secrets: dict[str, tuple[bytes, bytes]] = {}
        kinds: dict[PKI, kubecreds.Material] = {}
        for out in phase.outputs:
            match out.output:
                case "talosconfig":
                    path = self.desired.talosconfig_output
                    assert path is not None
                    check_output(self, "talosconfig", path)
                    crt, key = self.admin_pems("talos", out.ca)
                    context, endpoints = self.talos_context()
                    write_talosconfig(
                        path, context=context, endpoints=endpoints, ca_pem=self.keys.cert_pem(out.ca), crt_pem=crt,
                        key_pem=key,
                    )
                    self.record("outputs", "output", "ok", detail=f"talosconfig {path}")
                case "kubeconfig":
                    path = self.desired.kubeconfig_output
                    assert path is not None
                    check_output(self, "kubeconfig", path)
                    crt, key = self.admin_pems("kubernetes", out.ca)
                    doc = kubeconfig_document(
                        self.desired.cluster, self.kube_server(), self.kube_bundle(out.ca), crt, key
                    )
                    write_kubeconfig(path, doc, merge=self.desired.kubeconfig_merge)
                    self.record("outputs", "output", "ok", detail=f"kubeconfig {path}")
                case "secrets" if KINDS[out.pki].holders == "controlplane":
                    kinds[out.pki] = self.keys.material_for(out.pki, out.ca)
                case "secrets":
                    secrets["os" if out.pki == "talos" else "k8s"] = (
                        self.keys.cert_pem(out.ca),
                        self.keys.key_pem(out.ca),
                    )
                case _:
                    assert_never(out.output)
        if (secrets or kinds) and self.desired.secrets is not None:
            check_output(self, "secrets", self.desired.secrets)
            update_secrets(self.desired.secrets, secrets, kinds)
            self.record("outputs", "output", "ok", detail=f"secrets {self.desired.secrets}")

    def talos_context(self) -> tuple[str, list[str]]:
        """Context name and endpoints for the new talosconfig: the operator's (when the provider
        reaches the nodes through its endpoints), or the cluster name and the control planes."""
        if self.provider.capabilities.endpoints:
            return operator_context(self.desired)
        return self.desired.cluster, [n.address for n in self.plan.nodes if n.role == "controlplane"]

    def _first_cp(self) -> MachineConfig:
        cp = next(n.address for n in self.plan.nodes if n.role == "controlplane")
        return self.configs[cp]

    def kube_server(self) -> str:
        endpoint = ((self._first_cp().v1alpha1.get("cluster") or {}).get("controlPlane") or {}).get("endpoint")
        return str(endpoint or f"https://{self.plan.nodes[0].address}:6443")

    def kube_bundle(self, issuer: str) -> bytes:
        """CA data like `talosctl kubeconfig`: the issuing CA first, then the accepted CAs, as the
        control planes will have them at the end of the plan (the kubeconfig is written before the
        remove phase, and must not keep trusting a CA that phase revokes)."""
        cp = next(n.address for n in self.plan.nodes if n.role == "controlplane")
        fields = self.configs[cp].ca_fields("kubernetes")
        issuing, accepted_cas = fields.cas(f"node {cp}")
        pems = {ca.fingerprint: ca.pem for ca in (issuing, *accepted_cas) if ca is not None}
        after = next((t.after for t in self.plan.targets if t.node == cp and t.pki == "kubernetes"), None)
        accepted = list(after.accepted) if after is not None else [fp for fp in pems if fp != issuer]
        fps = [issuer, *(fp for fp in accepted if fp != issuer)]
        return b"".join(pems.get(fp) or self.keys.cert_pem(fp) for fp in fps)

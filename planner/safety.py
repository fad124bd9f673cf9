"""Replay a plan on a model of the cluster and refuse it if any step would lock someone out.

The model follows Talos's trust rules (docs/talos-model.md: Talos API trust, worker trust, Kubernetes trust):
- a control plane's apid trusts client certs from its accepted CAs + its issuer, and serves a cert
  from its issuer; it proxies to other nodes with an os:impersonator cert from its issuer;
- a worker gets its server cert and its client-trust bundle from a control plane's trustd when its
  own config changes (so worker trust follows the control planes), and must itself trust the
  control planes' issuer to talk to trustd at all. Its live bundle cannot be read: the model
  guesses it (what every control plane trusts now) unless the node was probed directly
  (`LiveNode.probed_accepts/refuses`), which overrides the guess;
- every kube-apiserver (control planes) trusts cluster.ca + cluster.acceptedCAs, and every node's
  kubelet must trust the CA of every API server certificate;
- the control-plane-only kinds (KINDS[k].holders == "controlplane": the aggregator CA, the
  service-account signing key, the encryption-at-rest key) are shared by the API servers: whatever
  one API server issues (a front-proxy client cert, a token, a Secret written to etcd) every API
  server must accept (trust the cert, verify the token, decrypt the value), so every control plane
  must trust every control plane's issuer after each write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from trustplan.planner.model import KINDS, PKI, Credential, LiveTrust, PlanInput
from trustplan.planner.ops import (
    AcceptCA,
    Edit,
    Gate,
    MoveToDocument,
    OutputKind,
    Phase,
    RemoveCA,
    SwapIssuer,
    apply_edit,
)
from trustplan.planner.result import Plan


class UnsafePlan(Exception):
    """The plan would lock someone out; the message says which step, which node and why."""


@dataclass
class _Node:
    address: str
    role: str
    trust: dict[PKI, LiveTrust]
    server_issuers: frozenset[str]  # Talos API: CAs that may have issued its current server cert
    client_trust: frozenset[str]  # Talos API: CAs whose client certs its apid accepts


class _Model:
    def __init__(self, plan: Plan, inp: PlanInput) -> None:
        self.plan = plan
        self.key_ok = {a.fingerprint: a.key_available for a in inp.authorities}
        self.managed = plan.managed
        #: kinds replaced in place (`--allow-disruptive`): API servers disagree during the phase, and the
        #: plan's `disruptive` warning says so; the gate after it still proves them consistent
        self.in_place = {w.pki for w in plan.warnings if w.code == "disruptive"}
        self.nodes: dict[str, _Node] = {}
        for n in plan.nodes:
            self.nodes[n.address] = _Node(n.address, n.role, n.trusts(), frozenset(), frozenset())
        # roles never change during a replay: list them once (reach checks ask for every node)
        self._cps = [n for n in self.nodes.values() if n.role == "controlplane"]
        self._workers = [n for n in self.nodes.values() if n.role == "worker"]
        for node in self.cps():
            node.server_issuers = frozenset({node.trust["talos"].issuer} - {None})  # type: ignore[arg-type]
            node.client_trust = node.trust["talos"].trusted
        probes = {n.address: n for n in inp.nodes}
        for node in self.workers():
            self._reissue_worker(node, initial=True)
            # the guess above assumes the worker asked trustd since the control planes last changed;
            # what its apid was seen to accept or refuse (probed directly) overrides it
            seen = probes.get(node.address)
            if seen is not None and (seen.probed_accepts or seen.probed_refuses):
                refused, accepted = frozenset(seen.probed_refuses), frozenset(seen.probed_accepts)
                node.client_trust = (node.client_trust - refused) | accepted

    def cps(self) -> list[_Node]:
        return self._cps

    def workers(self) -> list[_Node]:
        return self._workers

    def label(self, fp: str) -> str:
        return self.plan.label(fp)

    def labels(self, fps: frozenset[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(sorted(self.label(f) for f in fps)) + "]" if fps else "[nothing]"

    # --- the Talos API ------------------------------------------------------------------------

    def _reissue_worker(self, node: _Node, initial: bool = False) -> None:
        cps = self.cps()
        if not cps:  # a plan over workers only: assume their own fields describe them
            node.server_issuers = frozenset({node.trust["talos"].issuer} - {None})  # type: ignore[arg-type]
            node.client_trust = node.trust["talos"].trusted
            return
        issuers = frozenset(i for cp in cps if (i := cp.trust["talos"].issuer))
        own = node.trust["talos"].trusted
        if not initial and not issuers <= own:
            raise UnsafePlan(
                f"worker {node.address} would not trust its control planes' trustd certificate "
                f"(issued by {self.labels(issuers - own)}), so it could not get a new server certificate; "
                f"it trusts only {self.labels(own)}"
            )
        node.server_issuers = issuers
        trust = frozenset.intersection(*(cp.trust["talos"].trusted for cp in cps))
        node.client_trust = trust

    def recertify(self, node: _Node) -> None:
        """A worker's config write that changes no CA field: it asks a control plane's trustd again."""
        if node.role != "worker":
            raise UnsafePlan(f"internal: recertify names {node.address}, which is not a worker")
        self._reissue_worker(node)

    def talos_reach(self, target: _Node, cred: Credential) -> str | None:
        """None if `cred` reaches `target` through every control-plane endpoint; else why not."""
        who = f"an admin certificate from {self.label(cred.issuer)}"
        trusted = frozenset(cred.trusted)
        for ep in self.cps():
            if cred.issuer not in ep.client_trust:
                return f"endpoint {ep.address} would refuse {who}: it trusts only {self.labels(ep.client_trust)}"
            if not ep.server_issuers <= trusted:
                return (
                    f"the client would refuse endpoint {ep.address}'s server certificate "
                    f"(issued by {self.labels(ep.server_issuers)}); it trusts {self.labels(trusted)}"
                )
            if target is ep:
                continue
            ep_issuer = ep.trust["talos"].issuer
            if ep_issuer not in target.client_trust:
                return (
                    f"node {target.address} would refuse the proxy certificate of endpoint {ep.address} "
                    f"(issued by {self.label(ep_issuer or '?')}); it trusts only {self.labels(target.client_trust)}"
                )
            if not target.server_issuers <= ep.client_trust:
                return (
                    f"endpoint {ep.address} would refuse node {target.address}'s server certificate "
                    f"(issued by {self.labels(target.server_issuers)})"
                )
        if not self.cps():
            if cred.issuer not in target.client_trust:
                return f"node {target.address} would refuse {who}; it trusts only {self.labels(target.client_trust)}"
            if not target.server_issuers <= trusted:
                return f"the client would refuse node {target.address}'s server certificate"
        return None

    # --- the Kubernetes API ---------------------------------------------------------------------

    def kube_reach(self, cred: Credential, pki: PKI = "kubernetes") -> str | None:
        """None if every kube-apiserver accepts what `cred.issuer` issued (an admin cert, a
        front-proxy cert, a token, a value in etcd) and issues only from `cred.trusted`."""
        for cp in self.cps():
            t = cp.trust[pki]
            if cred.issuer not in t.trusted:
                return (
                    f"{_who(pki)} on {cp.address} would refuse {_issued_by(pki, self.label(cred.issuer))}; "
                    f"it trusts only {self.labels(t.trusted)}"
                )
            if t.issuer not in cred.trusted and pki == "kubernetes":
                return f"the client would refuse the kube-apiserver certificate of {cp.address}"
            if t.issuer not in cred.trusted:
                return f"{_who(pki)} on {cp.address} would still {_issues(pki)} {self.label(t.issuer or '?')}"
        return None

    def shared_consistent(self, pki: PKI) -> str | None:
        """A control-plane-only kind: every API server accepts what every API server issues."""
        issuers = {cp.address: i for cp in self.cps() if (i := cp.trust[pki].issuer)}
        for cp in self.cps():
            for other, issuer in issuers.items():
                if issuer not in cp.trust[pki].trusted:
                    return (
                        f"{_who(pki)} on {cp.address} would refuse {_issued_by(pki, self.label(issuer))} "
                        f"(the {KINDS[pki].name} of {other}); it trusts only {self.labels(cp.trust[pki].trusted)}"
                    )
        return None

    def kube_consistent(self, nodes: list[_Node]) -> str | None:
        issuers = frozenset(i for cp in self.cps() if (i := cp.trust["kubernetes"].issuer))
        for node in nodes:
            missing = issuers - node.trust["kubernetes"].trusted
            if missing:
                return (
                    f"the kubelet on {node.address} would not trust the kube-apiserver certificate "
                    f"issued by {self.labels(missing)}"
                )
        return None

    # --- applying edits ---------------------------------------------------------------------------

    def apply(self, node: _Node, edits: tuple[Edit, ...]) -> None:
        for e in edits:
            before = node.trust[e.pki]
            key_ok = False  # only a swap installs an issuer, with its key when the keystore has it
            match e:
                case AcceptCA():
                    pass
                case SwapIssuer(new=new):
                    key_ok = self.key_ok.get(new, False)
                case MoveToDocument():
                    pass
                case RemoveCA(ca=ca):
                    if ca == before.issuer:
                        raise UnsafePlan(f"removing {self.label(ca)} from {node.address} would remove its issuing CA")
                case _:
                    assert_never(e)
            node.trust[e.pki] = apply_edit(before, e, key_ok)
        self.check_node(node)
        if "talos" in {e.pki for e in edits}:
            if node.role == "controlplane":
                node.server_issuers = frozenset({node.trust["talos"].issuer} - {None})  # type: ignore[arg-type]
                node.client_trust = node.trust["talos"].trusted
            else:
                self._reissue_worker(node)
        elif node.role == "worker":  # any config change re-requests the worker's certificate
            self._reissue_worker(node)
        if "kubernetes" in self.managed:
            changed_cp_issuer = node.role == "controlplane" and any(
                isinstance(e, SwapIssuer) for e in edits if e.pki == "kubernetes"
            )
            why = self.kube_consistent(list(self.nodes.values()) if changed_cp_issuer else [node])
            if why:
                raise UnsafePlan(why)
        for pki in dict.fromkeys(e.pki for e in edits):
            if KINDS[pki].holders == "controlplane" and pki not in self.in_place and (
                why := self.shared_consistent(pki)
            ):
                raise UnsafePlan(why)

    def check_node(self, node: _Node) -> None:
        for pki in self.managed:
            if pki not in node.trust:  # a kind this node does not hold
                continue
            t = node.trust[pki]
            field = KINDS[pki].field
            if not t.trusted:
                raise UnsafePlan(f"node {node.address} would be left without any trusted {KINDS[pki].name}")
            if node.role == "controlplane":
                if t.issuer is None or not t.issuer_has_key:
                    what = self.label(t.issuer) if t.issuer else "nothing"
                    raise UnsafePlan(
                        f"control plane {node.address} would have {field} = {what} without its private key "
                        f"(no key for it in the keystore, the import or any control plane's config)"
                    )
            elif t.issuer_has_key:
                raise UnsafePlan(f"worker {node.address} would hold the {field} private key; workers must not")


def check_plan(plan: Plan, inp: PlanInput, *, mixes: bool = True) -> None:
    """Raise UnsafePlan naming the first step that would lock someone out. `mixes`: also every mix of
    confirmed and reverted writes of a phase (its writes go in try mode); a rollback, written for good
    in the order it is proven in, passes False."""
    model = _Model(plan, inp)
    for node in model.nodes.values():  # the live state itself must be sane for what we manage
        for pki in plan.managed:
            if node.role == "worker" and pki in node.trust and node.trust[pki].issuer_has_key:
                raise UnsafePlan(
                    f"worker {node.address} holds the {KINDS[pki].field} private key in its live config; "
                    "fix the config before rotating"
                )
    for phase in plan.phases:
        before = _snapshot(model, (*phase.nodes(), *phase.recertify))
        for address in phase.nodes():
            node = model.nodes[address]
            if phase.credential is not None:
                why = model.talos_reach(node, phase.credential)
                if why:
                    raise UnsafePlan(f"{phase.name} phase, before changing {address}: {why}")
            model.apply(node, phase.edits_for(address))
        for address in phase.recertify:  # a write that changes no CA field: the worker asks trustd again
            node = model.nodes[address]
            if phase.credential is not None:
                why = model.talos_reach(node, phase.credential)
                if why:
                    raise UnsafePlan(f"{phase.name} phase, before recertifying {address}: {why}")
            model.recertify(node)
        for gate in phase.gates:
            _check_gate(model, gate)
        if mixes:
            _check_mixes(model, phase, before)
        for out in phase.outputs:
            if not model.key_ok.get(out.ca, False):
                raise UnsafePlan(
                    f"cannot write the {out.output} output: no private key for {model.label(out.ca)} "
                    "(import it into the keystore, or name a CA whose key trustplan holds as the issuer)"
                )
            _check_output(model, out.output, out.ca, "when it is written")
    for out in plan.outputs:
        _check_output(model, out.output, out.ca, "at the end of the plan")
    for t in plan.targets:
        if model.nodes[t.node].trust[t.pki] != t.after:
            raise UnsafePlan(f"internal: replay of {t.node} ({t.pki}) does not end in the planned state")


_State = tuple[dict[PKI, LiveTrust], frozenset[str], frozenset[str]]


def _snapshot(model: _Model, addresses: tuple[str, ...]) -> dict[str, _State]:
    """The phase's nodes as they are before it: what a node the phase wrote returns to when its
    try-mode write is reverted instead of confirmed."""
    out: dict[str, _State] = {}
    for a in addresses:
        n = model.nodes[a]
        out[a] = (dict(n.trust), n.server_issuers, n.client_trust)
    return out


def _check_mixes(model: _Model, phase: Phase, before: dict[str, _State]) -> None:
    """The dead-man switch: each node a phase writes keeps its write only once confirmed after the
    phase's gates, and returns to its state of before on its own otherwise. So after a stop anywhere in
    the phase, any mix of nodes before and after it is possible. Every condition of the reach checks
    is about a pair of nodes (an endpoint and a target), so every mix is safe when each condition
    holds for the worst of each node's two states: it trusts only what both states trust, and may
    present a certificate from either state's issuer. Proven for the credential the phase is sent
    with (the operator's until the phase is confirmed) and for the kubelets' trust."""
    if not before:
        return
    worst: dict[str, _Node] = {}
    for n in model.nodes.values():
        if n.address not in before:
            worst[n.address] = n
            continue
        trust0, issuers0, client0 = before[n.address]
        trust = {p: LiveTrust(n.trust[p].issuer, n.trust[p].issuer_has_key,
                              tuple(c for c in n.trust[p].accepted if c in trust0[p].trusted)) for p in n.trust}
        worst[n.address] = _Node(n.address, n.role, trust, n.server_issuers | issuers0, n.client_trust & client0)
    cps = [w for w in worst.values() if w.role == "controlplane"]
    first_issuers = {a: {p: t.issuer for p, t in st[0].items()} for a, st in before.items()}

    def issuers(node: _Node, pki: PKI) -> set[str]:
        return {i for i in (node.trust[pki].issuer, first_issuers.get(node.address, {}).get(pki)) if i}

    def trusted(node: _Node, pki: PKI) -> frozenset[str]:
        now = model.nodes[node.address].trust[pki].trusted
        return now & before[node.address][0][pki].trusted if node.address in before else now

    cred = phase.credential
    if cred is not None and "talos" in model.managed:
        for target in worst.values():
            for ep in cps:
                why = None
                if cred.issuer not in ep.client_trust:
                    why = f"endpoint {ep.address} may refuse {model.label(cred.issuer)}'s admin certificate"
                elif not ep.server_issuers <= frozenset(cred.trusted):
                    why = f"the client may refuse endpoint {ep.address}'s server certificate"
                elif target is not ep and not issuers(ep, "talos") <= target.client_trust:
                    why = f"node {target.address} may refuse the proxy certificate of endpoint {ep.address}"
                elif target is not ep and not target.server_issuers <= ep.client_trust:
                    why = f"endpoint {ep.address} may refuse node {target.address}'s server certificate"
                if why:
                    raise UnsafePlan(f"{phase.name} phase: with some of its writes confirmed and the others "
                                     f"reverted by the node (try mode), {why}")
    if "kubernetes" in model.managed:
        every = set().union(*(issuers(cp, "kubernetes") for cp in cps)) if cps else set()
        for node in worst.values():
            missing = every - trusted(node, "kubernetes")
            if missing:
                raise UnsafePlan(f"{phase.name} phase: with some of its writes confirmed and the others reverted "
                                 f"(try mode), the kubelet on {node.address} may not trust the kube-apiserver "
                                 f"certificate issued by {model.labels(frozenset(missing))}")


def _check_output(model: _Model, output: OutputKind, ca: str, when: str) -> None:
    """The credential an output holds (an admin cert from `ca`, trusting `ca`) must reach every node."""
    cred = Credential(ca, (ca,))
    match output:
        case "talosconfig":
            for node in model.nodes.values():
                why = model.talos_reach(node, cred)
                if why:
                    raise UnsafePlan(f"the new talosconfig would not work {when}: {why}")
        case "kubeconfig":
            why = model.kube_reach(cred)
            if why:
                raise UnsafePlan(f"the new kubeconfig would not work {when}: {why}")
        case "secrets":  # secrets.yaml holds the CAs themselves: nothing connects with it
            pass
        case _:
            assert_never(output)


def _check_gate(model: _Model, gate: Gate) -> None:
    match gate.pki:
        case "talos":
            for address in gate.nodes:
                why = model.talos_reach(model.nodes[address], gate.credential)
                if why:
                    raise UnsafePlan(f"gate after {gate.after} (Talos API): {why}")
        case "kubernetes":
            why = model.kube_reach(gate.credential) or model.kube_consistent(list(model.nodes.values()))
            if why:
                raise UnsafePlan(f"gate after {gate.after} (Kubernetes API): {why}")
        case "aggregator" | "serviceaccount" | "encryption" | "etcd":
            why = model.kube_reach(gate.credential, gate.pki) or model.shared_consistent(gate.pki)
            if why:
                raise UnsafePlan(f"gate after {gate.after} ({KINDS[gate.pki].name}): {why}")
        case _:
            assert_never(gate.pki)


def _issued_by(pki: PKI, label: str) -> str:
    """What the API servers are asked to accept, issued by `label`."""
    match pki:
        case "talos" | "kubernetes":
            return f"an admin certificate from {label}"
        case "aggregator":
            return f"a front-proxy client certificate from {label}"
        case "serviceaccount":
            return f"a service-account token signed with {label}"
        case "encryption":
            return f"a value in etcd encrypted with {label}"
        case "etcd":
            return f"an etcd certificate from {label} (its peers', the kube-apiserver's)"
        case _:
            assert_never(pki)


def _who(pki: PKI) -> str:
    """Who holds a control-plane-only kind on a control plane, for messages."""
    return "the etcd member" if pki == "etcd" else "the kube-apiserver"


def _issues(pki: PKI) -> str:
    match pki:
        case "talos" | "kubernetes" | "aggregator" | "etcd":
            return "issue from"
        case "serviceaccount":
            return "sign tokens with"
        case "encryption":
            return "encrypt with"
        case _:
            assert_never(pki)


__all__ = ["UnsafePlan", "check_plan"]

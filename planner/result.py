"""What the planner makes: a Plan (its phases of steps, each node's trust before and after, the
warnings), and the one description of an edit that the journal and every renderer print. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import assert_never

from trustplan.planner.drain import Deferred
from trustplan.planner.model import KINDS, LEGACY_FIELD, PKI, Authority, DesiredTrust, LiveNode, LiveTrust
from trustplan.planner.ops import AcceptCA, Edit, Gate, MoveToDocument, Phase, RemoveCA, SwapIssuer, WriteOutput


@dataclass(frozen=True)
class NodeTarget:
    """One node's trust for one PKI before and after the plan."""

    node: str
    role: str
    pki: PKI
    before: LiveTrust
    after: LiveTrust


@dataclass(frozen=True)
class PlanWarning:
    """A warning a policy can match: a stable `code` (`ca-untrusted`: the CA `fingerprint` stops
    being trusted by the `nodes` that trusted it; `ca-expiring`: a CA trusted after the plan expires
    within 90 days; `output-refused`: an output is rewritten; `nodes-skipped`; `removal-deferred`: a
    remove held back for the service-account token drain; `tokens-break`: legacy token Secrets that
    stop working), the PKI and CA it
    concerns (None when it concerns neither), the nodes, and the human sentence. A plan file from a
    newer trustplan may carry other codes (shown by their message); a format 1.0 file carries
    messages only, read back with the code "message"."""

    code: str
    pki: PKI | None
    fingerprint: str | None
    nodes: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Plan:
    cluster: str
    managed: tuple[PKI, ...]
    authorities: tuple[Authority, ...]
    nodes: tuple[LiveNode, ...]
    targets: tuple[NodeTarget, ...]
    phases: tuple[Phase, ...]
    warnings: tuple[PlanWarning, ...]  # computed once, by make_plan; renderers only show them
    #: removes held back for a token drain (planner.drain): apply records when the drain started
    deferred: tuple[Deferred, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Anything to do: node edits, or outputs to (re)write."""
        return any(p.edits or p.outputs or p.recertify for p in self.phases)

    @property
    def has_edits(self) -> bool:
        return any(p.edits for p in self.phases)

    @property
    def new_authorities(self) -> tuple[Authority, ...]:
        """CAs no node trusted before the plan: the ones reviewers approve by fingerprint."""
        before = {c for t in self.targets for c in t.before.trusted}
        return tuple(a for a in self.authorities if a.fingerprint not in before)

    def authority(self, fingerprint: str) -> Authority | None:
        for a in self.authorities:
            if a.fingerprint == fingerprint:
                return a
        return None

    def label(self, fingerprint: str) -> str:
        a = self.authority(fingerprint)
        return a.label if a else fingerprint[: len("sha256:") + 12]

    def desired_issuers(self) -> tuple[DesiredTrust, ...]:
        """Each managed PKI's issuer at the end of the plan (from the first node's target)."""
        seen: dict[PKI, DesiredTrust] = {}
        for t in self.targets:
            if t.pki not in seen and t.after.issuer is not None:
                seen[t.pki] = DesiredTrust(t.pki, t.after.issuer, ())
        return tuple(seen.values())

    @cached_property
    def edits(self) -> tuple[Edit, ...]:
        """Every edit of every phase, in order (computed once: renderers and checks ask often)."""
        return tuple(e for p in self.phases for e in p.edits)

    @property
    def gates(self) -> tuple[Gate, ...]:
        return tuple(g for p in self.phases for g in p.gates)

    @property
    def outputs(self) -> tuple[WriteOutput, ...]:
        return tuple(o for p in self.phases for o in p.outputs)

    def _replaced_in_place(self, e: SwapIssuer, old: str) -> bool:
        """The swap's phase also removes `old` from the same node (`--allow-disruptive`)."""
        return any(
            e in p.edits and RemoveCA(e.node, e.role, e.pki, old) in p.edits for p in self.phases if p.name == "swap"
        )

    def describe(self, e: Edit) -> str:
        """One edit in words (CAs by label): the apply journal and every renderer print this."""
        match e:
            case AcceptCA(ca=ca):
                return f"accept {self.label(ca)}"
            case SwapIssuer(new=new, old=old) if old == new:
                return f"restore the key of {self.label(new)} (the config has the certificate only)"
            case SwapIssuer(new=new, old=old) if old is not None and self._replaced_in_place(e, old):
                replaced = f"in place of {self.label(old)} (one value: see the warning)"
                return f"{KINDS[e.pki].issues} {self.label(new)} {replaced}"
            case SwapIssuer(new=new, old=old) if KINDS[e.pki].material != "ca":
                was = f"; {self.label(old)} stays accepted" if old else ""
                return f"{KINDS[e.pki].issues} {self.label(new)}{was}"
            case SwapIssuer(new=new, old=old):
                held = "cert + key" if e.with_key else "cert only"
                was = f"; {self.label(old)} moves to accepted" if old else ""
                return f"{KINDS[e.pki].issues} {self.label(new)} ({held}){was}"
            case RemoveCA(ca=ca):
                return f"remove {self.label(ca)}  ({KINDS[e.pki].revokes})"
            case MoveToDocument(pki=pki):
                return f"move the {KINDS[pki].name} from {LEGACY_FIELD[pki]} into its 1.14 document, unchanged"
            case _:
                assert_never(e)

"""The pure core of trustplan: (desired, live, now) -> Plan, and the safety check. No I/O.

model   the inputs: Authority, LiveNode, LiveTrust, DesiredTrust, PlanInput
ops     the steps: AcceptCA, SwapIssuer, RemoveCA, Gate, WriteOutput, Phase; apply_edit(), revokes()
result  what the planner makes: Plan (with Plan.describe(edit), the one wording of an edit), NodeTarget
plan    make_plan(): compare, order into phases, check
safety  check_plan(): replay on a model of the cluster; UnsafePlan if anyone would be locked out
document  to_document() / from_document(): the canonical JSON form of a plan
"""

from trustplan.planner.model import (
    PKIS,
    Authority,
    Credential,
    DesiredTrust,
    LiveNode,
    LiveTrust,
    Outputs,
    PlanInput,
)
from trustplan.planner.ops import AcceptCA, Gate, Phase, RemoveCA, SwapIssuer, WriteOutput
from trustplan.planner.plan import Plan, PlanningError, PlanWarning, apply_edit, make_plan, suggest_accepted
from trustplan.planner.safety import UnsafePlan, check_plan

__all__ = [
    "PKIS",
    "AcceptCA",
    "Authority",
    "Credential",
    "DesiredTrust",
    "Gate",
    "LiveNode",
    "LiveTrust",
    "Outputs",
    "Phase",
    "Plan",
    "PlanInput",
    "PlanWarning",
    "PlanningError",
    "RemoveCA",
    "SwapIssuer",
    "UnsafePlan",
    "WriteOutput",
    "apply_edit",
    "check_plan",
    "make_plan",
    "suggest_accepted",
]

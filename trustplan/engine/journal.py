"""The journal of an apply (Step, HistoryEntry): the state's history records it, so it lives with
the state (trustplan.state.journal); the engine's modules import it from here or from there."""

from trustplan.state.journal import HistoryEntry as HistoryEntry
from trustplan.state.journal import Status as Status
from trustplan.state.journal import Step as Step

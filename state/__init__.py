"""The state document (which CA is trusted where, and the history of applies) and its local backend."""

from trustplan.state.document import StateDocument, empty_state
from trustplan.state.local import LocalState

__all__ = ["LocalState", "StateDocument", "empty_state"]

"""The state document (which CA is trusted where, and the history of applies) and its backends."""

from __future__ import annotations

from pathlib import Path

from trustplan.state.backend import Holder, KubernetesStateSpec, StateBackend
from trustplan.state.document import StateDocument, empty_state
from trustplan.state.kubernetes import KubernetesState
from trustplan.state.local import LocalState


def open_backend(local_path: Path, remote: KubernetesStateSpec | None) -> StateBackend:
    """The configured backend: the Kubernetes one when `state: {backend: kubernetes}`, else the file.
    A Kubernetes backend saves updates it could not store beside the local path (rescue files)."""
    if remote is not None:
        return KubernetesState(remote, local_path.parent)
    return LocalState(local_path)


__all__ = [
    "Holder",
    "KubernetesState",
    "KubernetesStateSpec",
    "LocalState",
    "StateBackend",
    "StateDocument",
    "empty_state",
    "open_backend",
]

"""The state document (which CA is trusted where, and the history of applies) and its backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustplan.state.backend import Holder, KubernetesStateSpec, StateBackend
from trustplan.state.document import AuthorityRecord, NodeRecord, StateDocument, TrustRecord, empty_state
from trustplan.state.local import LocalState

if TYPE_CHECKING:
    from trustplan.state.kubeapi import KubeAPI
    from trustplan.state.kubernetes import KubernetesState


def __getattr__(name: str) -> Any:
    # the Kubernetes backend imports the kubernetes client (~0.3 s): only when it is used
    if name == "KubernetesState":
        from trustplan.state.kubernetes import KubernetesState

        return KubernetesState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_backend(
    local_path: Path, remote: KubernetesStateSpec | None, connect: Callable[[KubernetesStateSpec], KubeAPI]
) -> StateBackend:
    """The configured backend: the Kubernetes one when `state: {backend: kubernetes}` (reached
    through `connect(remote)`, called only then), else the file. A Kubernetes backend saves updates
    it could not store beside the local path (rescue files)."""
    if remote is not None:
        from trustplan.state.kubernetes import KubernetesState

        return KubernetesState(remote, local_path.parent, connect(remote))
    return LocalState(local_path)


__all__ = [
    "AuthorityRecord",
    "Holder",
    "KubernetesState",
    "KubernetesStateSpec",
    "LocalState",
    "NodeRecord",
    "StateBackend",
    "StateDocument",
    "TrustRecord",
    "empty_state",
    "open_backend",
]

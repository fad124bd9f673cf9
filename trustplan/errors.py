"""Every error trustplan reports to a user, in one hierarchy.

    TrustplanError                 one clear message, exit code 1
    ├── InputError                 a file the user gave is wrong: names file, path, value, rule
    │   ├── SchemaError            the desired state breaks its JSON Schema
    │   └── CAError                a certificate or key is unusable (bad PEM, not a CA, expired, ...)
    ├── UnsafePlanError            the safety check refused the plan (it would lock someone out)
    ├── UnsupportedError           a config layout or feature this version cannot edit safely
    ├── PlanFileError              plan.bin is tampered with, stale, expired, of another cluster ...
    ├── StateError                 the state file is unreadable, locked, or of another lineage
    ├── FilesystemError            a file or folder could not be read or written (names the path)
    ├── KeystoreError              a CA key is missing from the keystore or does not match
    ├── ApplyInterrupted           SIGINT / SIGTERM stopped an apply (exit code 128 + signal number)
    └── ProviderError              a node could not be read, written or verified
        ├── NodeUnreachableError   the node did not answer (after retries)
        │   └── NodeTimeoutError   no answer within the call's deadline (a timeout, named as one)
        └── GateFailedError        a verification gate did not pass in time

Errors never carry private key material. The CLI maps each to one line on stderr and exit code 1
(`exit_code` when an error sets it).
"""

from __future__ import annotations


class TrustplanError(Exception):
    """Base of all user-facing errors; `str(err)` is the complete message."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class InputError(TrustplanError):
    """A user-supplied file breaks a rule. Message: `<file>: <path>: <what> (<rule>)`."""

    def __init__(
        self,
        file: str,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = file
        if line is not None:
            where += f":{line}"
        if path:
            where += f": {path}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.file = file
        self.path = path
        self.line = line


class SchemaError(InputError):
    """The desired-state document does not match schemas/desired.schema.json."""


class CAError(InputError):
    """A certificate or key is unusable for the role it was given."""


class UnsafePlanError(TrustplanError):
    """The safety check found a step that would lock someone out; nothing was saved."""


class UnsupportedError(TrustplanError):
    """A configuration trustplan does not edit yet; refusing beats a wrong edit."""


class PlanFileError(TrustplanError):
    """The plan file cannot be applied as it is."""


class StateError(TrustplanError):
    """The state file cannot be read, locked or written."""


class FilesystemError(TrustplanError):
    """A file or folder could not be read or written: the message names the path and the reason."""


class KeystoreError(TrustplanError):
    """A CA key needed for a step is missing or does not match its certificate."""


class ApplyInterrupted(TrustplanError):
    """A signal stopped an apply; the node writes in flight finished and the state records it."""

    def __init__(self, message: str, *, signal_name: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signal_name = signal_name
        self.exit_code = exit_code


class ProviderError(TrustplanError):
    """A node could not be read, written or verified."""


class NodeUnreachableError(ProviderError):
    """The node did not answer, even after retrying."""


class NodeTimeoutError(NodeUnreachableError):
    """Nothing answered before the call's deadline (reported as a timeout, not as "unreachable")."""


class GateFailedError(ProviderError):
    """A verification gate did not pass before its timeout."""

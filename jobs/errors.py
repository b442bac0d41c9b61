"""Errors raised by workload logic.

    JobError                     root
    ├── InvalidInputError        permanent: the job's input is wrong; never retried
    │   ├── BatchFileError       a whole batch file is unusable (empty, too large, not UTF-8)
    │   └── RepositoryError      a repository path, state or test command is unusable
    ├── EngineError              transient: the engine failed as a whole; the task is retried
    └── SandboxUnavailableError  the sandbox cannot start here (bwrap missing, no namespaces)
"""

from __future__ import annotations


class JobError(Exception):
    """Root of the errors raised in ``jobs``."""


class InvalidInputError(JobError):
    """Permanent: the input must be fixed by the user. ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BatchFileError(InvalidInputError):
    pass


class RepositoryError(InvalidInputError):
    pass


class EngineError(JobError):
    """Transient: the engine as a whole failed (crashed, out of memory); retry the task."""


class SandboxUnavailableError(JobError):
    """bubblewrap is missing or cannot create namespaces: an infrastructure problem."""

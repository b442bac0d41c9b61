"""Errors raised by the scheduler side (submission, store, dispatch).

    NightshiftError                  root of every error Nightshift raises on purpose
    ├── InvalidSubmissionError       permanent: the user's input is wrong; names the field
    │   ├── UnknownModelError        the model alias is not in the catalog
    │   ├── SubmissionTooLargeError  the upload is over the size or line limit
    │   └── WindowConfigError        a night window, duration or deadline is not usable
    └── TaskNotFoundError            permanent: no task with that id

A broker that refuses a task is not an error here: dispatch keeps the task queued and sends it
on its next pass (scheduler.dispatch).
"""

from __future__ import annotations


class NightshiftError(Exception):
    """Root of the scheduler's errors."""


class InvalidSubmissionError(NightshiftError):
    """Input the user must fix. ``field`` names what was wrong (a form field or ``line N``)."""

    def __init__(self, field: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.details = details or []


class UnknownModelError(InvalidSubmissionError):
    def __init__(self, received: str, known: list[str]) -> None:
        allowed = ", ".join(sorted(known)) or "(none configured)"
        super().__init__(
            "model",
            f"unknown model {received!r}; configured models are: {allowed}. "
            "Add it under [models] in nightshift.toml or NIGHTSHIFT_MODELS.",
        )


class SubmissionTooLargeError(InvalidSubmissionError):
    pass


class TaskNotFoundError(NightshiftError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class WindowConfigError(InvalidSubmissionError):
    """A bad night window setting (cron line, time, zone, zero length) or run-now duration."""

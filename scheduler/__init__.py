"""The producer side: settings, tables, the store, Celery configuration and dispatch."""

from scheduler.celery_app import QUEUE, TASK_RUN_BATCH, TASK_RUN_PATCH, make_celery
from scheduler.db import get_engine, session_scope
from scheduler.errors import (
    InvalidSubmissionError,
    NightshiftError,
    SubmissionTooLargeError,
    TaskNotFoundError,
    UnknownModelError,
)
from scheduler.settings import DEMO_MODEL, ModelSpec, Settings, get_settings, load_settings

__all__ = [
    "DEMO_MODEL",
    "QUEUE",
    "TASK_RUN_BATCH",
    "TASK_RUN_PATCH",
    "InvalidSubmissionError",
    "ModelSpec",
    "NightshiftError",
    "Settings",
    "SubmissionTooLargeError",
    "TaskNotFoundError",
    "UnknownModelError",
    "get_engine",
    "get_settings",
    "load_settings",
    "make_celery",
    "session_scope",
]

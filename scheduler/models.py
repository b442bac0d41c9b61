"""Every table Nightshift keeps, layered per entity: base fields, the table, the public view.

Status values are string enums. Timestamps are timezone-aware UTC (stored naive in UTC, since
SQLite has no time zones). Only ``scheduler.store`` changes rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """Stores UTC without a zone and gives back aware datetimes, on SQLite and PostgreSQL."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Nightshift stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def _at(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


# --- tasks -----------------------------------------------------------------------------------


class TaskStatus(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"



class ReviewState(StrEnum):
    """What the user decided about a finished task in the morning."""

    PENDING = "pending"
    ACCEPTED = "accepted"  # merged into a branch the user named, or the patch downloaded
    REJECTED = "rejected"
    REQUEUED = "requeued"  # a new task carries the item again, with the user's note


class TaskBase(SQLModel):
    kind: str = Field(index=True)
    model: str
    owner: str = Field(default="local")
    priority: int = Field(default=0, description="Higher runs first.")
    title: str = Field(default="")
    deadline_at: datetime | None = _at()


class TaskCreate(TaskBase):
    input: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int = 3


class Task(TaskBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    input: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    checkpoint: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    status: TaskStatus = Field(default=TaskStatus.QUEUED, index=True)
    attempts: int = 0
    max_attempts: int = 3
    progress_done: int = 0
    progress_total: int = 0
    worker_name: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    dispatched_at: datetime | None = _at()
    started_at: datetime | None = _at()
    finished_at: datetime | None = _at(index=True)  # the review lists a night's work by it
    # The morning review (see ReviewState); a requeued task points at its successor.
    review: ReviewState = Field(default=ReviewState.PENDING, index=True)
    review_note: str | None = None
    reviewed_at: datetime | None = _at()
    merged_into: str | None = None
    requeued_as: int | None = None
    # The planner's word (scheduler.planning): the worker whose queue the task went to, and a
    # note for the user ("model X fits no worker", "predicted to miss its deadline").
    planned_worker: str | None = None
    plan_note: str | None = None


class TaskPublic(TaskBase):
    id: int
    status: TaskStatus
    attempts: int
    max_attempts: int
    progress_done: int
    progress_total: int
    worker_name: str | None
    error: str | None
    input: dict[str, Any]
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    review: ReviewState
    review_note: str | None
    reviewed_at: datetime | None
    merged_into: str | None
    requeued_as: int | None
    planned_worker: str | None = None
    plan_note: str | None = None


# --- attempts ---------------------------------------------------------------------------------


class AttemptStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"  # the worker vanished (killed, crashed, stopped heartbeating)
    YIELDED = "yielded"  # gave the task back (window closed, owner needed the GPU); not a failure


class Attempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    number: int
    worker_name: str
    status: AttemptStatus = AttemptStatus.RUNNING
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=True)
    ended_at: datetime | None = _at()
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None
    energy_j: float | None = None
    energy_method: str | None = Field(default=None, description="nvml-counter, power-integral or unavailable.")


class AttemptPublic(SQLModel):
    number: int
    worker_name: str
    status: AttemptStatus
    started_at: datetime
    ended_at: datetime | None
    tokens_in: int
    tokens_out: int
    error: str | None
    energy_j: float | None = None
    energy_method: str | None = None


# --- artifacts --------------------------------------------------------------------------------


class ArtifactKind(StrEnum):
    BATCH_INPUT = "batch-input"
    TODO_INPUT = "todo-input"
    PATCH = "patch"


class Artifact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    kind: ArtifactKind
    path: str = Field(description="Relative to the data directory.")
    size_bytes: int
    sha256: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


# --- repositories -----------------------------------------------------------------------------


class RepositoryBase(SQLModel):
    name: str = Field(index=True, unique=True)
    path: str = Field(description="The local checkout Nightshift works from.")
    origin_url: str | None = Field(default=None, description="Where it was cloned from, if a URL.")
    test_command: str
    setup_command: str | None = None


class Repository(RepositoryBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class RepositoryPublic(RepositoryBase):
    id: int
    created_at: datetime


# --- workers ----------------------------------------------------------------------------------


class WorkerState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    LOADING = "loading"
    WORKING = "working"
    STOPPED = "stopped"
    LOST = "lost"
    SUSPENDED = "suspended"  # holds a task but gave the GPU back to its owner
    OWNER_ACTIVE = "owner-active"  # the owner uses the machine; no task is started
    OUTSIDE_WINDOW = "outside-window"  # no night window is open for this worker


class WorkerBase(SQLModel):
    name: str = Field(primary_key=True)
    hostname: str = ""
    hardware: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: WorkerState = WorkerState.STARTING
    resident_model: str | None = None
    current_task_id: int | None = None
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    state_reason: str | None = Field(default=None, description="Why suspended / owner-active.")
    prefetch_model: str | None = Field(default=None, description="The planner's hint: the next model "
                                       "to read into host RAM while the current one runs.")


class Worker(WorkerBase, table=True):
    pass


class WorkerPublic(SQLModel):
    name: str
    hostname: str
    hardware: dict[str, Any]
    state: WorkerState
    resident_model: str | None
    current_task_id: int | None
    heartbeat_at: datetime
    started_at: datetime
    state_reason: str | None = None
    prefetch_model: str | None = None


# --- batch lines ------------------------------------------------------------------------------


class LineStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the engine refused or failed this request
    REJECTED = "rejected"  # invalid at submission; never sent to a worker


class BatchLine(SQLModel, table=True):
    """One line of a submitted batch and, once run, its output line. ``line_no`` is the
    idempotency key: a redelivered task only fills lines that are still pending."""

    __table_args__ = (sa.UniqueConstraint("task_id", "line_no"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    line_no: int
    custom_id: str | None = None
    status: LineStatus = Field(default=LineStatus.PENDING)
    request: str | None = Field(default=None, description="The validated request line, JSON.")
    output: str | None = Field(default=None, description="The output or error line, JSON.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished_at: datetime | None = _at()


# --- users and API tokens ---------------------------------------------------------------------


class User(SQLModel, table=True):
    """The person who logs in to the pages. The password is kept only as an Argon2id hash."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True)
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class ApiToken(SQLModel, table=True):
    """A bearer token for the CLI and scripts. Only its SHA-256 is stored; ``prefix`` (the
    first characters) lets the user tell tokens apart."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    prefix: str
    token_sha256: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    last_used_at: datetime | None = _at()
    revoked_at: datetime | None = _at()


class ApiTokenPublic(SQLModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


# --- night windows ----------------------------------------------------------------------------


class NightWindow(SQLModel, table=True):
    """One opening of a night window. Open while ``closed_at`` is empty and ``closes_at`` lies
    ahead, so a window whose closing job never ran (scheduler down) still ends on time."""

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(index=True, description="'*' for every worker, else one worker's name.")
    reason: str = Field(description="schedule or run-now.")
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    closes_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    closed_at: datetime | None = _at()


class NightWindowPublic(SQLModel):
    scope: str
    reason: str
    opened_at: datetime
    closes_at: datetime
    closed_at: datetime | None


# --- worker events (the night report's swaps and suspensions) --------------------------------


class WorkerEventKind(StrEnum):
    SWAP = "swap"  # the worker loaded a model (its engine started on other weights)
    SUSPEND = "suspend"  # the worker gave the GPU back to its owner, then resumed or gave up


class WorkerEvent(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    worker_name: str = Field(index=True)
    kind: WorkerEventKind
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    ended_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    task_id: int | None = None
    model: str | None = None
    detail: str = ""


class WorkerEventPublic(SQLModel):
    worker_name: str
    kind: WorkerEventKind
    started_at: datetime
    ended_at: datetime
    task_id: int | None
    model: str | None
    detail: str

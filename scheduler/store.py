"""Every change to a row happens here, one function per transition.

Functions take an open session (see ``scheduler.db.session_scope``); the caller commits.
Transitions that race between processes (claiming a task, dispatching it, saving a result
line) are single conditional UPDATEs, so two workers can never both own one task and a
redelivered task never writes a line twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from jobs import OutputLine
from scheduler.errors import TaskNotFoundError
from scheduler.models import (
    ApiToken,
    Artifact,
    ArtifactKind,
    Attempt,
    AttemptStatus,
    BatchLine,
    LineStatus,
    NightWindow,
    Repository,
    RepositoryBase,
    ReviewState,
    Task,
    TaskCreate,
    TaskStatus,
    User,
    Worker,
    WorkerEvent,
    WorkerEventKind,
    WorkerState,
    utcnow,
)

# --- submission -------------------------------------------------------------------------------


def create_task(session: Session, data: TaskCreate) -> Task:
    task = Task.model_validate(data)
    session.add(task)
    session.flush()
    return task


def add_batch_lines(
    session: Session, task: Task, requests: Sequence[tuple[int, str, str]], rejected: Sequence[OutputLine]
) -> None:
    """Store a new batch's lines: ``requests`` as (line_no, custom_id, request JSON) pending,
    ``rejected`` lines with their error already written."""
    now = utcnow()
    rows = [
        {"task_id": task.id, "line_no": no, "custom_id": cid, "status": LineStatus.PENDING,
         "request": body}
        for no, cid, body in requests
    ] + [
        {"task_id": task.id, "line_no": r.line_no, "custom_id": r.custom_id,
         "status": LineStatus.REJECTED, "output": json.dumps(r.payload), "finished_at": now}
        for r in rejected
    ]
    if rows:
        session.execute(sa.insert(BatchLine), rows)
    task.progress_total = len(requests)


def add_artifact(
    session: Session, task_id: int, kind: ArtifactKind, path: str, size_bytes: int, sha256: str
) -> Artifact:
    artifact = Artifact(task_id=task_id, kind=kind, path=path, size_bytes=size_bytes, sha256=sha256)
    session.add(artifact)
    return artifact


# --- dispatch ---------------------------------------------------------------------------------


def queued_tasks(session: Session, limit: int) -> list[Task]:
    query = (
        select(Task)
        .where(Task.status == TaskStatus.QUEUED)
        .order_by(col(Task.priority).desc(), col(Task.created_at), col(Task.id))
        .limit(limit)
    )
    return list(session.exec(query))


def _transition(session: Session, task_id: int, from_: Sequence[TaskStatus], **values) -> bool:
    stmt = (
        sa.update(Task)
        .where(col(Task.id) == task_id, col(Task.status).in_(list(from_)))
        .values(updated_at=utcnow(), **values)
    )
    return session.execute(stmt).rowcount == 1


def mark_dispatched(session: Session, task_id: int, worker_name: str | None = None) -> bool:
    """Queued -> dispatched (to ``worker_name``'s own queue, or the shared one when None).
    False if another dispatcher got there first."""
    return _transition(session, task_id, [TaskStatus.QUEUED], status=TaskStatus.DISPATCHED,
                       dispatched_at=utcnow(), planned_worker=worker_name)


def set_plan_notes(session: Session, notes: dict[int, str | None]) -> None:
    """The planner's note per queued task (why it waits, or that it will miss its deadline)."""
    for task_id, note in notes.items():
        session.execute(sa.update(Task).where(col(Task.id) == task_id).values(plan_note=note))


def set_prefetch_hints(session: Session, hints: dict[str, str | None]) -> None:
    """Per worker: the model it should read into host RAM next (None: nothing)."""
    for name, model in hints.items():  # the row is written only when its hint changes
        session.execute(sa.update(Worker).where(col(Worker.name) == name,
                                                col(Worker.prefetch_model).is_distinct_from(model))
                        .values(prefetch_model=model))


def mark_undispatched(session: Session, task_id: int, error: str) -> None:
    """The broker refused the message: back to queued, to be sent again on the next pass."""
    _transition(session, task_id, [TaskStatus.DISPATCHED], status=TaskStatus.QUEUED, error=error,
                planned_worker=None)


# --- running ----------------------------------------------------------------------------------


def claim_task(session: Session, task_id: int, worker_name: str) -> Attempt | None:
    """Take a task for ``worker_name`` and open an attempt, or None if it is not claimable
    (already running elsewhere, finished, cancelled, unknown)."""
    claimed = _transition(
        session, task_id, [TaskStatus.QUEUED, TaskStatus.DISPATCHED],
        status=TaskStatus.RUNNING, worker_name=worker_name, attempts=col(Task.attempts) + 1,
        started_at=sa.func.coalesce(col(Task.started_at), utcnow()), error=None,
    )
    if not claimed:
        return None
    task = get_task(session, task_id)
    session.refresh(task)
    attempt = Attempt(task_id=task_id, number=task.attempts, worker_name=worker_name)
    session.add(attempt)
    session.flush()
    return attempt


def pending_lines(session: Session, task_id: int) -> list[BatchLine]:
    query = (
        select(BatchLine)
        .where(BatchLine.task_id == task_id, BatchLine.status == LineStatus.PENDING)
        .order_by(col(BatchLine.line_no))
    )
    return list(session.exec(query))


def record_lines(session: Session, task_id: int, lines: Sequence[OutputLine]) -> int:
    """Fill pending lines with their output; lines already filled are left as they are.
    Returns how many lines this call filled."""
    now = utcnow()
    stmt = (
        sa.update(BatchLine)
        .where(col(BatchLine.task_id) == task_id, col(BatchLine.line_no) == sa.bindparam("no"),
               col(BatchLine.status) == LineStatus.PENDING)
        .values(status=sa.bindparam("st"), output=sa.bindparam("out"),
                prompt_tokens=sa.bindparam("tin"), completion_tokens=sa.bindparam("tout"),
                finished_at=now)
        .execution_options(synchronize_session=False)
    )
    params = [
        {"no": ln.line_no, "st": LineStatus.SUCCEEDED if ln.ok else LineStatus.FAILED,
         "out": json.dumps(ln.payload), "tin": ln.prompt_tokens, "tout": ln.completion_tokens}
        for ln in lines
    ]
    if not params:
        return 0
    filled = session.connection().execute(stmt, params).rowcount
    done = sa.select(sa.func.count()).where(
        col(BatchLine.task_id) == task_id,
        col(BatchLine.status).in_([LineStatus.SUCCEEDED, LineStatus.FAILED]),
    )
    session.execute(sa.update(Task).where(col(Task.id) == task_id)
                    .values(progress_done=done.scalar_subquery(), updated_at=now))
    return filled


def _close_attempt(session: Session, attempt_id: int, status: AttemptStatus, error: str | None,
                   tokens_in: int = 0, tokens_out: int = 0) -> None:
    session.execute(
        sa.update(Attempt).where(col(Attempt.id) == attempt_id)
        .values(status=status, ended_at=utcnow(), error=error, tokens_in=tokens_in,
                tokens_out=tokens_out)
    )


def finish_task(session: Session, task_id: int, attempt_id: int, tokens_in: int, tokens_out: int,
                result: dict | None = None) -> None:
    _close_attempt(session, attempt_id, AttemptStatus.SUCCEEDED, None, tokens_in, tokens_out)
    extra = {"result": result} if result is not None else {}
    _transition(session, task_id, [TaskStatus.RUNNING], status=TaskStatus.SUCCEEDED,
                finished_at=utcnow(), worker_name=None, **extra)


def save_checkpoint(session: Session, task_id: int, checkpoint: dict) -> None:
    """Keep a running task's progress so a redelivered task resumes where it was."""
    session.execute(sa.update(Task).where(col(Task.id) == task_id)
                    .values(checkpoint=checkpoint, updated_at=utcnow()))


def fail_task(session: Session, task_id: int, attempt_id: int, error: str, *, retry: bool) -> TaskStatus:
    """Close the attempt as failed. A transient failure with attempts left goes back to the
    queue; anything else fails the task. Returns the task's new status."""
    _close_attempt(session, attempt_id, AttemptStatus.FAILED, error)
    return _requeue_or_fail(session, get_task(session, task_id), error, retry=retry)


def _requeue_or_fail(session: Session, task: Task, error: str, *, retry: bool) -> TaskStatus:
    if retry and task.attempts < task.max_attempts:
        status, finished = TaskStatus.QUEUED, None
    else:
        status, finished = TaskStatus.FAILED, utcnow()
        if retry:
            error = f"gave up after {task.attempts} attempts; last error: {error}"
    _transition(session, task.id, [TaskStatus.RUNNING], status=status, error=error,
                worker_name=None, finished_at=finished)
    return status


# --- workers ----------------------------------------------------------------------------------


def get_worker(session: Session, name: str) -> Worker | None:
    return session.get(Worker, name)


def record_heartbeat(session: Session, name: str, **fields) -> None:
    """Create or refresh a worker's row; ``fields`` are WorkerBase columns to set."""
    worker = session.get(Worker, name)
    if worker is None:
        worker = Worker(name=name)
        session.add(worker)
    for key, value in fields.items():
        setattr(worker, key, value)
    worker.heartbeat_at = utcnow()


def release_worker_tasks(session: Session, worker_name: str, reason: str) -> list[int]:
    """Requeue (or fail, when out of attempts) every task ``worker_name`` was running, closing
    their attempts as lost. Used when a worker is found dead or restarts."""
    running = session.exec(
        select(Task).where(Task.status == TaskStatus.RUNNING, Task.worker_name == worker_name)
    ).all()
    for task in running:
        session.execute(
            sa.update(Attempt)
            .where(col(Attempt.task_id) == task.id, col(Attempt.status) == AttemptStatus.RUNNING)
            .values(status=AttemptStatus.LOST, ended_at=utcnow(), error=reason)
        )
        _requeue_or_fail(session, task, reason, retry=True)
    return [t.id for t in running]


def reap_lost_workers(session: Session, now: datetime, lost_after_s: float) -> list[int]:
    """Mark workers silent for ``lost_after_s`` as lost and release their tasks."""
    cutoff = now - timedelta(seconds=lost_after_s)
    silent = session.exec(
        select(Worker).where(Worker.heartbeat_at < cutoff,
                             col(Worker.state).not_in([WorkerState.LOST, WorkerState.STOPPED]))
    ).all()
    released: list[int] = []
    for worker in silent:
        worker.state = WorkerState.LOST
        reason = f"worker {worker.name} stopped heartbeating (last at {worker.heartbeat_at:%H:%M:%S} UTC)"
        released += release_worker_tasks(session, worker.name, reason)
        released += release_planned_tasks(session, worker.name, reason)
    return released


def release_planned_tasks(session: Session, worker_name: str, reason: str) -> list[int]:
    """Tasks sent to a lost worker's own queue but not started go back to the queue, for the
    planner to give to others. (Should the worker come back and read the old message, the
    claim fails once another worker has the task, so it still runs once.)"""
    waiting = session.exec(select(Task.id).where(Task.status == TaskStatus.DISPATCHED,
                                                 Task.planned_worker == worker_name)).all()
    for task_id in waiting:
        _transition(session, task_id, [TaskStatus.DISPATCHED], status=TaskStatus.QUEUED,
                    planned_worker=None, plan_note=f"re-planned: {reason}")
    return list(waiting)


def mark_worker_stopped(session: Session, name: str) -> None:
    record_heartbeat(session, name, state=WorkerState.STOPPED, current_task_id=None)


# --- repositories ---------------------------------------------------------------------------------


def add_repository(session: Session, data: RepositoryBase) -> Repository:
    repo = Repository.model_validate(data)
    session.add(repo)
    session.flush()
    return repo


def find_repository(session: Session, name: str) -> Repository | None:
    return session.exec(select(Repository).where(Repository.name == name)).first()


# --- reading ------------------------------------------------------------------------------------


def get_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    return task


# --- the morning review -----------------------------------------------------------------------


def record_review(session: Session, task_id: int, review: ReviewState, *, note: str | None = None,
                  merged_into: str | None = None, requeued_as: int | None = None) -> Task:
    """The user's decision on a finished task; a later decision replaces an earlier one."""
    task = get_task(session, task_id)
    task.review, task.review_note, task.reviewed_at = review, note, utcnow()
    task.merged_into, task.requeued_as = merged_into, requeued_as
    task.updated_at = utcnow()
    session.add(task)
    return task


# --- users and API tokens ---------------------------------------------------------------------


def save_user(session: Session, username: str, password_hash: str) -> User:
    """Create the user, or give an existing one a new password hash."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        user = User(username=username, password_hash=password_hash)
    user.password_hash = password_hash
    session.add(user)
    session.flush()
    return user


def add_api_token(session: Session, name: str, prefix: str, token_sha256: str) -> ApiToken:
    token = ApiToken(name=name, prefix=prefix, token_sha256=token_sha256)
    session.add(token)
    session.flush()
    return token


def touch_api_token(session: Session, token_id: int) -> None:
    session.execute(sa.update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=utcnow()))


def revoke_api_token(session: Session, token_id: int) -> bool:
    """False if there is no such token or it was already revoked."""
    stmt = (sa.update(ApiToken).where(col(ApiToken.id) == token_id, col(ApiToken.revoked_at).is_(None))
            .values(revoked_at=utcnow()))
    return session.execute(stmt).rowcount == 1


# --- night windows and yielding -------------------------------------------------------------------


def open_windows(session: Session, now: datetime, scope: str | None = None) -> list[NightWindow]:
    """Windows open at ``now`` (all scopes, or one)."""
    query = select(NightWindow).where(col(NightWindow.closed_at).is_(None), NightWindow.closes_at > now)
    if scope is not None:
        query = query.where(NightWindow.scope == scope)
    return list(session.exec(query.order_by(col(NightWindow.id))))


def open_window(session: Session, scope: str, now: datetime, closes_at: datetime, reason: str) -> NightWindow:
    """Open a window for ``scope`` until ``closes_at``; one already open is extended instead."""
    current = open_windows(session, now, scope)
    if current:
        window = current[0]
        window.closes_at = max(window.closes_at, closes_at)
    else:
        window = NightWindow(scope=scope, reason=reason, opened_at=now, closes_at=closes_at)
        session.add(window)
    session.flush()
    return window


def close_due_windows(session: Session, now: datetime) -> list[int]:
    """Mark windows whose closing time has passed as closed. Returns their ids."""
    due = session.exec(select(NightWindow).where(col(NightWindow.closed_at).is_(None),
                                                 NightWindow.closes_at <= now)).all()
    for window in due:
        window.closed_at = window.closes_at
    return [w.id for w in due]


def release_task(session: Session, task_id: int, attempt_id: int, reason: str) -> bool:
    """The worker gives a running task back (its window closed, or the owner needed the GPU
    for too long): the attempt ends as yielded and the task is queued again. A yield is not a
    failure, so it does not use up one of the task's tries."""
    session.execute(
        sa.update(Attempt).where(col(Attempt.id) == attempt_id)
        .values(status=AttemptStatus.YIELDED, ended_at=utcnow(), error=reason)
    )
    return _transition(session, task_id, [TaskStatus.RUNNING], status=TaskStatus.QUEUED,
                       worker_name=None, max_attempts=col(Task.max_attempts) + 1)


def record_attempt_energy(session: Session, attempt_id: int, energy_j: float | None, method: str) -> None:
    session.execute(sa.update(Attempt).where(col(Attempt.id) == attempt_id)
                    .values(energy_j=energy_j, energy_method=method))


def record_worker_event(session: Session, worker_name: str, kind: WorkerEventKind, started_at: datetime,
                        ended_at: datetime, *, task_id: int | None = None, model: str | None = None,
                        detail: str = "") -> None:
    """A swap or a suspension, for the night report (written when it ends)."""
    session.add(WorkerEvent(worker_name=worker_name, kind=kind, started_at=started_at, ended_at=ended_at,
                            task_id=task_id, model=model, detail=detail))

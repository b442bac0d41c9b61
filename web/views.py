"""What the pages and the JSON API show, computed once for both: the queue and tonight's
estimate, the live state of the night, the morning review list and the night report.

Every query here is bounded (paged, or limited to one night), so the pages stay fast however
long the history grows.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from scheduler.models import (
    Attempt,
    ReviewState,
    Task,
    TaskStatus,
    Worker,
    WorkerEvent,
    WorkerEventKind,
    WorkerPublic,
    WorkerState,
    utcnow,
)
from scheduler.night import window_summary
from scheduler.settings import Settings

ACTIVE = (TaskStatus.DISPATCHED, TaskStatus.RUNNING)
# A night runs from noon to noon, local time: work started at 02:00 belongs to the evening before.
NIGHT_STARTS = time(12, 0)
HISTORY_FOR_ESTIMATES = 50


def local_zone():
    return datetime.now().astimezone().tzinfo


def night_of(at: datetime) -> date:
    local = at.astimezone(local_zone())
    return local.date() if local.time() >= NIGHT_STARTS else local.date() - timedelta(days=1)


def night_bounds(night: date) -> tuple[datetime, datetime]:
    start = datetime.combine(night, NIGHT_STARTS, tzinfo=local_zone()).astimezone(UTC)
    end = datetime.combine(night + timedelta(days=1), NIGHT_STARTS, tzinfo=local_zone()).astimezone(UTC)
    return start, end


# --- the queue and tonight's estimate ---------------------------------------------------------


class Estimate(BaseModel):
    queued_ahead: int
    running: int
    workers: int
    seconds_per_task: float | None  # median of recent finished tasks of this kind and model
    finish_at: datetime | None  # None: no worker, or no history to estimate from
    basis: str  # how the estimate was made, in words


def _median_seconds(session: Session, kind: str, model: str) -> float | None:
    rows = session.exec(
        select(Task.started_at, Task.finished_at)
        .where(Task.kind == kind, Task.model == model, Task.status == TaskStatus.SUCCEEDED,
               col(Task.started_at).is_not(None), col(Task.finished_at).is_not(None))
        .order_by(col(Task.id).desc()).limit(HISTORY_FOR_ESTIMATES)).all()
    spans = [(end - start).total_seconds() for start, end in rows]
    return statistics.median(spans) if spans else None


def estimate(session: Session, kind: str, model: str, priority: int, new_tasks: int) -> Estimate:
    """When work submitted now would be done: the tasks ahead of it (same or higher priority),
    plus its own, at the median pace of recent tasks of its kind and model, over the workers."""
    ahead = session.exec(select(func.count()).select_from(Task).where(
        Task.status == TaskStatus.QUEUED, Task.priority >= priority)).one()
    running = session.exec(select(func.count()).select_from(Task).where(col(Task.status).in_(ACTIVE))).one()
    workers = session.exec(select(func.count()).select_from(Worker).where(
        col(Worker.state).not_in([WorkerState.STOPPED, WorkerState.LOST]))).one()
    pace = _median_seconds(session, kind, model)
    if not workers or pace is None:
        basis = "no worker is connected" if not workers else f"no finished {kind} task on {model} yet"
        return Estimate(queued_ahead=ahead, running=running, workers=workers, seconds_per_task=pace,
                        finish_at=None, basis=basis)
    total_s = pace * (ahead + running + max(new_tasks, 1)) / workers
    return Estimate(queued_ahead=ahead, running=running, workers=workers, seconds_per_task=pace,
                    finish_at=utcnow() + timedelta(seconds=total_s),
                    basis=f"median of the last {HISTORY_FOR_ESTIMATES} {kind} tasks on {model}: "
                          f"{pace:.0f} s each, {workers} worker(s)")


# --- tonight ------------------------------------------------------------------------------------


class RunningTask(BaseModel):
    id: int
    kind: str
    title: str
    model: str
    status: TaskStatus
    worker_name: str | None
    progress_done: int
    progress_total: int
    started_at: datetime | None
    plan_note: str | None = None


class Tonight(BaseModel):
    queue: dict[str, int]
    workers: list[WorkerPublic]
    running: list[RunningTask]
    next_up: list[RunningTask]
    window: dict[str, Any]


def window_state(settings: Settings) -> dict[str, Any]:
    """The shared night window as the pages show it (open until, or opens at)."""
    return window_summary(settings)


def tonight(session: Session, settings: Settings, next_limit: int = 20) -> Tonight:
    counts = dict(session.exec(select(Task.status, func.count()).group_by(Task.status)).all())
    workers = session.exec(select(Worker).order_by(col(Worker.name))).all()
    running = session.exec(select(Task).where(col(Task.status).in_(ACTIVE)).order_by(col(Task.id))).all()
    queued = session.exec(select(Task).where(Task.status == TaskStatus.QUEUED)
                          .order_by(col(Task.priority).desc(), col(Task.created_at), col(Task.id))
                          .limit(next_limit)).all()
    return Tonight(
        queue={s.value: counts.get(s, 0) for s in TaskStatus},
        workers=[WorkerPublic.model_validate(w) for w in workers],
        running=[RunningTask.model_validate(t, from_attributes=True) for t in running],
        next_up=[RunningTask.model_validate(t, from_attributes=True) for t in queued],
        window=window_state(settings),
    )


# --- the morning review -----------------------------------------------------------------------


class ReviewItem(BaseModel):
    id: int
    kind: str
    title: str
    model: str
    status: TaskStatus
    verdict: str | None
    reason: str
    branch: str | None
    review: ReviewState
    finished_at: datetime | None
    tokens_out: int


class ReviewPage(BaseModel):
    night: date | None
    items: list[ReviewItem]
    total: int
    offset: int
    limit: int


def _review_item(id_, kind, title, model, status, review, finished_at, error, verdict, reason, branch,
                 tokens_out, succeeded, failed) -> ReviewItem:
    if kind == "batch" and succeeded is not None:
        reason = reason or f"{succeeded} lines succeeded, {failed or 0} failed"
    return ReviewItem(id=id_, kind=kind, title=title, model=model, status=status,
                      verdict=verdict or (status.value if kind != "patch" else None), reason=reason or error or "",
                      branch=branch, review=review, finished_at=finished_at, tokens_out=tokens_out or 0)


def review_page(session: Session, night: date | None, review: ReviewState | None,
                offset: int = 0, limit: int = 50) -> ReviewPage:
    """Finished tasks, newest first: one night's (noon to noon) or all, one page at a time."""
    # finished_at is set exactly when a task finishes, and indexed: one range scan, no sort.
    where = [col(Task.finished_at).is_not(None)]
    if night is not None:
        start, end = night_bounds(night)
        where += [col(Task.finished_at) >= start, col(Task.finished_at) < end]
    if review is not None:
        where.append(Task.review == review)
    total = session.exec(select(func.count()).select_from(Task).where(*where)).one()
    result = col(Task.result)
    # Only the fields the list shows are read out of each result (not its candidates and diffs).
    rows = session.exec(
        select(Task.id, Task.kind, Task.title, Task.model, Task.status, Task.review, Task.finished_at, Task.error,
               result["verdict"].as_string(), result["reason"].as_string(), result["branch"].as_string(),
               result["tokens_out"].as_integer(), result["succeeded"].as_integer(), result["failed"].as_integer())
        .where(*where).order_by(col(Task.finished_at).desc(), col(Task.id).desc()).offset(offset).limit(limit)).all()
    return ReviewPage(night=night, items=[_review_item(*row) for row in rows], total=total, offset=offset,
                      limit=limit)


def latest_night(session: Session) -> date | None:
    last = session.exec(select(func.max(Task.finished_at))).one()
    return night_of(last) if last else None


# --- the night report ---------------------------------------------------------------------------


class Bar(BaseModel):
    worker: str
    task_id: int | None
    kind: str  # "attempt", "swap" (a model load) or "suspend" (the GPU given back to its owner)
    status: str  # an attempt's status; a swap's or suspension's detail
    start_s: float  # seconds after the night's first event
    end_s: float
    tokens_out: int = 0


class NightReport(BaseModel):
    night: date
    started_at: datetime | None
    ended_at: datetime | None
    workers: list[str]
    bars: list[Bar]
    tasks_finished: int
    attempts: int
    worker_hours: float
    tokens_out: int
    tokens_per_s: float | None
    swaps: int
    swap_s: float
    suspensions: int
    suspended_s: float
    energy_kwh: float | None  # over the attempts whose energy was measured
    energy: str  # how it was measured, in words


def night_report(session: Session, night: date) -> NightReport:
    start, end = night_bounds(night)
    attempts = session.exec(select(Attempt).where(col(Attempt.started_at) >= start, col(Attempt.started_at) < end)
                            .order_by(col(Attempt.started_at))).all()
    events = session.exec(select(WorkerEvent).where(col(WorkerEvent.started_at) >= start,
                                                    col(WorkerEvent.started_at) < end)).all()
    finished = session.exec(select(func.count()).select_from(Task).where(
        col(Task.finished_at) >= start, col(Task.finished_at) < end)).one()
    now = utcnow()
    first = min([a.started_at for a in attempts] + [e.started_at for e in events], default=None)
    last = max([(a.ended_at or now) for a in attempts] + [e.ended_at for e in events], default=None)
    bars, busy = [], defaultdict(float)
    for a in attempts:
        stop = a.ended_at or now
        busy[a.worker_name] += (stop - a.started_at).total_seconds()
        bars.append(Bar(worker=a.worker_name, task_id=a.task_id, kind="attempt", status=a.status.value,
                        start_s=(a.started_at - first).total_seconds(), end_s=(stop - first).total_seconds(),
                        tokens_out=a.tokens_out))
    for e in events:
        bars.append(Bar(worker=e.worker_name, task_id=e.task_id, kind=e.kind.value, status=e.detail,
                        start_s=(e.started_at - first).total_seconds(), end_s=(e.ended_at - first).total_seconds()))
    tokens = sum(a.tokens_out for a in attempts)
    busy_s = sum(busy.values())
    swaps = [e for e in events if e.kind is WorkerEventKind.SWAP]
    pauses = [e for e in events if e.kind is WorkerEventKind.SUSPEND]
    kwh, energy = _energy(attempts)
    return NightReport(
        night=night, started_at=first, ended_at=last, workers=sorted(set(busy) | {e.worker_name for e in events}),
        bars=bars, tasks_finished=finished, attempts=len(attempts), worker_hours=busy_s / 3600, tokens_out=tokens,
        tokens_per_s=tokens / busy_s if busy_s else None,
        swaps=len(swaps), swap_s=sum((e.ended_at - e.started_at).total_seconds() for e in swaps),
        suspensions=len(pauses), suspended_s=sum((e.ended_at - e.started_at).total_seconds() for e in pauses),
        energy_kwh=kwh, energy=energy,
    )


def _energy(attempts) -> tuple[float | None, str]:
    measured = [a for a in attempts if a.energy_j is not None]
    if not measured:
        return None, "not measured on these workers (no NVML energy counter or power reading)"
    methods = sorted({a.energy_method for a in measured})
    joules = sum(a.energy_j for a in measured)
    per_task = joules / len(measured)
    return joules / 3.6e6, (f"{joules / 3.6e6:.3f} kWh over {len(measured)} of {len(attempts)} attempts, "
                            f"{per_task / 1000:.1f} kJ per attempt ({', '.join(methods)})")

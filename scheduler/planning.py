"""From the database to the planner and back: what tonight's plan is made of.

``scheduler.planner`` is pure; this module reads its inputs from the rows (queued tasks, the
live workers and their hardware, the model catalog) and turns the plan into what dispatch
does: the next task for each free worker's own queue, a note on every task the plan cannot
serve well, and a prefetch hint per worker.

Estimates are rough on purpose: a batch costs ``BATCH_LINE_S`` per unfinished line, a patch
item ``PATCH_ITEM_S``, unless recent tasks of the same kind and model finished, in which
case their median duration (per line for batches) is used. A model's size comes from
``ModelSpec.size_gb``, else from its safetensors files when the source is a local directory,
else ``UNKNOWN_MODEL_GB``; its GPU memory from ``ModelSpec.vram_gib`` or the size with
``planner.KV_HEADROOM``. A worker without a GPU (the CPU build) offers its host RAM.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from scheduler.models import Task, TaskStatus, Worker, WorkerState
from scheduler.night import window_states
from scheduler.planner import Plan, PlanModel, PlanTask, PlanWorker, plan_night
from scheduler.settings import ModelSpec, Settings
from scheduler.window import DEFAULT_SCOPE, scope_of, scopes

BATCH_LINE_S = 2.0
PATCH_ITEM_S = 600.0
UNKNOWN_MODEL_GB = 1.0
ALWAYS_OPEN_HORIZON = timedelta(hours=24)
_HISTORY = 20


def model_size_gb(spec: ModelSpec) -> float | None:
    """The configured size, else the bytes of the local safetensors files, else None."""
    if spec.size_gb is not None:
        return spec.size_gb
    source = Path(spec.source).expanduser()
    if source.is_dir():
        total = sum(f.stat().st_size for f in source.glob("*.safetensors"))
        return total / 1e9 if total else None
    return None


def plan_model(alias: str, spec: ModelSpec) -> PlanModel:
    size = model_size_gb(spec) or UNKNOWN_MODEL_GB
    if spec.vram_gib is not None:
        return PlanModel(alias, size, spec.vram_gib)
    return PlanModel.from_size(alias, size)


def worker_memory_gib(worker: Worker) -> float | None:
    """GPU memory of the worker's first GPU; host RAM for a CPU-only worker."""
    gpus = worker.hardware.get("gpus") or []
    if gpus and gpus[0].get("memory_gib"):
        return float(gpus[0]["memory_gib"])
    memory = worker.hardware.get("memory_gib")
    return float(memory) if memory else None


AVAILABLE = (WorkerState.IDLE, WorkerState.LOADING, WorkerState.WORKING, WorkerState.OUTSIDE_WINDOW)
"""Workers the plan counts on; a suspended one, or one whose owner is at the machine, gets
nothing new until it is idle again (its share goes to the others)."""


def live_workers(session: Session) -> list[Worker]:
    return list(session.exec(select(Worker).where(col(Worker.state).in_(AVAILABLE))
                             .order_by(col(Worker.name))))


def _window(settings: Settings, name: str, now: datetime) -> tuple[datetime, datetime] | None:
    if settings.always_open:
        return now, now + ALWAYS_OPEN_HORIZON
    scope = scope_of(settings, name)
    open_ = [w for w in window_states(settings, now) if w.scope == scope]
    if open_:
        return now, max(w.closes_at for w in open_)
    schedule = scopes(settings)[scope]
    opens = schedule.next_open(now)
    return opens, schedule.next_close(opens)


def _pace(session: Session, kind: str, model: str) -> float | None:
    """Median seconds per unit (a batch line, a patch item) of recent finished tasks."""
    rows = session.exec(select(Task.started_at, Task.finished_at, Task.progress_total).where(
        Task.kind == kind, Task.model == model, Task.status == TaskStatus.SUCCEEDED,
        col(Task.finished_at).is_not(None), col(Task.started_at).is_not(None))
        .order_by(col(Task.finished_at).desc()).limit(_HISTORY)).all()
    paces = [(end - start).total_seconds() / (max(total, 1) if kind == "batch" else 1)
             for start, end, total in rows]
    return statistics.median(paces) if paces else None


def work_s(task: Task, pace: float | None) -> float:
    if task.kind == "batch":
        lines = max(task.progress_total - task.progress_done, 1)
        return max(lines * (pace or BATCH_LINE_S), 1.0)
    return max(pace or PATCH_ITEM_S, 1.0)


@dataclass(frozen=True)
class NightInputs:
    tasks: list[PlanTask]
    workers: list[PlanWorker]
    models: dict[str, PlanModel]
    free: list[str]  # live workers with nothing dispatched to them that they have not started


def gather(session: Session, settings: Settings, queued: Sequence[Task], now: datetime) -> NightInputs:
    """The planner's inputs. A task without a deadline of its own is due at the morning's
    ``ready_by`` (unless the window is always open), so the plan says early what will not be
    ready by then."""
    paces = {(t.kind, t.model): _pace(session, t.kind, t.model) for t in queued}
    morning = None if settings.always_open else scopes(settings)[DEFAULT_SCOPE].ready_by(now)
    tasks = [PlanTask(t.id, t.model, work_s(t, paces[(t.kind, t.model)]), t.priority, t.owner,
                      t.deadline_at or morning, t.created_at) for t in queued]
    models = {alias: plan_model(alias, spec) for alias, spec in settings.models.items()}
    waiting = set(session.exec(select(Task.planned_worker).where(
        Task.status == TaskStatus.DISPATCHED, col(Task.planned_worker).is_not(None))).all())
    workers, free = [], []
    for w in live_workers(session):
        window, memory = _window(settings, w.name, now), worker_memory_gib(w)
        if window is None or memory is None or window[1] <= window[0]:
            continue
        busy = now + timedelta(seconds=60) if w.current_task_id else None
        resident = w.resident_model if w.resident_model in settings.models else None  # config changed
        workers.append(PlanWorker(w.name, memory, window[0], window[1], resident_model=resident,
                                  host_ram_gb=float(w.hardware.get("memory_gib") or 0) * 0.5,
                                  busy_until_at=busy))
        if w.name not in waiting:
            free.append(w.name)
    return NightInputs(tasks, workers, models, free)


def make_plan(inputs: NightInputs, now: datetime, owner_weights: dict[str, float] | None = None) -> Plan:
    known = [t for t in inputs.tasks if t.model in inputs.models]
    return plan_night(known, inputs.workers, inputs.models.values(), now, owner_weights=owner_weights or None)


def notes(plan: Plan, queued: Sequence[Task]) -> dict[int, str | None]:
    """A note for every queued task: why it cannot run, that it waits, or that it will be late."""
    out: dict[int, str | None] = {t.id: None for t in queued}
    for miss in plan.deadline_misses:
        out[miss.task_id] = (f"predicted to finish at {miss.predicted_end_at:%Y-%m-%d %H:%M} UTC on "
                             f"{miss.worker}, after its deadline {miss.deadline_at:%Y-%m-%d %H:%M} UTC")
    for task in plan.unplaceable:
        out[task.task_id] = task.reason
    for task in plan.deferred:
        out[task.task_id] = task.reason
    return out

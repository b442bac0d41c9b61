"""From validated inputs to a ``Plan``: placeability, assignment, repair, and the plan on the
clock with its prefetch hints. Called by ``scheduler.planner.plan_night``; pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from scheduler.planner import (
    DeadlineMiss,
    Plan,
    PlanModel,
    PlannedTask,
    PlanTask,
    PlanWorker,
    PrefetchHint,
    SwapEvent,
    UnplacedTask,
    WorkerPlan,
    at,
)
from scheduler.planner_core import (
    EPS,
    Assignment,
    Night,
    Run,
    Timeline,
    evaluate,
    make_night,
)
from scheduler.planner_pack import assign, swap_estimates
from scheduler.planner_repair import balance, repair


def build_plan(tasks: Sequence[PlanTask], workers: Sequence[PlanWorker],
               models: Mapping[str, PlanModel], now: datetime,
               owner_weights: Mapping[str, float], engine_start_s: float) -> Plan:
    night = make_night(tasks, workers, models, now, owner_weights, engine_start_s)
    unplaceable = [_too_large(t, workers, models) for t in tasks]
    unplaceable = [u for u in unplaceable if u is not None]
    lost = {u.task_id for u in unplaceable}
    estimates = swap_estimates(night)
    deferred = [d for i, t in enumerate(night.tasks) if t.id not in lost
                and (d := _no_time(night, i, estimates)) is not None]
    lost |= {d.task_id for d in deferred}
    placeable = [i for i, t in enumerate(night.tasks) if t.id not in lost]
    assignment, full = assign(night, placeable)
    deferred += [UnplacedTask(night.tasks[i].id, night.tasks[i].model, _FULL) for i in full]
    assignment, urgent = repair(night, assignment)
    assignment = balance(night, assignment, urgent)
    lines, _ = evaluate(night, assignment, urgent)
    if any(line.overflow for line in lines):
        late = {t for line in lines for t in line.overflow}
        deferred += [UnplacedTask(night.tasks[t].id, night.tasks[t].model, _PAST_WINDOW)
                     for t in sorted(late)]
        assignment = _without(assignment, late)
        lines, _ = evaluate(night, assignment, urgent)
    return Plan(
        workers=tuple(_worker_plan(night, w, line, now) for w, line in enumerate(lines)),
        prefetch=tuple(h for w, line in enumerate(lines)
                       if (h := _prefetch(night, w, line, now)) is not None),
        unplaceable=tuple(unplaceable),
        deferred=tuple(sorted(deferred, key=lambda d: d.task_id)),
        deadline_misses=tuple(_misses(night, lines, now)),
    )


_FULL = "tonight's windows are full; deferred to a later night in priority and fair-share order"
_PAST_WINDOW = "predicted to run past its worker's window; deferred to a later night"


def _too_large(task: PlanTask, workers: Sequence[PlanWorker],
               models: Mapping[str, PlanModel]) -> UnplacedTask | None:
    need = models[task.model].vram_gib
    largest = max((w.vram_gib for w in workers), default=0.0)
    if need <= largest + EPS:
        return None
    have = f"the largest worker GPU has {largest:g} GiB" if workers else "there are no workers"
    return UnplacedTask(task.id, task.model,
                        f"model {task.model} needs {need:g} GiB of GPU memory; {have}")


def _no_time(night: Night, task: int,
             estimates: dict[tuple[str, int], float]) -> UnplacedTask | None:
    """Deferred if no open window of a worker that fits the model is long enough for it."""
    model = night.tasks[task].model
    room = [(night.end_s[w] - night.start_s[w],
             night.duration(task, w) + estimates[model, w])
            for w in range(len(night.workers)) if night.fits(model, w)]
    if any(need <= left + EPS for left, need in room):
        return None
    if not room:
        reason = f"no worker with enough GPU memory for model {model} has an open window tonight"
    else:
        reason = (f"needs {min(n for _, n in room) / 3600:.2f} h on the quickest worker that "
                  f"fits model {model}; the longest window left tonight is "
                  f"{max(left for left, _ in room) / 3600:.2f} h")
    return UnplacedTask(night.tasks[task].id, model, reason)


def _without(assignment: Assignment, tasks: set[int]) -> Assignment:
    return tuple(tuple(Run(r.model, tuple(t for t in r.tasks if t not in tasks))
                       for r in runs) for runs in assignment)


def _worker_plan(night: Night, w: int, line: Timeline, now: datetime) -> WorkerPlan:
    tasks = tuple(PlannedTask(night.tasks[t].id, night.tasks[t].model, at(now, s), at(now, e))
                  for t, s, e in line.entries)
    swaps = tuple(SwapEvent(s.model, _source_name(night, s.source),
                            _transport(night, w, s.source), at(now, s.starts_s), s.seconds)
                  for s in line.swaps)
    return WorkerPlan(night.workers[w].name, tasks, swaps)


def _source_name(night: Night, source: int | None) -> str:
    return "disk" if source is None else night.workers[source].name


def _transport(night: Night, w: int, source: int | None) -> str:
    if source is None:
        return "disk"
    return "rdma" if night.workers[w].rdma and night.workers[source].rdma else "tcp"


def _prefetch(night: Night, w: int, line: Timeline, now: datetime) -> PrefetchHint | None:
    """The next swap that follows running work, if its model fits in the worker's host RAM:
    pull it while the model before it runs."""
    worker = night.workers[w]
    for swap in line.swaps:
        before = [(t, s) for t, s, e in line.entries if e <= swap.starts_s + EPS]
        if not before:
            continue
        if night.models[swap.model].size_gb > worker.host_ram_gb + EPS:
            return None
        running = night.tasks[before[-1][0]].model
        run_start = before[-1][1]
        for t, s in reversed(before):
            if night.tasks[t].model != running:
                break
            run_start = s
        return PrefetchHint(worker.name, swap.model, _source_name(night, swap.source),
                            running, at(now, max(run_start, night.start_s[w])))
    return None


def _misses(night: Night, lines: Sequence[Timeline], now: datetime) -> list[DeadlineMiss]:
    misses = []
    for w, line in enumerate(lines):
        ends = {t: e for t, _, e in line.entries}
        for t in line.misses:
            task = night.tasks[t]
            misses.append(DeadlineMiss(task.id, night.workers[w].name, task.deadline_at,
                                       at(now, ends[t])))
    return sorted(misses, key=lambda m: (m.deadline_at, m.task_id))

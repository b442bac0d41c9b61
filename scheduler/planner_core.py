"""The planner's inner values and clock: the night in index form, swap times, run order and
each worker's timeline (seconds after ``now``). Used by ``scheduler.planner``; pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.planner import PlanModel, PlanTask, PlanWorker

EPS = 1e-6
INF = math.inf


@dataclass(frozen=True)
class Night:
    """Everything the planner reads, by index: tasks 0..n-1, open workers 0..k-1."""

    tasks: tuple[PlanTask, ...]
    workers: tuple[PlanWorker, ...]
    models: Mapping[str, PlanModel]
    engine_start_s: float
    deadline_s: tuple[float, ...]
    tag: tuple[float, ...]
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    levels: tuple[int, ...]

    def duration(self, task: int, worker: int) -> float:
        return self.tasks[task].work_s / self.workers[worker].speed

    def fits(self, model: str, worker: int) -> bool:
        return self.models[model].vram_gib <= self.workers[worker].vram_gib + EPS


@dataclass(frozen=True)
class Run:
    """Consecutive tasks of one model on one worker."""

    model: str
    tasks: tuple[int, ...]


@dataclass(frozen=True)
class Hold:
    """Worker ``worker`` has ``model`` loaded from ``from_s`` to ``to_s`` (a swap source)."""

    worker: int
    from_s: float
    to_s: float


@dataclass(frozen=True)
class Swap:
    model: str
    source: int | None  # a peer's index, None for the local disk
    starts_s: float
    seconds: float


@dataclass(frozen=True)
class Timeline:
    """One worker's plan on the clock: (task, start, end) in order, and its swaps."""

    entries: tuple[tuple[int, float, float], ...]
    swaps: tuple[Swap, ...]
    misses: tuple[int, ...]
    overflow: tuple[int, ...]

    @property
    def end_s(self) -> float:
        return self.entries[-1][2] if self.entries else 0.0

    @property
    def swap_s(self) -> float:
        return sum(s.seconds for s in self.swaps)


Assignment = tuple[tuple[Run, ...], ...]
Holds = Mapping[str, tuple[Hold, ...]]


def make_night(tasks: Sequence[PlanTask], workers: Sequence[PlanWorker],
               models: Mapping[str, PlanModel], now: datetime,
               owner_weights: Mapping[str, float], engine_start_s: float) -> Night:
    """Index the inputs; workers whose window is closed at ``now`` are left out."""
    open_workers = tuple(w for w in workers if w.closes_at > now)
    tasks = tuple(tasks)
    return Night(
        tasks=tasks,
        workers=open_workers,
        models=models,
        engine_start_s=engine_start_s,
        deadline_s=tuple(_seconds(t.deadline_at, now, INF) for t in tasks),
        tag=fair_tags(tasks, owner_weights, now),
        start_s=tuple(max(0.0, _seconds(w.opens_at, now, 0.0),
                          _seconds(w.busy_until_at, now, 0.0)) for w in open_workers),
        end_s=tuple(_seconds(w.closes_at, now, 0.0) for w in open_workers),
        levels=tuple(sorted({t.priority for t in tasks}, reverse=True)),
    )


def fair_tags(tasks: Sequence[PlanTask], weights: Mapping[str, float],
              now: datetime) -> tuple[float, ...]:
    """Weighted fair-share finish tags: an owner's cumulative work / its weight."""
    by_owner: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_owner.setdefault(task.owner, []).append(i)
    tags = [0.0] * len(tasks)
    for owner, members in by_owner.items():
        members.sort(key=lambda i: _owner_order(tasks[i], now))
        total = 0.0
        for i in members:
            total += tasks[i].work_s
            tags[i] = total / weights.get(owner, 1.0)
    return tuple(tags)


def _owner_order(task: PlanTask, now: datetime) -> tuple:
    return (-task.priority, _seconds(task.deadline_at, now, INF),
            _seconds(task.submitted_at, now, 0.0), task.id)


def _seconds(value: datetime | None, now: datetime, default: float) -> float:
    return default if value is None else (value - now).total_seconds()


def initial_holds(night: Night) -> dict[str, tuple[Hold, ...]]:
    """Before anything is planned: every resident model is held all night."""
    holds: dict[str, list[Hold]] = {}
    for w, worker in enumerate(night.workers):
        if worker.resident_model is not None:
            holds.setdefault(worker.resident_model, []).append(Hold(w, -INF, INF))
    return {m: tuple(h) for m, h in holds.items()}


def holds_from(night: Night, timelines: Sequence[Timeline]) -> dict[str, tuple[Hold, ...]]:
    """Who holds which model when, from planned timelines (a worker holds a model from the end
    of its load until its next swap starts)."""
    holds: dict[str, list[Hold]] = {}
    for w, line in enumerate(timelines):
        model, since = night.workers[w].resident_model, -INF
        for swap in line.swaps:
            if model is not None:
                holds.setdefault(model, []).append(Hold(w, since, swap.starts_s))
            model, since = swap.model, swap.starts_s + swap.seconds
        if model is not None:
            holds.setdefault(model, []).append(Hold(w, since, INF))
    return {m: tuple(h) for m, h in holds.items()}


def swap_cost(night: Night, model: str, worker: int, at_s: float,
              holds: Holds) -> tuple[float, int | None]:
    """Seconds to load ``model`` on ``worker`` at ``at_s`` and the source (None: disk)."""
    size = night.models[model].size_gb
    me = night.workers[worker]
    best_bw, source = me.disk_gb_s, None
    for hold in holds.get(model, ()):
        if hold.worker == worker or not hold.from_s <= at_s < hold.to_s:
            continue
        bandwidth = min(me.link_gb_s, night.workers[hold.worker].link_gb_s)
        if bandwidth > best_bw + EPS:
            best_bw, source = bandwidth, hold.worker
    return size / best_bw + night.engine_start_s, source


def task_key(night: Night, task: int, urgent: frozenset[int]) -> tuple:
    is_urgent = task in urgent
    return (-night.tasks[task].priority, not is_urgent,
            night.deadline_s[task] if is_urgent else 0.0, night.tag[task], night.tasks[task].id)


def run_key(night: Night, worker: int, run: Run, urgent: frozenset[int]) -> tuple:
    urgent_deadlines = [night.deadline_s[t] for t in run.tasks if t in urgent]
    return (-max(night.tasks[t].priority for t in run.tasks), not urgent_deadlines,
            run.model != night.workers[worker].resident_model,
            min(urgent_deadlines, default=INF), min(night.tag[t] for t in run.tasks),
            run.model, min(night.tasks[t].id for t in run.tasks))


def ordered(night: Night, worker: int, runs: Sequence[Run],
            urgent: frozenset[int]) -> list[Run]:
    """The worker's runs in execution order, each run's tasks in order."""
    runs = [r for r in runs if r.tasks]
    runs.sort(key=lambda r: run_key(night, worker, r, urgent))
    return [Run(r.model, tuple(sorted(r.tasks, key=lambda t: task_key(night, t, urgent))))
            for r in runs]


def timeline(night: Night, worker: int, runs: Sequence[Run], urgent: frozenset[int],
             holds: Holds) -> Timeline:
    """Put the worker's runs on the clock: a swap before each run of a new model."""
    clock, current = night.start_s[worker], night.workers[worker].resident_model
    entries: list[tuple[int, float, float]] = []
    swaps: list[Swap] = []
    for run in ordered(night, worker, runs, urgent):
        if run.model != current:
            seconds, source = swap_cost(night, run.model, worker, clock, holds)
            swaps.append(Swap(run.model, source, clock, seconds))
            clock, current = clock + seconds, run.model
        for task in run.tasks:
            end = clock + night.duration(task, worker)
            entries.append((task, clock, end))
            clock = end
    return Timeline(
        entries=tuple(entries),
        swaps=tuple(swaps),
        misses=tuple(t for t, _, e in entries if e > night.deadline_s[t] + EPS),
        overflow=tuple(t for t, _, e in entries if e > night.end_s[worker] + EPS),
    )


def evaluate(night: Night, assignment: Assignment, urgent: frozenset[int],
             holds: Holds | None = None) -> tuple[list[Timeline], dict[str, tuple[Hold, ...]]]:
    """Timelines of every worker. Swap sources depend on the other workers' timelines, so the
    holds of a first pass (from ``holds``, or the resident models) feed a second one."""
    first = holds if holds is not None else initial_holds(night)
    lines = [timeline(night, w, runs, urgent, first) for w, runs in enumerate(assignment)]
    second = holds_from(night, lines)
    lines = [timeline(night, w, runs, urgent, second) for w, runs in enumerate(assignment)]
    return lines, second


def miss_vector(night: Night, lines: Sequence[Timeline]) -> tuple[int, ...]:
    """Missed deadlines per priority level, highest level first (smaller is better)."""
    counts = dict.fromkeys(night.levels, 0)
    for line in lines:
        for task in line.misses:
            counts[night.tasks[task].priority] += 1
    return tuple(counts[level] for level in night.levels)

"""The night's plan: which worker runs which queued task, in what order, with which model swaps.

``plan_night`` is a pure, deterministic function of its arguments (no clock, no I/O, no
randomness): the same inputs give the same ``Plan``. ``replan_without`` re-plans after a worker
disappears. Times inside are seconds after ``now``; the plan speaks aware datetimes.

How a plan is made

1. **Placeable?** A task whose model needs more GPU memory than any worker has is
   *unplaceable* (permanent, with the reason). A task too long for every window it could run in
   is *deferred*. A worker whose window is closed (or ends before ``now``) gets nothing.
2. **Admission.** When tonight's windows cannot hold every task, tasks are admitted in
   (priority, fair-share tag) order and the rest are *deferred* to a later night.
3. **Assignment** (``planner_pack``): tasks are grouped by model, and the groups packed onto
   workers under a common horizon found by bisection: the smallest horizon at which every
   admitted task fits is the predicted makespan. The most memory-hungry models are packed
   first, each group onto as few workers as possible (a worker already holding the model first,
   then the one where the whole group fits most tightly, else the one that takes the most
   work), so a model is split across workers only when that shortens the night. A model is
   never assigned where it does not fit.
4. **Sequencing** (``planner_core``): each worker runs its *model runs* one after another;
   a swap happens between runs of different models. Swap time = size / best source bandwidth
   (local disk, or a peer holding the model at that moment over the slower of the two links)
   + ``engine_start_s``. Runs are ordered by (highest priority in the run, urgent first, the
   model already resident first, earliest urgent deadline, smallest fair-share tag); tasks in
   a run by (priority, urgent first and by deadline, fair-share tag).
5. **Deadline repair** (``planner_repair``): for each task predicted to miss its deadline, the
   planner tries, and keeps the first that lowers the misses (counted from the highest
   priority down): running it first among its priority in its run (urgent), giving it a run of
   its own (an extra swap), moving lower-priority riders out of the runs before it, or moving
   it to another worker. What still misses is reported in ``Plan.deadline_misses``.

Priority rule: on one worker, a task H waits behind a lower-priority task L only when L rides
in an earlier model run together with a task of priority >= H's (running L later would cost a
swap back to that model), and H still meets its deadline; when H would miss it, the riders are
moved to a run after H (step 5). Across different runs, higher priority always runs first,
even when that costs a swap away from the resident model and back.

Fair share: owner o with weight w_o (default 1) has its tasks, in its own order (priority,
deadline, submission, id), tagged with finish tags F = (o's work up to and including this task)
/ w_o. Within a priority level, smaller tags run first, so on a saturated worker each owner's
share of service over any prefix of the night is close to proportional to its weight; when the
windows are short, admission by tag defers the same way. Deadlines come before tags only for
tasks the repair marks urgent (those that would otherwise miss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.errors import InvalidSubmissionError

ENGINE_START_S = 30.0
"""Seconds to start an inference engine once the weights are in place (vLLM start-up)."""
KV_HEADROOM = 1.2
"""GPU memory a model needs per GiB of weights when nothing better is known (KV cache room)."""
GIB_PER_GB = 1e9 / 2**30


class PlanInputError(InvalidSubmissionError):
    """A planner input that cannot be planned; ``field`` names it, the message says what came,
    what is allowed and how to fix it."""


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise PlanInputError(field, message)


def _require_aware(value: datetime | None, field: str) -> None:
    _require(value is None or value.utcoffset() is not None, field,
             f"got the naive datetime {value!r}; give a timezone-aware one (UTC)")


@dataclass(frozen=True)
class PlanTask:
    """A queued task. ``work_s``: estimated seconds on a worker of speed 1.0."""

    id: int
    model: str
    work_s: float
    priority: int = 0
    owner: str = ""
    deadline_at: datetime | None = None
    submitted_at: datetime | None = None

    def __post_init__(self) -> None:
        where = f"task {self.id}"
        _require(math.isfinite(self.work_s) and self.work_s > 0, f"{where}: work_s",
                 f"got {self.work_s!r}; estimated work must be a positive number of seconds")
        _require_aware(self.deadline_at, f"{where}: deadline_at")
        _require_aware(self.submitted_at, f"{where}: submitted_at")


@dataclass(frozen=True)
class PlanModel:
    """A model: ``size_gb`` of weights to move, ``vram_gib`` of GPU memory it needs to run
    (weights plus KV-cache headroom; ``from_size`` uses ``KV_HEADROOM``)."""

    name: str
    size_gb: float
    vram_gib: float

    def __post_init__(self) -> None:
        for field, value in (("size_gb", self.size_gb), ("vram_gib", self.vram_gib)):
            _require(math.isfinite(value) and value > 0, f"model {self.name}: {field}",
                     f"got {value!r}; must be a positive number")

    @classmethod
    def from_size(cls, name: str, size_gb: float, headroom: float = KV_HEADROOM) -> PlanModel:
        return cls(name, size_gb, size_gb * GIB_PER_GB * headroom)


@dataclass(frozen=True)
class PlanWorker:
    """A worker for tonight. ``speed``: throughput relative to the reference (1.0).
    ``link_gb_s``: its network bandwidth to peers (RDMA's when ``rdma``), ``disk_gb_s``: its
    local disk's; a peer transfer runs at the slower of the two ends' links. ``host_ram_gb``:
    host memory free for prefetching the next model. ``busy_until_at``: when the task it is
    running now will end (its ``resident_model`` is the one it runs or is loading)."""

    name: str
    vram_gib: float
    opens_at: datetime
    closes_at: datetime
    speed: float = 1.0
    resident_model: str | None = None
    host_ram_gb: float = 0.0
    link_gb_s: float = 0.125
    disk_gb_s: float = 0.5
    rdma: bool = False
    busy_until_at: datetime | None = None

    def __post_init__(self) -> None:
        where = f"worker {self.name}"
        for field in ("vram_gib", "speed", "link_gb_s", "disk_gb_s"):
            value = getattr(self, field)
            _require(math.isfinite(value) and value > 0, f"{where}: {field}",
                     f"got {value!r}; must be a positive number")
        _require(self.host_ram_gb >= 0, f"{where}: host_ram_gb",
                 f"got {self.host_ram_gb!r}; must be 0 or more")
        for field in ("opens_at", "closes_at", "busy_until_at"):
            _require_aware(getattr(self, field), f"{where}: {field}")
        _require(self.closes_at > self.opens_at, f"{where}: closes_at",
                 f"the window {self.opens_at.isoformat()} to {self.closes_at.isoformat()} has "
                 "zero or negative length; closes_at must be after opens_at")


@dataclass(frozen=True)
class SwapEvent:
    """Loading ``model`` before the next run: from ``source`` ("disk" or a peer's name) over
    ``transport`` ("disk", "rdma" or "tcp"), ``seconds`` including the engine start."""

    model: str
    source: str
    transport: str
    starts_at: datetime
    seconds: float


@dataclass(frozen=True)
class PlannedTask:
    task_id: int
    model: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class WorkerPlan:
    """One worker's night: its tasks in order, and the swaps between its model runs."""

    worker: str
    tasks: tuple[PlannedTask, ...]
    swaps: tuple[SwapEvent, ...]

    @property
    def task_ids(self) -> tuple[int, ...]:
        return tuple(t.task_id for t in self.tasks)

    @property
    def ends_at(self) -> datetime | None:
        return self.tasks[-1].ends_at if self.tasks else None


@dataclass(frozen=True)
class PrefetchHint:
    """Start pulling ``model`` from ``source`` into host RAM at ``starts_at``, while
    ``while_model`` still runs: the worker's next swap."""

    worker: str
    model: str
    source: str
    while_model: str
    starts_at: datetime


@dataclass(frozen=True)
class UnplacedTask:
    task_id: int
    model: str
    reason: str


@dataclass(frozen=True)
class DeadlineMiss:
    task_id: int
    worker: str
    deadline_at: datetime
    predicted_end_at: datetime


@dataclass(frozen=True)
class Plan:
    workers: tuple[WorkerPlan, ...]
    prefetch: tuple[PrefetchHint, ...]
    unplaceable: tuple[UnplacedTask, ...]
    deferred: tuple[UnplacedTask, ...]
    deadline_misses: tuple[DeadlineMiss, ...]

    def for_worker(self, name: str) -> WorkerPlan:
        return next((w for w in self.workers if w.worker == name), WorkerPlan(name, (), ()))

    @property
    def ends_at(self) -> datetime | None:
        ends = [w.ends_at for w in self.workers if w.ends_at is not None]
        return max(ends) if ends else None

    @property
    def swap_seconds(self) -> float:
        return sum(s.seconds for w in self.workers for s in w.swaps)

    @property
    def planned_task_ids(self) -> frozenset[int]:
        return frozenset(i for w in self.workers for i in w.task_ids)


def plan_night(
    tasks: Sequence[PlanTask],
    workers: Sequence[PlanWorker],
    models: Iterable[PlanModel],
    now: datetime,
    owner_weights: Mapping[str, float] | None = None,
    engine_start_s: float = ENGINE_START_S,
) -> Plan:
    """Plan tonight for ``tasks`` on ``workers`` (see the module docstring for the rules).
    Raises ``PlanInputError`` for inputs that cannot be planned."""
    from scheduler import planner_build

    catalog = _validate(tasks, workers, models, now, owner_weights, engine_start_s)
    return planner_build.build_plan(tasks, workers, catalog, now, owner_weights or {},
                                    engine_start_s)


def replan_without(
    tasks: Sequence[PlanTask],
    workers: Sequence[PlanWorker],
    models: Iterable[PlanModel],
    now: datetime,
    lost_worker: str,
    done_task_ids: Iterable[int] = (),
    owner_weights: Mapping[str, float] | None = None,
    engine_start_s: float = ENGINE_START_S,
) -> Plan:
    """Plan again after ``lost_worker`` disappeared: its planned (and running) tasks go to the
    others. ``done_task_ids`` are finished and left out; every other task is planned, deferred
    or unplaceable in the new plan."""
    known = {w.name for w in workers}
    _require(lost_worker in known, "lost_worker",
             f"got {lost_worker!r}; not one of the workers: {', '.join(sorted(known))}")
    done = set(done_task_ids)
    return plan_night([t for t in tasks if t.id not in done],
                      [w for w in workers if w.name != lost_worker],
                      models, now, owner_weights, engine_start_s)


def at(now: datetime, seconds: float) -> datetime:
    """``now`` plus ``seconds`` (the plan's internal clock to a datetime)."""
    return now + timedelta(seconds=seconds)


def _validate(tasks: Sequence[PlanTask], workers: Sequence[PlanWorker],
              models: Iterable[PlanModel], now: datetime,
              owner_weights: Mapping[str, float] | None,
              engine_start_s: float) -> dict[str, PlanModel]:
    _require_aware(now, "now")
    _require(math.isfinite(engine_start_s) and engine_start_s >= 0, "engine_start_s",
             f"got {engine_start_s!r}; must be 0 or more seconds")
    catalog = _unique({m.name: m for m in models}, [m.name for m in models], "models")
    _unique({}, [w.name for w in workers], "workers")
    _unique({}, [t.id for t in tasks], "tasks")
    for task in tasks:
        _require(task.model in catalog, f"task {task.id}: model",
                 f"unknown model {task.model!r}; the planner knows: "
                 f"{', '.join(sorted(catalog)) or '(none)'}")
    for worker in workers:
        _require(worker.resident_model is None or worker.resident_model in catalog,
                 f"worker {worker.name}: resident_model",
                 f"unknown model {worker.resident_model!r}; the planner knows: "
                 f"{', '.join(sorted(catalog)) or '(none)'}")
    for owner, weight in (owner_weights or {}).items():
        _require(math.isfinite(weight) and weight > 0, f"owner_weights[{owner!r}]",
                 f"got {weight!r}; a fair-share weight must be a positive number")
    return catalog


def _unique(result: dict, names: list, what: str) -> dict:
    seen: set = set()
    for name in names:
        _require(name not in seen, what, f"{name!r} appears twice; names and ids must be unique")
        seen.add(name)
    return result

"""Assignment: which worker runs which model groups, packed under a common horizon.

``assign`` finds by bisection the smallest horizon (seconds after ``now``) at which ``pack``
places every admitted task inside its worker's window; when even the windows' ends are not
enough, it admits the longest prefix of the (priority, fair-share tag) order that fits.
Swap times here are static estimates (disk, or a peer holding the model now); the timelines
of ``planner_core`` recompute them on the clock. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.planner_core import EPS, Assignment, Night, Run, initial_holds, swap_cost

BISECTION_STEPS = 24


@dataclass(frozen=True)
class Group:
    model: str
    tasks: tuple[int, ...]  # longest first


def swap_estimates(night: Night) -> dict[tuple[str, int], float]:
    """(model, worker) -> seconds to get that model running there (0 if resident)."""
    holds = initial_holds(night)
    estimates = {}
    for model in night.models:
        for w, worker in enumerate(night.workers):
            estimates[model, w] = (0.0 if worker.resident_model == model
                                   else swap_cost(night, model, w, 0.0, holds)[0])
    return estimates


def groups_of(night: Night, tasks: Sequence[int]) -> list[Group]:
    """Tasks by model, most memory-hungry model first, then most work; longest tasks first."""
    members: dict[str, list[int]] = {}
    for t in tasks:
        members.setdefault(night.tasks[t].model, []).append(t)
    groups = [Group(m, tuple(sorted(ts, key=lambda t: (-night.tasks[t].work_s,
                                                          night.tasks[t].id))))
              for m, ts in members.items()]
    groups.sort(key=lambda g: (-night.models[g.model].vram_gib,
                               -sum(night.tasks[t].work_s for t in g.tasks), g.model))
    return groups


def pack(night: Night, groups: Sequence[Group], horizon_s: float,
         estimates: dict[tuple[str, int], float]) -> Assignment | None:
    """Every group onto workers with free time before ``horizon_s``, or None if one does not
    fit. A worker gets at most one run of each model here."""
    free = [max(0.0, min(horizon_s, end) - start)
            for start, end in zip(night.start_s, night.end_s, strict=True)]
    runs: list[list[Run]] = [[] for _ in night.workers]
    for group in groups:
        remaining = list(group.tasks)
        tried: set[int] = set()
        while remaining:
            w = _choose(night, group.model, remaining, free, tried, estimates)
            if w is None:
                return None
            tried.add(w)
            taken, remaining, used = _fill(night, w, remaining,
                                           free[w] - estimates[group.model, w])
            if taken:
                runs[w].append(Run(group.model, tuple(taken)))
                free[w] -= used + estimates[group.model, w]
    return tuple(tuple(r) for r in runs)


def _fill(night: Night, w: int, tasks: list[int],
          budget: float) -> tuple[list[int], list[int], float]:
    """First fit, longest first: the tasks that fit in ``budget`` seconds on ``w``."""
    taken, rest, used = [], [], 0.0
    for t in tasks:
        d = night.duration(t, w)
        if used + d <= budget + EPS:
            taken.append(t)
            used += d
        else:
            rest.append(t)
    return taken, rest, used


def _choose(night: Night, model: str, tasks: list[int], free: list[float], tried: set[int],
            estimates: dict[tuple[str, int], float]) -> int | None:
    """The worker for the next chunk of a group: one holding the model; else the one where all
    of the rest fits most tightly; else the one that takes the most work."""
    work = sum(night.tasks[t].work_s for t in tasks)
    shortest = min(night.tasks[t].work_s for t in tasks)
    best, best_key = None, None
    for w, worker in enumerate(night.workers):
        budget = free[w] - estimates[model, w]
        if w in tried or not night.fits(model, w) or budget * worker.speed < shortest - EPS:
            continue
        slack = budget - work / worker.speed
        if worker.resident_model == model:
            key = (0, -budget, w)
        elif slack >= -EPS:
            key = (1, slack, worker.vram_gib, w)
        else:
            key = (2, -budget * worker.speed, worker.vram_gib, w)
        if best_key is None or key < best_key:
            best, best_key = w, key
    return best


def lower_horizon(night: Night, tasks: Sequence[int]) -> float:
    """No packing can end before this: for each memory need, the work that needs at least
    that much memory over the speed of the workers that have it."""
    bound = 0.0
    for need in {night.models[night.tasks[t].model].vram_gib for t in tasks}:
        work = sum(night.tasks[t].work_s for t in tasks
                   if night.models[night.tasks[t].model].vram_gib >= need - EPS)
        speed = sum(w.speed for w in night.workers if w.vram_gib >= need - EPS)
        bound = max(bound, min(night.start_s) + work / speed)
    return bound


def assign(night: Night, tasks: Sequence[int]) -> tuple[Assignment, list[int]]:
    """The packing at the smallest feasible horizon, and the tasks deferred to a later night."""
    estimates = swap_estimates(night)
    latest = max(night.end_s, default=0.0)
    if not tasks:
        return tuple(() for _ in night.workers), []
    admitted, deferred = _admit(night, list(tasks), latest, estimates)
    groups = groups_of(night, admitted)
    low, high = lower_horizon(night, admitted), latest
    best = pack(night, groups, high, estimates)
    if best is None:  # _admit guarantees a fit at the latest horizon
        raise AssertionError("admitted tasks do not fit")
    if (first := pack(night, groups, low, estimates)) is not None:
        return first, deferred
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        packed = pack(night, groups, middle, estimates)
        if packed is None:
            low = middle
        else:
            high, best = middle, packed
        if high - low < 1.0:
            break
    return best, deferred


def _admit(night: Night, tasks: list[int], latest: float,
           estimates: dict[tuple[str, int], float]) -> tuple[list[int], list[int]]:
    """All tasks if they fit by the windows' ends; else the longest fitting prefix in
    (priority, fair-share tag) order."""
    if pack(night, groups_of(night, tasks), latest, estimates) is not None:
        return tasks, []
    order = sorted(tasks, key=lambda t: (-night.tasks[t].priority, night.tag[t],
                                         night.tasks[t].id))
    low, high = 0, len(order)  # the first `low` fit, the first `high` do not
    while high - low > 1:
        middle = (low + high) // 2
        if pack(night, groups_of(night, order[:middle]), latest, estimates) is not None:
            low = middle
        else:
            high = middle
    return order[:low], order[low:]

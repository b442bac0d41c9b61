"""Deadline repair: local moves that lower the predicted deadline misses of a packed night.

For the earliest-deadline task predicted to miss, each move below is tried and the best kept if
it lowers (tasks past their window, misses per priority level from the highest down):

- *urgent*: run it first among its priority in its run, and its run first among runs of equal
  priority (this may cost a swap away from the resident model and back);
- *own run*: give it a run of its own ahead of its model's other tasks (an extra swap);
- *evict riders*: move the lower-priority tasks that run before it into runs after it;
- *move*: run it (urgent) on another worker that fits its model.

A task no move helps is left and reported as a predicted miss. ``balance`` then moves tasks
off the worker that ends last while that ends the night sooner and no deadline gets missed
that was met. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from scheduler.planner_core import (
    Assignment,
    Holds,
    Night,
    Run,
    Timeline,
    evaluate,
    miss_vector,
    timeline,
)

Candidate = tuple[Assignment, frozenset[int], tuple[int, ...]]  # ..., affected workers


def repair(night: Night, assignment: Assignment) -> tuple[Assignment, frozenset[int]]:
    """The assignment and urgent set after deadline repair."""
    urgent: frozenset[int] = frozenset()
    lines, holds = evaluate(night, assignment, urgent)
    given_up: set[int] = set()
    while True:
        misses = sorted((t for line in lines for t in line.misses if t not in given_up),
                        key=lambda t: (night.deadline_s[t], night.tasks[t].id))
        if not misses:
            return assignment, urgent
        better = _best_move(night, assignment, urgent, lines, holds, misses[0])
        if better is None:
            given_up.add(misses[0])
        else:
            assignment, urgent, lines = better


def score(night: Night, lines: Sequence[Timeline]) -> tuple:
    return (sum(len(line.overflow) for line in lines), miss_vector(night, lines),
            max((line.end_s for line in lines), default=0.0),
            sum(line.swap_s for line in lines))


def _best_move(night: Night, assignment: Assignment, urgent: frozenset[int],
               lines: list[Timeline], holds: Holds,
               task: int) -> tuple[Assignment, frozenset[int], list[Timeline]] | None:
    current = score(night, lines)
    best = None
    for new_assignment, new_urgent, affected in _candidates(night, assignment, urgent,
                                                            lines, task):
        new_lines = list(lines)
        for w in affected:
            new_lines[w] = timeline(night, w, new_assignment[w], new_urgent, holds)
        new_score = score(night, new_lines)
        if new_score[:2] < current[:2] and (best is None or new_score < best[0]):
            best = (new_score, (new_assignment, new_urgent, new_lines))
    return None if best is None else best[1]


def _candidates(night: Night, assignment: Assignment, urgent: frozenset[int],
                lines: Sequence[Timeline], task: int) -> Iterator[Candidate]:
    w = next(i for i, line in enumerate(lines) if any(e[0] == task for e in line.entries))
    model = night.tasks[task].model
    marked = urgent | {task}
    yield assignment, marked, (w,)
    without = _remove(assignment[w], {task})
    yield _replace(assignment, {w: without + (Run(model, (task,)),)}), marked, (w,)
    riders = _riders(night, lines[w], task)
    if riders:
        kept = _remove(assignment[w], riders) + tuple(_runs_of(night, riders))
        yield _replace(assignment, {w: kept}), marked, (w,)
    for v in range(len(assignment)):
        if v != w and night.fits(model, v):
            moved = {w: without, v: _add(assignment[v], model, task)}
            yield _replace(assignment, moved), marked, (w, v)


def _riders(night: Night, line: Timeline, task: int) -> set[int]:
    """Tasks of lower priority than ``task`` that run before it on its worker."""
    priority = night.tasks[task].priority
    before = []
    for t, _, _ in line.entries:
        if t == task:
            break
        before.append(t)
    return {t for t in before if night.tasks[t].priority < priority}


def _runs_of(night: Night, tasks: set[int]) -> list[Run]:
    by_model: dict[str, list[int]] = {}
    for t in sorted(tasks):
        by_model.setdefault(night.tasks[t].model, []).append(t)
    return [Run(m, tuple(ts)) for m, ts in sorted(by_model.items())]


def _remove(runs: tuple[Run, ...], tasks: set[int]) -> tuple[Run, ...]:
    kept = (Run(r.model, tuple(t for t in r.tasks if t not in tasks)) for r in runs)
    return tuple(r for r in kept if r.tasks)


def _add(runs: tuple[Run, ...], model: str, task: int) -> tuple[Run, ...]:
    for i, run in enumerate(runs):
        if run.model == model:
            return runs[:i] + (Run(model, run.tasks + (task,)),) + runs[i + 1:]
    return runs + (Run(model, (task,)),)


def _replace(assignment: Assignment, changes: dict[int, tuple[Run, ...]]) -> Assignment:
    return tuple(changes.get(w, runs) for w, runs in enumerate(assignment))



def balance(night: Night, assignment: Assignment, urgent: frozenset[int],
            max_moves: int = 200) -> Assignment:
    """Move tasks from the last worker to finish to others while the night gets shorter."""
    lines, holds = evaluate(night, assignment, urgent)
    for _ in range(max_moves):
        better = _shorter(night, assignment, urgent, lines, holds)
        if better is None:
            break
        assignment, lines = better
    return assignment


def _shorter(night: Night, assignment: Assignment, urgent: frozenset[int],
             lines: list[Timeline],
             holds: Holds) -> tuple[Assignment, list[Timeline]] | None:
    if not lines:
        return None
    current = score(night, lines)
    w = max(range(len(lines)), key=lambda i: (lines[i].end_s, -i))
    for task, _, _ in reversed(lines[w].entries):
        model = night.tasks[task].model
        for v in sorted(range(len(lines)), key=lambda i: lines[i].end_s):
            has_run = any(r.model == model for r in assignment[v])
            if v == w or not night.fits(model, v) or not has_run:
                continue
            if lines[v].end_s + night.duration(task, v) >= current[2]:
                continue
            moved = _replace(assignment, {w: _remove(assignment[w], {task}),
                                          v: _add(assignment[v], model, task)})
            new_lines = list(lines)
            for i in (w, v):
                new_lines[i] = timeline(night, i, moved[i], urgent, holds)
            new = score(night, new_lines)
            if new[:2] <= current[:2] and new[2] < current[2] - 1e-3:
                return moved, new_lines
    return None

"""Night simulation: the real planner (``scheduler.planner.plan_night``) against FIFO dispatch
and a greedy model-affinity baseline, in one event-driven simulator of a synthetic night.

    .venv/bin/python bench/night_sim.py                      # seeds 1-5, results to JSON
    .venv/bin/python bench/night_sim.py --seeds 7 --noise 0  # one seed, exact estimates

The night (seeded, deterministic): 8 workers (two each with 12, 24, 48 and 80 GiB GPUs, speed
0.5, 1.0, 1.6, 2.5), 6 models of 1 to 40 GB (GPU memory needed = 1.2 x weights, so the 24 and
40 GB models run only on the 48 and 80 GiB workers), 500 tasks of mixed size (log-normal,
median ~6 min at speed 1.0), four owners, priorities 0-2, a tenth with deadlines. Each worker has
one NIC (1 GbE, 10 GbE or 100 Gb RDMA) and a disk (NVMe 2 GB/s or SATA 0.5 GB/s); half start with
a model from the night before. A swap takes size / best source + 30 s engine start, the best
source being the local disk or a peer that holds the model on its GPU at that moment, at the
slower of the two links. Tasks take ``actual work / speed``; actual work is the estimate times a
log-normal factor (``--noise``, sigma 0.15 by default), so plans are made on estimates and run
on the truth.

Policies, all in the same simulator (a worker that becomes free asks its policy what to do):
- **planner**: ``plan_night`` at 22:00; each worker runs its planned sequence. When a worker's
  sequence runs out while others still have unstarted tasks, the remaining tasks are planned
  again from the current state (running workers busy until their task's *estimated* end).
- **fifo**: the next task in submission order that fits the free worker; swap if needed.
- **greedy**: the oldest task for the worker's resident model; else swap to the model with the
  most queued (estimated) work that fits, and take its oldest task.

Lower bound on the makespan (from 22:00, with the *actual* work), the largest of:
- *memory classes*: for each GPU memory need c, the tasks whose model needs >= c can run only on
  workers with at least c, so sum(speed_w x busy_w) over those workers >= their work + the
  speed-weighted time of the loads they must do. A model of that class resident nowhere needs at
  least one load, from disk (nobody can serve it before), costing at least
  min_w speed_w x (size / disk_w + start). Hence
  makespan >= (work_c + sum of those loads) / sum of speeds_c.
- *single tasks*: each task ends no earlier than on its best eligible worker: its work / speed,
  plus, if the model is not resident there, size / (the best of that disk and the links to the
  peers holding it at 22:00; the fastest disk anywhere if nobody holds it) + start.
Swaps beyond each model's first load and the indivisibility of tasks are not counted, so the
bound is optimistic; the ratio overstates how far the planner is from the true optimum.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.planner import (  # noqa: E402
    ENGINE_START_S,
    PlanModel,
    PlanTask,
    PlanWorker,
    plan_night,
)
from scheduler import planner_build  # noqa: E402, F401  (imported once here, not in the timing)

RESULTS_PATH = ROOT / "bench" / "results" / "night_sim.json"
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
MORNING = NOW + timedelta(hours=9)
GBE, TEN_GBE, RDMA_100G = 0.125, 1.25, 12.5  # GB/s
NVME, SATA = 2.0, 0.5
MODEL_SIZES = {"m1": 1, "m3": 3, "m7": 7, "m14": 14, "m24": 24, "m40": 40}
MODEL_SHARE = {"m1": 0.2, "m3": 0.2, "m7": 0.2, "m14": 0.15, "m24": 0.1, "m40": 0.15}
WORKERS = [  # name, GiB, speed, link GB/s, rdma, disk GB/s
    ("g12a", 12, 0.5, GBE, False, SATA), ("g12b", 12, 0.5, TEN_GBE, False, NVME),
    ("g24a", 24, 1.0, TEN_GBE, False, SATA), ("g24b", 24, 1.0, GBE, False, NVME),
    ("g48a", 48, 1.6, RDMA_100G, True, SATA), ("g48b", 48, 1.6, TEN_GBE, False, NVME),
    ("g80a", 80, 2.5, RDMA_100G, True, NVME), ("g80b", 80, 2.5, RDMA_100G, True, SATA),
]
OWNERS = ("alice", "bob", "carol", "dave")


@dataclass(frozen=True)
class Night:
    tasks: tuple[PlanTask, ...]
    actual_s: dict[int, float]  # task id -> actual work at speed 1.0
    workers: tuple[PlanWorker, ...]
    models: dict[str, PlanModel]


def make_night(seed: int, n_tasks: int, noise: float) -> Night:
    rng = random.Random(seed)
    models = {n: PlanModel.from_size(n, s) for n, s in MODEL_SIZES.items()}
    workers = []
    for name, vram, speed, link, rdma, disk in WORKERS:
        fitting = [m.name for m in models.values() if m.vram_gib <= vram]
        resident = rng.choice(fitting) if rng.random() < 0.5 else None
        workers.append(PlanWorker(name, vram, NOW, MORNING, speed, resident, 64.0, link,
                                  disk, rdma))
    tasks, actual = [], {}
    names, shares = list(MODEL_SHARE), list(MODEL_SHARE.values())
    for i in range(n_tasks):
        work = min(3600.0, rng.lognormvariate(math.log(360), 0.8))
        deadline = NOW + timedelta(hours=rng.uniform(1.5, 7)) if rng.random() < 0.1 else None
        tasks.append(PlanTask(i, rng.choices(names, shares)[0], work,
                              rng.choices([0, 1, 2], [0.7, 0.2, 0.1])[0], rng.choice(OWNERS),
                              deadline, NOW - timedelta(minutes=n_tasks - i)))
        actual[i] = work * (rng.lognormvariate(0, noise) if noise else 1.0)
    return Night(tuple(tasks), actual, tuple(workers), models)


@dataclass
class WorkerState:
    spec: PlanWorker
    model: str | None
    loaded_at: float = -math.inf  # when the current model finished loading
    busy_until: float = 0.0
    running_estimate_end: float = 0.0


@dataclass
class Stats:
    swap_s: float = 0.0
    swaps: int = 0
    gb_moved: float = 0.0
    gb_from_peers: float = 0.0
    ends: dict[int, float] = field(default_factory=dict)
    plan_wall_s: list[float] = field(default_factory=list)
    predicted_misses: int | None = None  # by the planner's first plan, at 22:00


Policy = Callable[[int, float], "int | None"]  # worker index, clock -> task id to run


class Simulator:
    """Free workers ask the policy for a task; swaps and tasks take simulated time."""

    def __init__(self, night: Night) -> None:
        self.night = night
        self.by_id = {t.id: t for t in night.tasks}
        self.state = [WorkerState(w, w.resident_model) for w in night.workers]
        self.queued = {t.id for t in night.tasks}
        self.stats = Stats()
        self.events: list[tuple[float, int]] = [(0.0, w) for w in range(len(self.state))]

    def run(self, policy: Policy) -> Stats:
        heapq.heapify(self.events)
        while self.events:
            clock, w = heapq.heappop(self.events)
            if self.state[w].busy_until > clock + 1e-9:
                continue  # a stale wake-up
            task_id = policy(w, clock)
            if task_id is not None:
                self._start(w, task_id, clock)
        assert not self.queued, f"{len(self.queued)} tasks never ran"
        return self.stats

    def wake(self, w: int, clock: float) -> None:
        heapq.heappush(self.events, (clock, w))

    def _start(self, w: int, task_id: int, clock: float) -> None:
        task, state = self.by_id[task_id], self.state[w]
        self.queued.remove(task_id)
        start = clock
        if task.model != state.model:
            seconds, from_peer = self.swap_seconds(w, task.model, clock)
            size = self.night.models[task.model].size_gb
            self.stats.swap_s += seconds
            self.stats.swaps += 1
            self.stats.gb_moved += size
            self.stats.gb_from_peers += size if from_peer else 0.0
            state.model, state.loaded_at = task.model, clock + seconds
            start = clock + seconds
        end = start + self.night.actual_s[task_id] / state.spec.speed
        state.busy_until = end
        state.running_estimate_end = start + task.work_s / state.spec.speed
        self.stats.ends[task_id] = end
        self.wake(w, end)

    def swap_seconds(self, w: int, model: str, clock: float) -> tuple[float, bool]:
        me = self.state[w].spec
        bandwidth, from_peer = me.disk_gb_s, False
        for v, other in enumerate(self.state):
            if v != w and other.model == model and other.loaded_at <= clock:
                link = min(me.link_gb_s, other.spec.link_gb_s)
                if link > bandwidth:
                    bandwidth, from_peer = link, True
        return self.night.models[model].size_gb / bandwidth + ENGINE_START_S, from_peer

    def fits(self, w: int, model: str) -> bool:
        return self.night.models[model].vram_gib <= self.state[w].spec.vram_gib


def fifo(sim: Simulator) -> Policy:
    order = sorted(sim.night.tasks, key=lambda t: (t.submitted_at, t.id))

    def choose(w: int, clock: float) -> int | None:
        return next((t.id for t in order if t.id in sim.queued and sim.fits(w, t.model)), None)
    return choose


def greedy(sim: Simulator) -> Policy:
    order = sorted(sim.night.tasks, key=lambda t: (t.submitted_at, t.id))

    def choose(w: int, clock: float) -> int | None:
        waiting = [t for t in order if t.id in sim.queued and sim.fits(w, t.model)]
        mine = [t for t in waiting if t.model == sim.state[w].model]
        if mine:
            return mine[0].id
        work: dict[str, float] = {}
        for t in waiting:
            work[t.model] = work.get(t.model, 0.0) + t.work_s
        if not work:
            return None
        model = max(sorted(work), key=lambda m: work[m])
        return next(t.id for t in waiting if t.model == model)
    return choose


def planned(sim: Simulator) -> Policy:
    queues: list[list[int]] = [[] for _ in sim.state]

    def replan(clock: float) -> None:
        now = NOW + timedelta(seconds=clock)
        workers = [replace(s.spec, resident_model=s.model,
                           busy_until_at=now + timedelta(seconds=max(
                               0.0, s.running_estimate_end - clock))
                           if s.busy_until > clock else None)
                   for s in sim.state]
        tasks = [t for t in sim.night.tasks if t.id in sim.queued]
        started = time.perf_counter()
        plan = plan_night(tasks, workers, sim.night.models.values(), now)
        sim.stats.plan_wall_s.append(time.perf_counter() - started)
        assert not plan.unplaceable and not plan.deferred
        if sim.stats.predicted_misses is None:
            sim.stats.predicted_misses = len(plan.deadline_misses)
        for w, state in enumerate(sim.state):
            queues[w] = list(plan.for_worker(state.spec.name).task_ids)
            if queues[w] and state.busy_until <= clock:
                sim.wake(w, clock)

    def choose(w: int, clock: float) -> int | None:
        if not sim.stats.plan_wall_s or (not queues[w] and any(len(q) > 1 for q in queues)):
            replan(clock)
        return queues[w].pop(0) if queues[w] else None
    return choose


def lower_bound(night: Night) -> float:
    """See the module docstring for the derivation."""
    models, workers = night.models, night.workers
    resident = {w.resident_model for w in night.workers}
    need = {t.id: models[t.model].vram_gib for t in night.tasks}
    bound = 0.0
    for c in set(need.values()):
        cls = [w for w in workers if w.vram_gib >= c]
        work = sum(night.actual_s[t.id] for t in night.tasks if need[t.id] >= c)
        absent = {t.model for t in night.tasks if need[t.id] >= c} - resident
        loads = sum(min(w.speed * (models[m].size_gb / w.disk_gb_s + ENGINE_START_S)
                        for w in cls) for m in absent)
        bound = max(bound, (work + loads) / sum(w.speed for w in cls))
    for t in night.tasks:
        bound = max(bound, min(night.actual_s[t.id] / w.speed + _first_load(night, t.model, w)
                               for w in workers if w.vram_gib >= need[t.id]))
    return bound


def _first_load(night: Night, model: str, worker: PlanWorker) -> float:
    if worker.resident_model == model:
        return 0.0
    holders = [w for w in night.workers if w.resident_model == model]
    if holders:
        bandwidth = max([worker.disk_gb_s] + [min(worker.link_gb_s, h.link_gb_s)
                                              for h in holders])
    else:
        bandwidth = max(w.disk_gb_s for w in night.workers)
    return night.models[model].size_gb / bandwidth + ENGINE_START_S


def simulate(night: Night, name: str) -> dict:
    sim = Simulator(night)
    stats = sim.run({"planner": planned, "fifo": fifo, "greedy": greedy}[name](sim))
    by_id = {t.id: t for t in night.tasks}
    misses = sum(1 for i, end in stats.ends.items() if by_id[i].deadline_at is not None
                 and NOW + timedelta(seconds=end) > by_id[i].deadline_at)
    result = {"makespan_s": max(stats.ends.values()), "swap_s": stats.swap_s,
              "swaps": stats.swaps, "gb_moved": stats.gb_moved,
              "gb_from_peers": stats.gb_from_peers, "deadline_misses": misses,
              "deadlines": sum(1 for t in night.tasks if t.deadline_at is not None)}
    if stats.plan_wall_s:
        result |= {"plans": len(stats.plan_wall_s), "first_plan_wall_s": stats.plan_wall_s[0],
                   "all_plans_wall_s": sum(stats.plan_wall_s),
                   "deadline_misses_predicted_at_start": stats.predicted_misses}
    return result


def run_seed(seed: int, n_tasks: int, noise: float) -> dict:
    night = make_night(seed, n_tasks, noise)
    bound = lower_bound(night)
    policies = {name: simulate(night, name) for name in ("planner", "fifo", "greedy")}
    for result in policies.values():
        result["makespan_over_lower_bound"] = result["makespan_s"] / bound
    return {"seed": seed, "lower_bound_s": bound, "policies": policies,
            "swap_seconds_vs_fifo": policies["planner"]["swap_s"] / policies["fifo"]["swap_s"],
            "makespan_over_lower_bound": policies["planner"]["makespan_over_lower_bound"]}


def print_table(runs: list[dict]) -> None:
    print(f"{'seed':>4} {'policy':<8} {'makespan h':>10} {'/ bound':>8} {'swap s':>8} "
          f"{'swaps':>5} {'GB moved':>8} {'GB peers':>8} {'misses':>7}")
    for run in runs:
        for name, r in run["policies"].items():
            print(f"{run['seed']:>4} {name:<8} {r['makespan_s'] / 3600:>10.3f} "
                  f"{r['makespan_over_lower_bound']:>8.3f} {r['swap_s']:>8.0f} {r['swaps']:>5} "
                  f"{r['gb_moved']:>8.0f} {r['gb_from_peers']:>8.0f} "
                  f"{r['deadline_misses']:>3}/{r['deadlines']:<3}")
        print(f"{'':>4} lower bound {run['lower_bound_s'] / 3600:.3f} h; planner swap s / "
              f"FIFO's {run['swap_seconds_vs_fifo']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = [run_seed(seed, args.tasks, args.noise) for seed in args.seeds]
    print_table(runs)
    ratios = [r["makespan_over_lower_bound"] for r in runs]
    swaps = [r["swap_seconds_vs_fifo"] for r in runs]
    summary = {
        "makespan_over_lower_bound": max(ratios),
        "swap_seconds_vs_fifo": max(swaps),
        "statistic": "worst over the seeds (largest ratio)",
        "targets": {"makespan_over_lower_bound": 1.10, "swap_seconds_vs_fifo": 0.70},
        "spread": {"makespan_over_lower_bound": [min(ratios), statistics.median(ratios),
                                                 max(ratios)],
                   "swap_seconds_vs_fifo": [min(swaps), statistics.median(swaps), max(swaps)],
                   "order": "min, median, max"},
        "planner_wall_s_500_tasks": max(r["policies"]["planner"]["first_plan_wall_s"]
                                        for r in runs),
        "seeds": args.seeds, "tasks": args.tasks, "noise_sigma": args.noise,
        "machine": "2-core x86-64 KVM guest, 24 GiB",
        "python": platform.python_version(),
        "commit": _commit(),
        "date": subprocess.run(["date", "+%F"], capture_output=True, text=True).stdout.strip(),
        "runs": runs,
    }
    print(f"worst makespan / bound {max(ratios):.3f} (target 1.10), worst swap s vs FIFO "
          f"{max(swaps):.3f} (target 0.70), planner wall "
          f"{summary['planner_wall_s_500_tasks']:.3f} s for {args.tasks} tasks")
    if not args.no_write:
        RESULTS_PATH.write_text(json.dumps(summary, indent=2) + "\n")


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()

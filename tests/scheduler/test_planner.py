"""The swap-aware planner on hand-made nights whose best plan is known."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.errors import InvalidSubmissionError
from scheduler.planner import (
    Plan,
    PlanInputError,
    PlanModel,
    PlanTask,
    PlanWorker,
    plan_night,
    replan_without,
)

NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
MORNING = NOW + timedelta(hours=9)
START = 30.0  # engine start seconds used by these tests


def worker(name: str, vram: float = 24, **kw) -> PlanWorker:
    kw.setdefault("opens_at", NOW)
    kw.setdefault("closes_at", MORNING)
    return PlanWorker(name, vram, **kw)


def model(name: str, size_gb: float, vram: float | None = None) -> PlanModel:
    return PlanModel(name, size_gb, vram if vram is not None else size_gb * 1.2)


def task(i: int, model_name: str, work: float = 100.0, **kw) -> PlanTask:
    return PlanTask(i, model_name, work, **kw)


def plan(tasks, workers, models, **kw) -> Plan:
    return plan_night(tasks, workers, models, NOW, engine_start_s=START, **kw)


def order(p: Plan, name: str) -> list[int]:
    return list(p.for_worker(name).task_ids)


def ends(p: Plan) -> dict[int, datetime]:
    return {t.task_id: t.ends_at for w in p.workers for t in w.tasks}


MODELS = [model("a", 7), model("b", 7), model("big", 40, 48), model("huge", 60, 72)]


def test_each_model_stays_on_the_worker_that_holds_it_so_nothing_is_swapped():
    workers = [worker("w1", resident_model="a"), worker("w2", resident_model="b")]
    tasks = [task(i, "ab"[i % 2]) for i in range(10)]
    p = plan(tasks, workers, MODELS)
    assert p.swap_seconds == 0
    assert sorted(order(p, "w1")) == [0, 2, 4, 6, 8]
    assert sorted(order(p, "w2")) == [1, 3, 5, 7, 9]
    assert p.ends_at == NOW + timedelta(seconds=500)


def test_one_model_is_split_evenly_over_two_equal_workers():
    workers = [worker("w1", resident_model="a"), worker("w2", resident_model="a")]
    p = plan([task(i, "a") for i in range(4)], workers, MODELS)
    assert p.ends_at == NOW + timedelta(seconds=200)
    assert len(order(p, "w1")) == len(order(p, "w2")) == 2


def test_a_model_larger_than_every_gpu_is_unplaceable_with_the_reason():
    p = plan([task(1, "big"), task(2, "a")], [worker("w1", 24), worker("w2", 12)], MODELS)
    assert [u.task_id for u in p.unplaceable] == [1]
    assert p.unplaceable[0].reason == (
        "model big needs 48 GiB of GPU memory; the largest worker GPU has 24 GiB")
    assert p.planned_task_ids == {2}


def test_a_model_that_fits_only_the_80_gib_worker_runs_only_there():
    workers = [worker("small", 24, speed=4.0), worker("large", 80)]
    tasks = [task(i, "big") for i in range(6)] + [task(10 + i, "a") for i in range(6)]
    p = plan(tasks, workers, MODELS)
    assert set(range(6)) <= set(order(p, "large"))
    assert not set(range(6)) & set(order(p, "small"))
    assert not p.unplaceable and not p.deferred


def test_a_deadline_that_cannot_be_met_is_reported_at_planning_time():
    deadline = NOW + timedelta(seconds=50)
    p = plan([task(1, "a", 100.0, deadline_at=deadline)], [worker("w1", resident_model="a")],
             MODELS)
    assert [(m.task_id, m.worker, m.deadline_at) for m in p.deadline_misses] == [
        (1, "w1", deadline)]
    assert p.deadline_misses[0].predicted_end_at == NOW + timedelta(seconds=100)


def test_an_urgent_task_runs_first_on_its_worker_to_meet_its_deadline():
    tasks = [task(i, "a") for i in range(5)]
    tasks.append(task(9, "a", deadline_at=NOW + timedelta(seconds=150), owner="z"))
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    assert not p.deadline_misses
    assert ends(p)[9] <= NOW + timedelta(seconds=150)


def test_an_urgent_task_justifies_an_extra_swap():
    tasks = [task(i, "a") for i in range(5)]
    tasks.append(task(9, "b", deadline_at=NOW + timedelta(seconds=200)))
    p = plan(tasks, [worker("w1", resident_model="a", disk_gb_s=1.0)], MODELS)
    assert not p.deadline_misses
    assert order(p, "w1")[0] == 9
    assert [s.model for s in p.for_worker("w1").swaps] == ["b", "a"]


def test_higher_priority_runs_first_even_at_the_cost_of_a_swap():
    tasks = [task(1, "a", priority=0), task(2, "b", priority=5)]
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    assert order(p, "w1") == [2, 1]


def test_within_a_model_run_priority_orders_the_tasks():
    tasks = [task(1, "a", priority=0), task(2, "a", priority=3), task(3, "a", priority=1)]
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    assert order(p, "w1") == [2, 3, 1]


def test_a_lower_priority_task_rides_with_its_model_run_to_save_a_swap():
    tasks = [task(1, "a", priority=5), task(2, "a", priority=0), task(3, "b", priority=3)]
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    assert order(p, "w1") == [1, 2, 3]
    assert len(p.for_worker("w1").swaps) == 1


def test_the_rider_moves_out_when_the_higher_priority_task_would_miss_its_deadline():
    swap_b = 7 / 0.5 + START
    tasks = [task(1, "a", priority=5), task(2, "a", priority=0),
             task(3, "b", priority=3, deadline_at=NOW + timedelta(seconds=210 + swap_b))]
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    assert order(p, "w1") == [1, 3, 2]
    assert not p.deadline_misses


def test_fair_share_gives_owners_service_in_proportion_to_their_weights():
    tasks = [task(i, "a", 60.0, owner="alice") for i in range(400)]
    tasks += [task(1000 + i, "a", 60.0, owner="bob") for i in range(400)]
    short = worker("w1", resident_model="a", closes_at=NOW + timedelta(hours=4))
    p = plan(tasks, [short], MODELS, owner_weights={"alice": 2.0, "bob": 1.0})
    planned = p.for_worker("w1").tasks
    assert len(planned) == 240 and len(p.deferred) == 560
    half = [t for t in planned if t.ends_at <= NOW + timedelta(hours=2)]
    alice = sum(1 for t in half if t.task_id < 1000)
    assert alice / (len(half) - alice) == pytest.approx(2.0, abs=0.05)
    admitted = sum(1 for t in planned if t.task_id < 1000)
    assert admitted / (len(planned) - admitted) == pytest.approx(2.0, abs=0.05)


def test_equal_weights_by_default_alternate_owners():
    tasks = [task(i, "a", owner="alice") for i in range(3)]
    tasks += [task(10 + i, "a", owner="bob") for i in range(3)]
    p = plan(tasks, [worker("w1", resident_model="a")], MODELS)
    owners = ["alice" if i < 10 else "bob" for i in order(p, "w1")]
    assert owners == ["alice", "bob"] * 3


def test_the_prefetch_hint_names_the_next_model_while_the_current_one_runs():
    tasks = [task(1, "a"), task(2, "b")]
    p = plan(tasks, [worker("w1", resident_model="a", host_ram_gb=64)], MODELS)
    [hint] = p.prefetch
    assert (hint.worker, hint.model, hint.while_model, hint.source) == ("w1", "b", "a", "disk")
    assert hint.starts_at == NOW


def test_no_prefetch_hint_when_the_next_model_does_not_fit_in_host_ram():
    tasks = [task(1, "a"), task(2, "b")]
    p = plan(tasks, [worker("w1", resident_model="a", host_ram_gb=4)], MODELS)
    assert p.prefetch == ()


def test_a_swap_pulls_from_the_peer_over_rdma_when_that_is_fastest():
    workers = [worker("holder", resident_model="b", link_gb_s=12.5, rdma=True),
               worker("puller", resident_model="a", link_gb_s=12.5, rdma=True, disk_gb_s=0.5)]
    tasks = [task(1, "b", 1000.0), task(2, "b", 1000.0), task(3, "b", 1000.0),
             task(4, "b", 1000.0)]
    p = plan(tasks, workers, MODELS)
    [swap] = p.for_worker("puller").swaps
    assert (swap.model, swap.source, swap.transport) == ("b", "holder", "rdma")
    assert swap.seconds == pytest.approx(7 / 12.5 + START)


def test_a_lost_workers_tasks_are_replanned_onto_the_others():
    workers = [worker("w1", resident_model="a"), worker("w2", resident_model="b"),
               worker("w3", resident_model="a")]
    tasks = [task(i, "ab"[i % 2], 50.0 + i) for i in range(30)]
    before = plan(tasks, workers, MODELS)
    assert order(before, "w3")
    done = set(order(before, "w1")[:2])
    after = replan_without(tasks, workers, MODELS, NOW, "w3", done, engine_start_s=START)
    assert "w3" not in {w.worker for w in after.workers}
    assert after.planned_task_ids == {t.id for t in tasks} - done
    assert not after.deferred and not after.unplaceable


def test_a_worker_whose_window_is_closed_gets_nothing():
    closed = worker("closed", opens_at=NOW - timedelta(hours=10),
                    closes_at=NOW - timedelta(hours=1), resident_model="a")
    p = plan([task(1, "a")], [closed, worker("open")], MODELS)
    assert order(p, "open") == [1]
    assert order(p, "closed") == []


def test_with_every_window_closed_tasks_are_deferred_and_without_workers_unplaceable():
    closed = worker("closed", opens_at=NOW - timedelta(hours=10),
                    closes_at=NOW - timedelta(hours=1))
    p = plan([task(1, "a")], [closed], MODELS)
    assert [d.reason for d in p.deferred] == [
        "no worker with enough GPU memory for model a has an open window tonight"]
    p = plan([task(1, "a")], [], MODELS)
    assert [u.reason for u in p.unplaceable] == [
        "model a needs 8.4 GiB of GPU memory; there are no workers"]


def test_a_task_longer_than_every_window_is_deferred_with_the_reason():
    short = worker("w1", resident_model="a", closes_at=NOW + timedelta(hours=1))
    p = plan([task(1, "a", 7200.0)], [short], MODELS)
    [d] = p.deferred
    assert d.task_id == 1 and "longest window left tonight is 1.00 h" in d.reason


def random_night(seed: int, n_tasks: int = 500):
    rng = random.Random(seed)
    models = [model(f"m{s}", s) for s in (1, 3, 7, 14, 18, 40)]
    workers = [worker(f"w{i}", vram, speed=speed, resident_model=rng.choice([None, "m7"]),
                      host_ram_gb=64, link_gb_s=rng.choice([0.125, 1.25, 12.5]))
               for i, (vram, speed) in enumerate([(12, .6), (12, .6), (24, 1), (24, 1),
                                                  (48, 1.6), (48, 1.6), (80, 2.4), (80, 2.4)])]
    tasks = [task(i, rng.choice(models).name, rng.uniform(30, 600),
                  priority=rng.choice([0, 0, 1]), owner=rng.choice("xyz"),
                  deadline_at=NOW + timedelta(hours=rng.uniform(1, 6))
                  if rng.random() < 0.1 else None) for i in range(n_tasks)]
    return tasks, workers, models


def test_500_tasks_on_8_workers_plan_well_under_a_second_and_fit_gpu_memory():
    tasks, workers, models = random_night(3)
    started = time.perf_counter()
    p = plan(tasks, workers, models)
    assert time.perf_counter() - started < 1.0
    need = {m.name: m.vram_gib for m in models}
    vram = {w.name: w.vram_gib for w in workers}
    for w in p.workers:
        assert all(need[t.model] <= vram[w.worker] for t in w.tasks)
    assert p.planned_task_ids == {t.id for t in tasks}


def test_the_plan_is_deterministic_whatever_the_input_order():
    tasks, workers, models = random_night(5, 200)
    first = plan(tasks, workers, models)
    assert plan(tasks, workers, models) == first
    shuffled = list(tasks)
    random.Random(0).shuffle(shuffled)
    assert plan(shuffled, workers, list(reversed(models))) == first


@pytest.mark.parametrize(("build", "field", "fragment"), [
    (lambda: task(3, "a", -5.0), "task 3: work_s", "-5.0"),
    (lambda: worker("w9", opens_at=NOW, closes_at=NOW), "worker w9: closes_at", "zero"),
    (lambda: worker("w9", speed=0), "worker w9: speed", "0"),
    (lambda: task(4, "a", deadline_at=datetime(2026, 12, 2, 7)), "task 4: deadline_at", "naive"),
    (lambda: model("m", 0), "model m: size_gb", "positive"),
])
def test_bad_values_raise_errors_that_name_the_field(build, field, fragment):
    with pytest.raises(PlanInputError) as caught:
        build()
    assert caught.value.field == field and fragment in caught.value.message


@pytest.mark.parametrize(("tasks", "workers", "kw", "field", "fragment"), [
    ([task(1, "nope")], [worker("w1")], {}, "task 1: model", "'nope'"),
    ([task(1, "a"), task(1, "b")], [worker("w1")], {}, "tasks", "1 appears twice"),
    ([task(1, "a")], [worker("w1"), worker("w1")], {}, "workers", "'w1' appears twice"),
    ([task(1, "a")], [worker("w1", resident_model="x")], {}, "worker w1: resident_model", "'x'"),
    ([task(1, "a", owner="o")], [worker("w1")], {"owner_weights": {"o": 0}},
     "owner_weights['o']", "positive"),
])
def test_bad_inputs_to_plan_night_raise_errors_that_name_the_field(tasks, workers, kw, field,
                                                                   fragment):
    with pytest.raises(InvalidSubmissionError) as caught:
        plan(tasks, workers, MODELS, **kw)
    assert caught.value.field == field and fragment in caught.value.message


def test_replanning_without_an_unknown_worker_is_an_error():
    with pytest.raises(PlanInputError, match="lost_worker"):
        replan_without([], [worker("w1")], MODELS, NOW, "w2")

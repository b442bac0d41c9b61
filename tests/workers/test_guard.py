"""The task frame under the guard, on a real database with the FakeEngine: suspending when
the owner comes back, resuming without redoing finished lines, giving the task back when the
window closes or the owner stays, and energy on the attempt."""

import json
from dataclasses import dataclass, field

import pytest

from jobs import FakeEngine
from scheduler import session_scope, store
from scheduler.models import AttemptStatus, TaskStatus, Worker, WorkerState
from scheduler.settings import YieldSpec
from scheduler.submit import submit_batch
from tests.conftest import batch_line
from workers import Presence, WorkerContext, run_batch_task
from workers.guard import Guard
from workers.probes import FileProbe

SPEC = YieldSpec(probes=[], start_idle_s=0, grace_s=0, resume_idle_s=5, max_suspend_s=60, poll_s=1)


class Clock:
    """Time moves only when the guard sleeps; ``on_sleep`` lets a test act at a given time."""

    def __init__(self):
        self.t = 0.0
        self.on_sleep = lambda t: None

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds
        self.on_sleep(self.t)


@dataclass
class Holder:
    engine: FakeEngine = field(default_factory=FakeEngine)
    slept: int = 0
    loads: int = 0

    @property
    def resident_model(self):
        return None if self.slept > self.loads - 1 and self.slept else self.engine.model_name

    def engine_for(self, alias):
        self.loads += 1
        return self.engine

    def sleep(self):
        self.slept += 1
        return "engine shut down"

    def release(self):
        pass


@pytest.fixture
def owner(tmp_path):
    return FileProbe(tmp_path / "owner-is-here")


@pytest.fixture
def world(settings, owner):
    clock = Clock()
    window = {"open": True}
    guard = Guard(SPEC, [owner], window_open=lambda: window["open"], clock=clock, sleep=clock.sleep)
    ctx = WorkerContext(settings=settings, holder=Holder(), presence=Presence(settings), guard=guard)
    return ctx, clock, window


def _submit(settings, n) -> int:
    data = "\n".join(json.dumps(batch_line(f"c{i}", f"hi {i}")) for i in range(n)).encode()
    return submit_batch(settings, data, model="tiny").task_id


def _task(settings, task_id):
    with session_scope(settings.database_url) as s:
        return store.get_task(s, task_id), s.exec(
            store.select(store.Attempt).where(store.Attempt.task_id == task_id)).all()


def _owner_returns_at(owner, clock, request_id):
    """The FakeEngine 'answers' c<k> and the owner sits down at the same moment."""
    def script(req):
        if req.request_id == request_id:
            owner.path.touch()
            clock.t += 1  # the next check is due
        return ["fine"]
    return script


def test_owner_returning_suspends_and_resume_skips_finished_lines(world, owner, settings):
    ctx, clock, _ = world
    settings.result_flush_s = 0
    task_id = _submit(settings, 6)
    ctx.holder.engine.script = _owner_returns_at(owner, clock, "c2")
    states = []
    clock.on_sleep = lambda t: (states.append(_worker_state(settings)),
                                owner.path.unlink() if t >= 4 and owner.path.exists() else None)

    result = run_batch_task(ctx, task_id)

    task, attempts = _task(settings, task_id)
    assert task.status == TaskStatus.SUCCEEDED and result["succeeded"] == 6
    assert ctx.holder.engine.calls == [["c0", "c1", "c2", "c3", "c4", "c5"], ["c3", "c4", "c5"]]
    assert ctx.holder.slept == 1  # the GPU was freed once
    assert states[0][0] == WorkerState.SUSPENDED and "owner-is-here exists" in states[0][1]
    assert clock.t == 3 + SPEC.resume_idle_s  # last seen at t=3, then the full quiet period
    assert [a.status for a in attempts] == [AttemptStatus.SUCCEEDED]
    assert attempts[0].energy_method == "unavailable" and attempts[0].energy_j is None


def test_window_closing_mid_task_gives_it_back_with_lines_kept(world, settings):
    ctx, clock, window = world
    settings.result_flush_s = 0
    task_id = _submit(settings, 5)

    def script(req):
        if req.request_id == "c1":
            window["open"] = False
            clock.t += 1
        return ["fine"]
    ctx.holder.engine.script = script

    result = run_batch_task(ctx, task_id)

    task, attempts = _task(settings, task_id)
    assert result["released"] == "the night window closed"
    assert task.status == TaskStatus.QUEUED and task.progress_done == 2
    assert task.max_attempts == 4  # a yield does not use up a try
    assert attempts[0].status == AttemptStatus.YIELDED and ctx.holder.slept == 1


def test_owner_staying_too_long_gives_the_task_back(world, owner, settings):
    ctx, clock, _ = world
    task_id = _submit(settings, 2)
    owner.path.touch()  # at the machine before the task starts
    result = run_batch_task(ctx, task_id)
    task, attempts = _task(settings, task_id)
    assert "max_suspend_s 60" in result.get("released", str(result)), result
    assert clock.t >= 60
    assert task.status == TaskStatus.QUEUED and ctx.holder.engine.calls == []
    assert attempts[0].status == AttemptStatus.YIELDED


def test_a_message_arriving_outside_the_window_is_not_claimed(world, settings):
    ctx, _, window = world
    task_id = _submit(settings, 2)
    with session_scope(settings.database_url) as s:
        store.mark_dispatched(s, task_id)
    window["open"] = False
    assert run_batch_task(ctx, task_id)["skipped"]
    task, attempts = _task(settings, task_id)
    assert task.status == TaskStatus.QUEUED and attempts == []


def test_idle_worker_shows_why_it_does_not_work(world, owner):
    ctx, _, window = world
    assert ctx.guard.idle_state() == (WorkerState.IDLE, None)
    owner.path.touch()
    state, reason = ctx.guard.idle_state()
    assert state == WorkerState.OWNER_ACTIVE and "owner-is-here" in reason
    window["open"] = False
    assert ctx.guard.idle_state()[0] == WorkerState.OUTSIDE_WINDOW


def _worker_state(settings):
    with session_scope(settings.database_url) as s:
        worker = s.get(Worker, settings.worker_name)
        return worker.state, worker.state_reason

"""Dispatch through the planner: live workers from the database, one task at a time on each
worker's own queue, notes for what cannot run, and re-planning when a worker is lost."""

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from scheduler import session_scope, store
from scheduler.celery_app import QUEUE, worker_queue
from scheduler.dispatch import dispatch_queued, reap_lost_workers
from scheduler.errors import InvalidSubmissionError
from scheduler.models import Task, TaskStatus, Worker, WorkerState, utcnow
from scheduler.settings import ModelSpec
from scheduler.submit import submit_batch
from tests.conftest import batch_line


@dataclass
class RecordingBroker:
    """Stands in for the Celery app at the broker seam: records what would be sent."""

    sent: list[tuple[str, list, str]] = field(default_factory=list)

    def send_task(self, name, args, queue):
        self.sent.append((name, args, queue))


@pytest.fixture
def two_models(settings, tmp_path):
    models = {"small": ModelSpec(source=str(tmp_path / "s"), size_gb=4),
              "large": ModelSpec(source=str(tmp_path / "l"), size_gb=16),
              "huge": ModelSpec(source=str(tmp_path / "h"), size_gb=70)}
    return settings.model_copy(update={"models": models})


def _worker(settings, name: str, vram_gib: float, resident: str | None = None,
            state: WorkerState = WorkerState.IDLE) -> None:
    with session_scope(settings.database_url) as session:
        store.record_heartbeat(session, name, state=state, resident_model=resident,
                               hardware={"gpus": [{"name": "test GPU", "memory_gib": vram_gib}],
                                         "memory_gib": 64})


def _queue(settings, model: str, lines: int = 2) -> int:
    data = "\n".join(json.dumps(batch_line(f"c{i}")) for i in range(lines)).encode()
    return submit_batch(settings, data, model=model).task_id


def _task(settings, task_id: int) -> Task:
    with session_scope(settings.database_url) as session:
        return store.get_task(session, task_id)


def test_each_worker_gets_its_resident_models_task_on_its_own_queue(two_models):
    _worker(two_models, "a", 24, resident="small")
    _worker(two_models, "b", 24, resident="large")
    small, large = _queue(two_models, "small"), _queue(two_models, "large")
    broker = RecordingBroker()
    assert sorted(dispatch_queued(two_models, broker)) == sorted([small, large])
    queues = {args[0]: queue for _name, args, queue in broker.sent}
    assert queues == {small: worker_queue("a"), large: worker_queue("b")}
    assert _task(two_models, small).planned_worker == "a"


def test_a_worker_gets_one_task_at_a_time(two_models):
    _worker(two_models, "a", 24, resident="small")
    first, second = _queue(two_models, "small"), _queue(two_models, "small")
    broker = RecordingBroker()
    assert dispatch_queued(two_models, broker) == [first]
    assert dispatch_queued(two_models, broker) == []  # the first has not started yet
    with session_scope(two_models.database_url) as session:
        store.claim_task(session, first, "a")
    assert dispatch_queued(two_models, broker) == [second]


def test_a_model_no_worker_can_hold_waits_with_the_reason(two_models):
    _worker(two_models, "a", 24)
    with session_scope(two_models.database_url) as session:  # queued before the worker came
        task = store.create_task(session, _task_create("huge")).id
    dispatch_queued(two_models, RecordingBroker())
    waiting = _task(two_models, task)
    assert waiting.status is TaskStatus.QUEUED
    assert "huge" in waiting.plan_note and "24" in waiting.plan_note, waiting.plan_note


def _task_create(model: str):
    from scheduler.models import TaskCreate

    return TaskCreate(kind="batch", model=model, input={})


def test_submitting_for_a_model_larger_than_every_worker_is_refused(two_models):
    _worker(two_models, "a", 24)
    with pytest.raises(InvalidSubmissionError) as err:
        _queue(two_models, "huge")
    assert err.value.field == "model"
    assert "huge" in err.value.message and "needs 78.2 GiB" in err.value.message
    assert "24.0 GiB" in err.value.message


def test_a_lost_workers_planned_task_goes_to_another_worker(two_models):
    _worker(two_models, "a", 24, resident="small")
    task_id = _queue(two_models, "small")
    broker = RecordingBroker()
    assert dispatch_queued(two_models, broker) == [task_id]
    _worker(two_models, "b", 24)
    with session_scope(two_models.database_url) as session:  # a stops heartbeating
        worker = session.get(Worker, "a")
        worker.heartbeat_at = utcnow() - timedelta(minutes=10)
    assert reap_lost_workers(two_models) == [task_id]
    assert "re-planned" in _task(two_models, task_id).plan_note
    assert dispatch_queued(two_models, broker) == [task_id]
    assert broker.sent[-1][2] == worker_queue("b")


def test_a_suspended_worker_gets_nothing_new(two_models):
    _worker(two_models, "a", 24, resident="small", state=WorkerState.SUSPENDED)
    _worker(two_models, "b", 24)
    task_id = _queue(two_models, "small")
    broker = RecordingBroker()
    assert dispatch_queued(two_models, broker) == [task_id]
    assert broker.sent[0][2] == worker_queue("b")


def test_before_any_worker_announces_itself_work_goes_to_the_shared_queue(two_models):
    task_id = _queue(two_models, "small")
    broker = RecordingBroker()
    assert dispatch_queued(two_models, broker) == [task_id]
    assert broker.sent[0][2] == QUEUE


def test_the_next_model_is_hinted_for_prefetch(two_models):
    _worker(two_models, "a", 24, resident="small")
    _queue(two_models, "small")
    _queue(two_models, "large")
    dispatch_queued(two_models, RecordingBroker())
    with session_scope(two_models.database_url) as session:
        assert session.get(Worker, "a").prefetch_model == "large"


def test_a_worker_holding_a_model_no_longer_configured_still_gets_work(two_models):
    _worker(two_models, "a", 24, resident="retired-model")
    task_id = _queue(two_models, "small")
    broker = RecordingBroker()
    assert dispatch_queued(two_models, broker) == [task_id]
    assert broker.sent[0][2] == worker_queue("a")


def test_work_that_cannot_be_ready_by_morning_says_so_early(two_models):
    from datetime import UTC, datetime

    from scheduler.settings import WindowSpec

    now = datetime.now(UTC)
    soon = (now + timedelta(minutes=10)).strftime("%H:%M")
    night = two_models.model_copy(update={"always_open": False, "ready_by": soon, "windows": [
        WindowSpec(start=(now - timedelta(hours=1)).strftime("%H:%M"), end=(now + timedelta(hours=3)).strftime("%H:%M"),
                   tz="UTC")]})
    from scheduler.night import open_scheduled

    open_scheduled(night)
    _worker(night, "a", 24, resident="small")
    big = _queue(night, "small", lines=400)  # 400 lines x 2 s each, 13 min: past the deadline
    _queue(night, "small")
    dispatch_queued(night, RecordingBroker())
    notes = {t: _task(night, t).plan_note for t in (big, big + 1)}
    assert any(note and "after its deadline" in note for note in notes.values()), notes


def test_owner_weights_must_be_positive(settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="owner_weights"):
        settings.model_validate({**settings.model_dump(), "owner_weights": {"alice": 0}})


def test_a_pass_that_changes_nothing_writes_no_note_or_hint(two_models, monkeypatch):
    _worker(two_models, "a", 24, resident="small")
    _queue(two_models, "small")
    _queue(two_models, "large")
    with session_scope(two_models.database_url) as session:  # queued before the worker could hold it
        store.create_task(session, _task_create("huge"))
    broker = RecordingBroker()
    dispatch_queued(two_models, broker)
    written = []
    monkeypatch.setattr(store, "set_plan_notes", lambda session, notes: written.append(notes))
    dispatch_queued(two_models, broker)
    assert written == [{}]

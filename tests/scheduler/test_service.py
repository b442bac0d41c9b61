"""The scheduler process's night: window jobs stored in the database, opening and closing
windows, and the dispatch gate."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from scheduler import service, session_scope, store
from scheduler.celery_app import make_celery
from scheduler.dispatch import dispatch_queued
from scheduler.models import TaskStatus
from scheduler.night import close_due, is_window_open, open_now, open_scheduled
from scheduler.settings import Settings, WindowSpec
from scheduler.submit import submit_batch
from scheduler.window import build_schedule
from tests.conftest import batch_line


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


@pytest.fixture
def night(settings) -> Settings:
    """Settings whose one window (UTC) is open now: opened an hour ago, closes in two."""
    now = datetime.now(UTC)
    return settings.model_copy(update={"always_open": False, "windows": [
        WindowSpec(start=_hhmm(now - timedelta(hours=1)), end=_hhmm(now + timedelta(hours=2)), tz="UTC")]})


@pytest.fixture
def day(settings) -> Settings:
    """Settings whose one window (UTC) is closed now: it opens in two hours."""
    now = datetime.now(UTC)
    return settings.model_copy(update={"always_open": False, "windows": [
        WindowSpec(start=_hhmm(now + timedelta(hours=2)), end=_hhmm(now + timedelta(hours=3)), tz="UTC")]})


def _stored_jobs(settings: Settings) -> dict:
    from scheduler.db import get_engine

    jobstore = SQLAlchemyJobStore(engine=get_engine(settings.database_url))
    table = jobstore.jobs_t
    with jobstore.engine.connect() as conn:
        rows = conn.execute(table.select()).all()
    return {row.id: datetime.fromtimestamp(row.next_run_time, UTC) for row in rows}


def _queue(settings: Settings, n: int = 2) -> int:
    data = "\n".join(json.dumps(batch_line(f"c{i}")) for i in range(n)).encode()
    return submit_batch(settings, data, model="tiny").task_id


def test_window_jobs_live_in_the_database_and_survive_a_restart(day):
    sched = service.start_scheduler(day)
    sched.shutdown(wait=False)
    stored = _stored_jobs(day)
    assert set(stored) == {"open:*:0", "close:*:0"}
    expected = build_schedule(day.windows).next_open(datetime.now(UTC))
    assert stored["open:*:0"] == expected

    again = service.build_scheduler(day)
    again.start(paused=True)
    try:
        assert service.sync_window_jobs(again, day) == []  # unchanged: kept as stored
        assert again.get_job("open:*:0").next_run_time == expected
    finally:
        again.shutdown(wait=False)
    assert _stored_jobs(day) == stored


def test_changed_windows_replace_the_stored_jobs(day):
    service.start_scheduler(day).shutdown(wait=False)
    changed = day.model_copy(update={"windows": [WindowSpec(start="01:00", end="02:00", tz="UTC"),
                                                 WindowSpec(start="03:00", end="04:00", tz="UTC")]})
    sched = service.start_scheduler(changed)
    sched.shutdown(wait=False)
    stored = _stored_jobs(changed)
    assert set(stored) == {"open:*:0", "close:*:0", "open:*:1", "close:*:1"}
    assert stored["open:*:1"].hour == 3 and stored["open:*:1"].minute == 0


def test_a_scheduler_started_mid_window_opens_it(night):
    assert not is_window_open(night)
    sched = service.start_scheduler(night)
    sched.shutdown(wait=False)
    assert is_window_open(night)
    with session_scope(night.database_url) as s:
        (window,) = store.open_windows(s, datetime.now(UTC))
    assert window.reason == "schedule" and window.closes_at > datetime.now(UTC) + timedelta(minutes=100)


def test_dispatch_waits_for_a_window(day):
    task_id = _queue(day)
    app = make_celery(day)
    assert dispatch_queued(day, app) == []
    assert open_scheduled(day) == []  # the schedule says closed
    open_now(day, timedelta(minutes=5))
    assert dispatch_queued(day, app) == [task_id]
    with session_scope(day.database_url) as s:
        assert store.get_task(s, task_id).status == TaskStatus.DISPATCHED


def test_run_now_without_duration_lasts_until_the_next_scheduled_close(day):
    window = open_now(day)
    expected = build_schedule(day.windows).next_close(datetime.now(UTC))
    assert window.closes_at == expected and window.reason == "run-now"


def test_a_due_window_closes_and_the_gate_shuts(day):
    now = datetime.now(UTC)
    open_now(day, timedelta(minutes=1), now=now)
    assert is_window_open(day, now=now + timedelta(seconds=59))
    assert not is_window_open(day, now=now + timedelta(seconds=61))  # even before the close job
    assert close_due(day, now + timedelta(minutes=2))
    assert not is_window_open(day, now=now)


def test_a_worker_with_its_own_windows_has_its_own_scope(day):
    own = day.model_copy(update={"worker_windows": {"gpu1": [WindowSpec(start="00:00", end="23:59", tz="UTC")]}})
    open_now(own, timedelta(minutes=5), scope="gpu1")
    assert is_window_open(own, "gpu1") and not is_window_open(own, "gpu2")

from sqlmodel import select

from scheduler import session_scope, store
from scheduler.models import Attempt, AttemptStatus, TaskCreate, TaskStatus, Worker, WorkerState
from workers import Presence


def test_a_restarted_worker_gives_back_what_its_earlier_run_left_running(settings):
    settings.worker_name = "w1"
    with session_scope(settings.database_url) as s:
        task = store.create_task(s, TaskCreate(kind="batch", model="tiny"))
        store.claim_task(s, task.id, "w1")
    presence = Presence(settings)
    try:
        assert presence.start() == [task.id]
    finally:
        presence.stop()
    with session_scope(settings.database_url) as s:
        assert store.get_task(s, task.id).status == TaskStatus.QUEUED
        assert s.exec(select(Attempt)).one().status == AttemptStatus.LOST
        assert s.get(Worker, "w1").state == WorkerState.STOPPED


def test_presence_reports_state_and_hardware(settings):
    settings.worker_name = "w2"
    presence = Presence(settings)
    presence.start()
    presence.set(state=WorkerState.WORKING, resident_model="tiny", current_task_id=7)
    with session_scope(settings.database_url) as s:
        row = s.get(Worker, "w2")
        assert (row.state, row.resident_model, row.current_task_id) == (WorkerState.WORKING, "tiny", 7)
        assert row.hardware["cpus"] >= 1
    presence.stop()

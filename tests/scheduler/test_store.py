from datetime import timedelta

from jobs import OutputLine
from scheduler import session_scope, store
from scheduler.models import Attempt, AttemptStatus, BatchLine, LineStatus, TaskCreate, TaskStatus, Worker, utcnow
from sqlmodel import select


def _task(settings, lines: int = 3, max_attempts: int = 3) -> int:
    with session_scope(settings.database_url) as s:
        task = store.create_task(s, TaskCreate(kind="batch", model="tiny", max_attempts=max_attempts))
        store.add_batch_lines(s, task, [(i, f"c{i}", "{}") for i in range(1, lines + 1)], [])
        return task.id


def _out(no: int, text: str = "x") -> OutputLine:
    return OutputLine(no, f"c{no}", True, {"custom_id": f"c{no}", "text": text}, 1, 2)


def test_a_task_is_claimed_by_one_worker_only(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        first = store.claim_task(s, task_id, "w1")
    with session_scope(settings.database_url) as s:
        second = store.claim_task(s, task_id, "w2")
        task = store.get_task(s, task_id)
    assert first is not None and first.number == 1
    assert second is None
    assert task.status == TaskStatus.RUNNING and task.worker_name == "w1" and task.attempts == 1


def test_dispatch_mark_is_taken_once(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        assert store.mark_dispatched(s, task_id)
        assert not store.mark_dispatched(s, task_id)
        store.mark_undispatched(s, task_id, "broker down")
        assert store.get_task(s, task_id).status == TaskStatus.QUEUED


def test_recording_a_line_twice_keeps_the_first_result(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        assert store.record_lines(s, task_id, [_out(1, "first"), _out(2)]) == 2
    with session_scope(settings.database_url) as s:
        assert store.record_lines(s, task_id, [_out(1, "again"), _out(3)]) == 1
        lines = s.exec(select(BatchLine).where(BatchLine.task_id == task_id)
                       .order_by(BatchLine.line_no)).all()
        task = store.get_task(s, task_id)
    assert '"first"' in lines[0].output
    assert [l.status for l in lines] == [LineStatus.SUCCEEDED] * 3
    assert task.progress_done == 3 and task.progress_total == 3


def test_pending_lines_leave_out_finished_ones(settings):
    task_id = _task(settings, lines=4)
    with session_scope(settings.database_url) as s:
        store.record_lines(s, task_id, [_out(2)])
        assert [l.line_no for l in store.pending_lines(s, task_id)] == [1, 3, 4]


def test_a_lost_worker_has_its_task_requeued_and_attempt_marked_lost(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        store.record_heartbeat(s, "w1")
        store.claim_task(s, task_id, "w1")
    later = utcnow() + timedelta(seconds=120)
    with session_scope(settings.database_url) as s:
        assert store.reap_lost_workers(s, later, lost_after_s=60) == [task_id]
        task = store.get_task(s, task_id)
        attempt = s.exec(select(Attempt).where(Attempt.task_id == task_id)).one()
        worker = s.get(Worker, "w1")
    assert task.status == TaskStatus.QUEUED and task.worker_name is None
    assert attempt.status == AttemptStatus.LOST and "w1" in attempt.error
    assert worker.state == "lost"


def test_a_live_worker_is_not_reaped(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        store.record_heartbeat(s, "w1")
        store.claim_task(s, task_id, "w1")
    with session_scope(settings.database_url) as s:
        assert store.reap_lost_workers(s, utcnow(), lost_after_s=60) == []


def test_transient_failure_requeues_until_attempts_run_out(settings):
    task_id = _task(settings, max_attempts=2)
    statuses = []
    for _ in range(2):
        with session_scope(settings.database_url) as s:
            attempt = store.claim_task(s, task_id, "w1")
            statuses.append(store.fail_task(s, task_id, attempt.id, "engine crashed", retry=True))
    assert statuses == [TaskStatus.QUEUED, TaskStatus.FAILED]
    with session_scope(settings.database_url) as s:
        task = store.get_task(s, task_id)
    assert "gave up after 2 attempts" in task.error and task.finished_at is not None


def test_permanent_failure_is_not_retried(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        attempt = store.claim_task(s, task_id, "w1")
        assert store.fail_task(s, task_id, attempt.id, "bad input", retry=False) == TaskStatus.FAILED


def test_finished_task_cannot_be_claimed_again(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        attempt = store.claim_task(s, task_id, "w1")
        store.finish_task(s, task_id, attempt.id, tokens_in=5, tokens_out=7)
    with session_scope(settings.database_url) as s:
        assert store.claim_task(s, task_id, "w2") is None
        done = s.exec(select(Attempt)).one()
    assert done.status == AttemptStatus.SUCCEEDED and done.tokens_out == 7


def test_timestamps_come_back_timezone_aware(settings):
    task_id = _task(settings)
    with session_scope(settings.database_url) as s:
        assert store.get_task(s, task_id).created_at.utcoffset() == timedelta(0)

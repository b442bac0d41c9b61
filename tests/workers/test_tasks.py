"""The batch task body on a real database, with a scripted engine in place of vLLM."""

import json
import pytest

from jobs import InvalidInputError
from scheduler import session_scope, store
from scheduler.models import TaskStatus
from scheduler.submit import submit_batch
from tests.conftest import batch_line
from tests.scripted import ScriptedHolder
from workers import Presence, WorkerContext, run_batch_task


@pytest.fixture
def ctx(settings):
    return WorkerContext(settings=settings, holder=ScriptedHolder(), presence=Presence(settings))


def _submit(settings, n=3) -> int:
    data = "\n".join(json.dumps(batch_line(f"c{i}", f"hi {i}")) for i in range(n)).encode()
    return submit_batch(settings, data, model="tiny").task_id


def _task(settings, task_id):
    with session_scope(settings.database_url) as s:
        return store.get_task(s, task_id)


def test_task_body_runs_all_lines_and_finishes(ctx, settings):
    task_id = _submit(settings)
    result = run_batch_task(ctx, task_id)
    task = _task(settings, task_id)
    assert result["succeeded"] == 3 and task.status == TaskStatus.SUCCEEDED
    assert task.progress_done == 3 and ctx.holder.engine.calls == [["c0", "c1", "c2"]]


def test_redelivered_message_for_a_finished_task_is_skipped(ctx, settings):
    task_id = _submit(settings)
    run_batch_task(ctx, task_id)
    assert run_batch_task(ctx, task_id) == {"task_id": task_id, "skipped": True}
    assert len(ctx.holder.engine.calls) == 1


def test_rerun_after_a_crash_sends_only_the_unfinished_lines(ctx, settings):
    task_id = _submit(settings, n=4)
    ctx.holder.engine.fail_after = 2
    ctx.settings.result_flush_s = 0
    assert run_batch_task(ctx, task_id)["status"] == TaskStatus.QUEUED
    assert ctx.holder.released == 1  # a failed engine is not reused
    ctx.holder.engine.fail_after = None
    run_batch_task(ctx, task_id)
    assert ctx.holder.engine.calls[-1] == ["c2", "c3"]
    assert _task(settings, task_id).status == TaskStatus.SUCCEEDED


def test_invalid_input_fails_at_once_without_retry(ctx, settings):
    task_id = _submit(settings)
    ctx.holder.unknown = True
    assert run_batch_task(ctx, task_id)["status"] == TaskStatus.FAILED
    task = _task(settings, task_id)
    assert task.attempts == 1 and "no model 'tiny'" in task.error

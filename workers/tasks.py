"""Celery task bodies. Each receives a task id only and reads the rest from the database."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from jobs import BatchRequest, EngineError, InvalidInputError, OutputLine, run_batch
from scheduler import Settings, session_scope, store
from scheduler.models import TaskStatus, WorkerState
from workers.engine import EngineHolder
from workers.presence import Presence

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What task bodies share within one worker process: made once at start."""

    settings: Settings
    holder: EngineHolder
    presence: Presence


def _save_lines(settings: Settings, task_id: int, lines: list[OutputLine]) -> None:
    with session_scope(settings.database_url) as session:
        store.record_lines(session, task_id, lines)


def _load_batch(settings: Settings, task_id: int, worker: str) -> tuple[int, str, list[BatchRequest]] | None:
    with session_scope(settings.database_url) as session:
        attempt = store.claim_task(session, task_id, worker)
        if attempt is None:
            return None
        model = store.get_task(session, task_id).model
        requests = [
            BatchRequest(line.line_no, line.custom_id, **json.loads(line.request))
            for line in store.pending_lines(session, task_id)
        ]
    return attempt.id, model, requests


def run_batch_task(ctx: WorkerContext, task_id: int) -> dict[str, Any]:
    settings = ctx.settings
    loaded = _load_batch(settings, task_id, ctx.presence.name)
    if loaded is None:  # redelivered after another worker took or finished it
        log.info("task %s is not claimable (finished or taken); skipping", task_id)
        return {"task_id": task_id, "skipped": True}
    attempt_id, model, requests = loaded
    log.info("task %s: %d pending requests for %s", task_id, len(requests), model)
    ctx.presence.set(state=WorkerState.LOADING, current_task_id=task_id)
    try:
        engine = ctx.holder.engine_for(model)
        ctx.presence.set(state=WorkerState.WORKING, resident_model=model)
        summary = run_batch(engine, requests, batch_id=f"task-{task_id}", model=model,
                            save=partial(_save_lines, settings, task_id),
                            flush_s=settings.result_flush_s)
        with session_scope(settings.database_url) as session:
            store.finish_task(session, task_id, attempt_id, summary.prompt_tokens,
                              summary.completion_tokens)
        return {"task_id": task_id, "succeeded": summary.succeeded, "failed": summary.failed}
    except InvalidInputError as exc:
        status = _record_failure(settings, task_id, attempt_id, str(exc), retry=False)
    except Exception as exc:  # top of the task body: anything else is recorded and retried
        log.exception("task %s failed", task_id)
        if isinstance(exc, EngineError):
            ctx.holder.release()  # a failed engine is not reused
        status = _record_failure(settings, task_id, attempt_id, f"{type(exc).__name__}: {exc}", retry=True)
    finally:
        ctx.presence.set(state=WorkerState.IDLE, current_task_id=None,
                         resident_model=ctx.holder.resident_model)
    return {"task_id": task_id, "status": status}


def _record_failure(settings: Settings, task_id: int, attempt_id: int, error: str, *, retry: bool) -> TaskStatus:
    with session_scope(settings.database_url) as session:
        return store.fail_task(session, task_id, attempt_id, error, retry=retry)

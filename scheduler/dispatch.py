"""Moving work from the database to the broker, and taking it back from dead workers.

The scheduler process runs both on a timer (see ``scheduler.service``); ``nightshift run-now``
runs a dispatch pass at once. Several dispatchers may run side by side: each task is marked
dispatched by a conditional update before its message is sent.
"""

from __future__ import annotations

import logging

from celery import Celery

from scheduler import store
from scheduler.celery_app import TASK_RUN_BATCH, TASK_RUN_PATCH
from scheduler.db import session_scope
from scheduler.models import utcnow
from scheduler.night import is_window_open
from scheduler.settings import Settings

log = logging.getLogger(__name__)

TASK_NAMES = {"batch": TASK_RUN_BATCH, "patch": TASK_RUN_PATCH}


def dispatch_queued(settings: Settings, app: Celery, limit: int = 100) -> list[int]:
    """Send every queued task (highest priority first) to the workers. Returns their ids.
    Nothing is sent while no night window is open: tasks wait in the database, not the broker."""
    if not is_window_open(settings):
        return []
    with session_scope(settings.database_url) as session:
        candidates = [(t.id, t.kind) for t in store.queued_tasks(session, limit)]
    sent: list[int] = []
    for task_id, kind in candidates:
        with session_scope(settings.database_url) as session:
            if not store.mark_dispatched(session, task_id):
                continue
        try:
            app.send_task(TASK_NAMES[kind], args=[task_id])
        except Exception as exc:  # any broker failure: keep the task queued for the next pass
            log.exception("could not send task %s to the broker", task_id)
            with session_scope(settings.database_url) as session:
                store.mark_undispatched(session, task_id, f"broker refused the task: {exc}")
            continue
        sent.append(task_id)
    if sent:
        log.info("dispatched tasks %s", sent)
    return sent


def reap_lost_workers(settings: Settings) -> list[int]:
    """Requeue the tasks of workers that stopped heartbeating. Returns the task ids."""
    with session_scope(settings.database_url) as session:
        released = store.reap_lost_workers(session, utcnow(), settings.worker_lost_after_s)
    if released:
        log.warning("requeued tasks %s from lost workers", released)
    return released

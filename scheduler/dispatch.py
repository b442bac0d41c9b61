"""Moving work from the database to the broker, and taking it back from dead workers.

The scheduler process runs both on a timer (see ``scheduler.service``); ``nightshift run-now``
runs a dispatch pass at once. Each pass plans the night (``scheduler.planning``, around the pure
``scheduler.planner``) and sends each free worker its next task on its own queue. Several
dispatchers may run side by side: each task is marked dispatched by a conditional update before
its message is sent.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import Celery

from scheduler import planning, store
from scheduler.celery_app import QUEUE, TASK_RUN_BATCH, TASK_RUN_PATCH, worker_queue
from scheduler.db import session_scope
from scheduler.models import utcnow
from scheduler.night import is_window_open
from scheduler.planner import Plan, PlanInputError
from scheduler.settings import Settings

log = logging.getLogger(__name__)

TASK_NAMES = {"batch": TASK_RUN_BATCH, "patch": TASK_RUN_PATCH}


def dispatch_queued(settings: Settings, app: Celery, limit: int = 1000) -> list[int]:
    """Send queued work to the workers. Returns the ids sent.

    Nothing is sent while no night window is open: tasks wait in the database, not the broker.
    With live workers, the planner decides (``scheduler.planning``): each free worker gets the
    first task of its plan on its own queue, one at a time, and the plan is made again on every
    pass, so a worker that disappears simply has no more work planned for it. Before any worker
    has announced itself, queued work goes to the shared queue in priority order."""
    if not is_window_open(settings):
        return []
    now = utcnow()
    with session_scope(settings.database_url) as session:
        queued = store.queued_tasks(session, limit)
        if not queued:
            return []
        kinds = {t.id: t.kind for t in queued}
        inputs = planning.gather(session, settings, queued, now)
        plan = _plan(inputs, now, settings) if inputs.workers else None
        if plan is None:  # no worker has announced itself yet (or the plan failed): shared queue
            order = [(t.id, None) for t in queued]
        else:
            current = {t.id: t.plan_note for t in queued}  # written only when they change
            store.set_plan_notes(session, {task_id: note for task_id, note in planning.notes(plan, queued).items()
                                           if note != current[task_id]})
            store.set_prefetch_hints(session, {w.name: _hint(plan, w.name) for w in inputs.workers})
            order = [(ids[0], name) for name in inputs.free
                     if (ids := plan.for_worker(name).task_ids)]
    sent = [task_id for task_id, worker in order if _send(settings, app, task_id, kinds[task_id], worker)]
    if sent:
        log.info("dispatched tasks %s", sent)
    return sent


def _plan(inputs: planning.NightInputs, now: datetime, settings: Settings) -> Plan | None:
    try:
        return planning.make_plan(inputs, now, settings.owner_weights)
    except PlanInputError:  # a row the planner cannot take must not stop the night: plain order
        log.exception("planning failed; dispatching in priority order to the shared queue")
        return None


def _hint(plan: Plan, worker: str) -> str | None:
    return next((h.model for h in plan.prefetch if h.worker == worker), None)


def _send(settings: Settings, app: Celery, task_id: int, kind: str, worker: str | None) -> bool:
    with session_scope(settings.database_url) as session:
        if not store.mark_dispatched(session, task_id, worker):
            return False
    try:
        app.send_task(TASK_NAMES[kind], args=[task_id], queue=worker_queue(worker) if worker else QUEUE)
    except Exception as exc:  # any broker failure: keep the task queued for the next pass
        log.exception("could not send task %s to the broker", task_id)
        with session_scope(settings.database_url) as session:
            store.mark_undispatched(session, task_id, f"broker refused the task: {exc}")
        return False
    return True


def reap_lost_workers(settings: Settings) -> list[int]:
    """Requeue the tasks of workers that stopped heartbeating. Returns the task ids."""
    with session_scope(settings.database_url) as session:
        released = store.reap_lost_workers(session, utcnow(), settings.worker_lost_after_s)
    if released:
        log.warning("requeued tasks %s from lost workers", released)
    return released

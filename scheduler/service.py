"""The scheduler process: opens and closes night windows, dispatches queued work while one is
open, and takes work back from lost workers.

APScheduler runs in this process only. The window jobs live in the same database as
everything else (``SQLAlchemyJobStore``, table ``apscheduler_jobs``), so a restarted
scheduler keeps its schedule: an opening missed while it was down still fires (within the
misfire grace time) and a window that should be open now is opened at start. The interval
jobs (dispatch, reaping, closing due windows) are per-process and kept in memory.
"""

from __future__ import annotations

import logging
import signal
import threading

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.celery_app import make_celery
from scheduler.db import get_engine
from scheduler.dispatch import dispatch_queued, reap_lost_workers
from scheduler.night import close_due, open_scheduled
from scheduler.settings import Settings, get_settings
from scheduler.window import scopes

log = logging.getLogger(__name__)

WINDOW_STORE = "default"
MISFIRE_GRACE_S = 6 * 3600  # an opening missed while the scheduler was down still counts
_current: Settings | None = None  # the running scheduler's settings, for the stored jobs


def _settings() -> Settings:
    return _current or get_settings()


def window_opened() -> None:
    """Stored job (referenced by name): a window's cron fired."""
    settings = _settings()
    if open_scheduled(settings):
        dispatch_queued(settings, make_celery(settings))


def window_closing() -> None:
    """Stored job (referenced by name): a window's end time came."""
    close_due(_settings())


def _window_jobs(settings: Settings) -> dict[str, tuple[object, object]]:
    jobs = {}
    for scope, schedule in scopes(settings).items():
        for i, window in enumerate(schedule.windows):
            jobs[f"open:{scope}:{i}"] = (window_opened, window.opens)
            jobs[f"close:{scope}:{i}"] = (window_closing, window.closes)
    return jobs


def sync_window_jobs(sched: BackgroundScheduler, settings: Settings) -> list[str]:
    """Make the stored window jobs match the settings: keep unchanged ones (and their next run
    time), replace changed ones, drop those of windows no longer configured. Returns the ids
    of jobs added or replaced."""
    wanted = {} if settings.always_open else _window_jobs(settings)
    for job in sched.get_jobs(jobstore=WINDOW_STORE):
        if job.id not in wanted:
            job.remove()
    changed = []
    for job_id, (func, trigger) in wanted.items():
        job = sched.get_job(job_id, jobstore=WINDOW_STORE)
        if job is not None and repr(job.trigger) == repr(trigger):
            continue
        sched.add_job(func, trigger, id=job_id, jobstore=WINDOW_STORE, replace_existing=True,
                      misfire_grace_time=MISFIRE_GRACE_S, coalesce=True, max_instances=1)
        changed.append(job_id)
    return changed


def build_scheduler(settings: Settings) -> BackgroundScheduler:
    global _current
    _current = settings
    engine = get_engine(settings.database_url)  # create the tables before the first pass
    app = make_celery(settings)
    sched = BackgroundScheduler(timezone="UTC", jobstores={
        WINDOW_STORE: SQLAlchemyJobStore(engine=engine), "memory": MemoryJobStore()})
    sched.add_job(dispatch_queued, "interval", args=[settings, app], id="dispatch", jobstore="memory",
                  seconds=settings.dispatch_interval_s, max_instances=1, coalesce=True)
    sched.add_job(reap_lost_workers, "interval", args=[settings], id="reap", jobstore="memory",
                  seconds=settings.worker_heartbeat_s, max_instances=1, coalesce=True)
    sched.add_job(close_due, "interval", args=[settings], id="close-due", jobstore="memory",
                  seconds=settings.dispatch_interval_s, max_instances=1, coalesce=True)
    return sched


def start_scheduler(settings: Settings) -> BackgroundScheduler:
    """Build and start the scheduler: stored jobs reconciled, a window due now opened."""
    sched = build_scheduler(settings)
    sched.start(paused=True)
    changed = sync_window_jobs(sched, settings)
    if not settings.always_open:
        open_scheduled(settings)
    sched.resume()
    log.info("scheduler started: window jobs %s (changed %s), dispatch every %ss",
             [j.id for j in sched.get_jobs(jobstore=WINDOW_STORE)], changed, settings.dispatch_interval_s)
    return sched


def run_scheduler(settings: Settings) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sched = start_scheduler(settings)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown(wait=False)

"""The scheduler process: dispatches queued work and takes work back from lost workers.

APScheduler runs both on intervals in this process only. (Night windows and the planner
arrive with issue 6; until then a queued task is dispatched on the next pass.)
"""

from __future__ import annotations

import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from scheduler.celery_app import make_celery
from scheduler.db import get_engine
from scheduler.dispatch import dispatch_queued, reap_lost_workers
from scheduler.settings import Settings

log = logging.getLogger(__name__)


def build_scheduler(settings: Settings) -> BlockingScheduler:
    get_engine(settings.database_url)  # create the tables before the first pass
    app = make_celery(settings)
    sched = BlockingScheduler(timezone="UTC")
    sched.add_job(dispatch_queued, "interval", args=[settings, app], id="dispatch",
                  seconds=settings.dispatch_interval_s, max_instances=1, coalesce=True)
    sched.add_job(reap_lost_workers, "interval", args=[settings], id="reap",
                  seconds=settings.worker_heartbeat_s, max_instances=1, coalesce=True)
    return sched


def run_scheduler(settings: Settings) -> None:
    sched = build_scheduler(settings)
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    log.info("scheduler started: dispatch every %ss, reap every %ss",
             settings.dispatch_interval_s, settings.worker_heartbeat_s)
    try:
        sched.start()
    except (KeyboardInterrupt, SystemExit):
        pass

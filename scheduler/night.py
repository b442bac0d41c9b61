"""The night window's state in the database: opening, closing and asking whether it is open.

The scheduler process opens windows on their cron schedule and closes them when due
(``scheduler.service``); ``run-now`` opens one at once. Dispatch sends work only while a
window is open, and a worker drains its task to a checkpoint once its window has closed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from scheduler import store
from scheduler.db import session_scope
from scheduler.models import NightWindowPublic, utcnow
from scheduler.settings import Settings
from scheduler.window import DEFAULT_SCOPE, scope_of, scopes

log = logging.getLogger(__name__)


def is_window_open(settings: Settings, worker_name: str | None = None,
                   now: datetime | None = None) -> bool:
    """Is a window open for ``worker_name`` (for any worker when None) at ``now``?"""
    if settings.always_open:
        return True
    now = now or utcnow()
    with session_scope(settings.database_url) as session:
        windows = store.open_windows(session, now)
    if worker_name is None:
        return bool(windows)
    scope = scope_of(settings, worker_name)
    return any(w.scope == scope for w in windows)


def open_now(settings: Settings, duration: timedelta | None = None, scope: str = DEFAULT_SCOPE,
             now: datetime | None = None) -> NightWindowPublic:
    """Open ``scope``'s window at once, until ``now + duration`` or else its next scheduled
    close (``run-now``)."""
    now = now or utcnow()
    closes_at = now + duration if duration else scopes(settings)[scope].next_close(now)
    with session_scope(settings.database_url) as session:
        window = store.open_window(session, scope, now, closes_at, "run-now")
        log.info("window %s open until %s (run-now)", scope, closes_at.isoformat())
        return NightWindowPublic.model_validate(window)


def open_scheduled(settings: Settings, now: datetime | None = None) -> list[str]:
    """Open every scope whose schedule says it is open at ``now`` (a window's cron fired, or
    the scheduler starts in the middle of the night). Returns the scopes opened."""
    now = now or utcnow()
    opened = []
    for scope, schedule in scopes(settings).items():
        if not schedule.is_open(now):
            continue
        with session_scope(settings.database_url) as session:
            store.open_window(session, scope, now, schedule.next_close(now), "schedule")
        opened.append(scope)
    if opened:
        log.info("night windows open: %s", opened)
    return opened


def close_due(settings: Settings, now: datetime | None = None) -> list[int]:
    with session_scope(settings.database_url) as session:
        closed = store.close_due_windows(session, now or utcnow())
    if closed:
        log.info("night windows closed: %s", closed)
    return closed


def window_states(settings: Settings, now: datetime | None = None) -> list[NightWindowPublic]:
    """Open windows now, for the status page; an 'always open' setting shows as one."""
    now = now or utcnow()
    with session_scope(settings.database_url) as session:
        return [NightWindowPublic.model_validate(w) for w in store.open_windows(session, now)]


def window_summary(settings: Settings, worker_name: str | None = None,
                   now: datetime | None = None) -> dict[str, object]:
    """The window as people read it: open or not, until or from when, in the window's zone."""
    if settings.always_open:
        return {"open": True, "opens_at": None, "closes_at": None,
                "text": "always open (always_open = true): queued work starts at once"}
    now = now or utcnow()
    scope = scope_of(settings, worker_name) if worker_name else DEFAULT_SCOPE
    schedule = scopes(settings)[scope]
    zone = schedule.windows[0].zone
    open_ = [w for w in window_states(settings, now) if w.scope == scope]
    if open_:
        closes = max(w.closes_at for w in open_)
        why = "run-now" if any(w.reason == "run-now" for w in open_) else "schedule"
        return {"open": True, "opens_at": None, "closes_at": closes,
                "text": f"open until {_local(closes, zone)} ({why}); ready by {_local(schedule.ready_by(now), zone)}"}
    opens = schedule.next_open(now)
    return {"open": False, "opens_at": opens, "closes_at": schedule.next_close(opens),
            "text": f"closed: opens {_local(opens, zone)}, ready by {_local(schedule.ready_by(opens), zone)}; "
                    "`nightshift run-now` opens it now"}


def _local(at: datetime, zone) -> str:
    local = at.astimezone(zone)
    return f"{local:%a %H:%M} {local.tzname()}"

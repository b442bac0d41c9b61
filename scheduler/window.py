"""Night windows: when a worker may work, in its owner's time zone.

A window opens on a cron schedule (``start`` HH:MM on ``days``, or a full crontab line) and
closes at the first ``end`` HH:MM after it opened, so 22:00-07:00 crosses midnight and a
night over a DST change is an hour longer or shorter. Both moments come from APScheduler's
own ``CronTrigger`` with the zone attached, so DST gaps and folds are handled by the same code
that fires the scheduler's jobs. Times in are aware datetimes; times out are UTC (wall-clock
arithmetic in one zone would get a DST night's length wrong).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from scheduler.errors import WindowConfigError
from scheduler.settings import Settings, WindowSpec

DEFAULT_SCOPE = "*"
"""Scope of the windows every worker shares; a worker with its own windows uses its name."""

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_LOOKBACK = timedelta(hours=26)  # a window is at most a day long (plus a DST hour)


def _local_zone() -> tzinfo:
    return datetime.now().astimezone().tzinfo


def parse_zone(name: str, field: str = "tz") -> tzinfo:
    if not name:
        return _local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WindowConfigError(field, f"unknown time zone {name!r}; use an IANA name such as "
                                "Europe/Berlin or America/New_York (empty = this machine's zone)") from exc


def parse_hhmm(text: str, field: str) -> tuple[int, int]:
    match = _HHMM.match(text.strip())
    if not match:
        raise WindowConfigError(field, f"{text!r} is not a time of day; use HH:MM, e.g. 22:00")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Window:
    """One recurring window: an opening trigger and a closing time of day, in one zone."""

    opens: CronTrigger
    closes: CronTrigger
    zone: tzinfo
    label: str

    def next_open(self, at: datetime) -> datetime:
        """The first opening at or after ``at``."""
        fire = self.opens.get_next_fire_time(None, at)
        if fire is None:  # a cron that never fires again
            raise WindowConfigError(self.label, "this window never opens again")
        return fire.astimezone(UTC)

    def close_after(self, opened: datetime) -> datetime:
        """When a window opened at ``opened`` closes: the first end time strictly later."""
        return self.closes.get_next_fire_time(None, opened + timedelta(seconds=1)).astimezone(UTC)

    def span_at(self, at: datetime) -> tuple[datetime, datetime] | None:
        """(opened, closes) of the occurrence containing ``at``, or None if closed then."""
        found = None
        fire = self.opens.get_next_fire_time(None, at - _LOOKBACK)
        while fire is not None and fire <= at:
            found = fire
            fire = self.opens.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if found is None:
            return None
        closes = self.close_after(found)
        return (found.astimezone(UTC), closes) if at < closes else None


def build_window(spec: WindowSpec, field: str = "windows[0]") -> Window:
    """Check one window's settings and build its triggers. Raises ``WindowConfigError``
    naming the field for a bad cron line, time, zone or a window of zero length."""
    zone = parse_zone(spec.tz, f"{field}.tz")
    end_h, end_m = parse_hhmm(spec.end, f"{field}.end")
    closes = CronTrigger(hour=end_h, minute=end_m, timezone=zone)
    if spec.cron:
        try:
            opens = CronTrigger.from_crontab(spec.cron, timezone=zone)
        except ValueError as exc:
            raise WindowConfigError(f"{field}.cron", f"invalid cron expression {spec.cron!r}: {exc}. "
                                    "Use five fields: minute hour day month day_of_week, "
                                    "e.g. '0 22 * * mon-fri'") from exc
        label = f"{spec.cron} until {spec.end}"
    else:
        if spec.start is None:
            raise WindowConfigError(field, "give either start (HH:MM) or cron")
        start_h, start_m = parse_hhmm(spec.start, f"{field}.start")
        if (start_h, start_m) == (end_h, end_m):
            raise WindowConfigError(field, f"start and end are both {spec.end}: a window of zero "
                                    "length never opens; make end differ from start")
        try:
            opens = CronTrigger(day_of_week=spec.days, hour=start_h, minute=start_m, timezone=zone)
        except ValueError as exc:
            raise WindowConfigError(f"{field}.days", f"invalid days {spec.days!r}: {exc}. Use a cron "
                                    "day_of_week such as '*', 'mon-fri' or 'sat,sun'") from exc
        label = f"{spec.days} {spec.start}-{spec.end}"
    window = Window(opens, closes, zone, f"{label} {spec.tz or 'local'}")
    _check_length(window, field)
    return window


def _check_length(window: Window, field: str) -> None:
    first = window.opens.get_next_fire_time(None, datetime.now(window.zone))
    if first is None:
        raise WindowConfigError(f"{field}.cron", "this cron expression never fires")
    if window.closes.get_next_fire_time(None, first) == first:
        raise WindowConfigError(field, f"it opens at {first:%H:%M}, the same minute it ends: "
                                "a window of zero length never opens; make end differ")


class Schedule:
    """Every window of one scope (all workers, or one worker) plus the morning deadline."""

    def __init__(self, windows: Sequence[Window], ready_by: tuple[int, int], zone: tzinfo) -> None:
        self.windows = tuple(windows)
        self.ready_by_trigger = CronTrigger(hour=ready_by[0], minute=ready_by[1], timezone=zone)

    def is_open(self, at: datetime) -> bool:
        return any(w.span_at(at) for w in self.windows)

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself when open now, else the next opening of any window."""
        if self.is_open(at):
            return at
        return min(w.next_open(at) for w in self.windows)

    def next_close(self, at: datetime) -> datetime:
        """When the window open at ``at`` (or the next one to open) closes; overlapping or
        touching windows count as one."""
        start = self.next_open(at)
        closes = max(span[1] for w in self.windows if (span := w.span_at(start)))
        for _ in range(16):  # a later window may begin before this one ends
            later = [span[1] for w in self.windows if (span := w.span_at(closes)) and span[1] > closes]
            if not later:
                break
            closes = max(later)
        return closes

    def ready_by(self, at: datetime) -> datetime:
        """The next morning deadline after ``at``."""
        return self.ready_by_trigger.get_next_fire_time(None, at + timedelta(seconds=1)).astimezone(UTC)


def build_schedule(specs: Sequence[WindowSpec], ready_by: str = "07:00",
                   field: str = "windows") -> Schedule:
    if not specs:
        raise WindowConfigError(field, "no windows; give at least one, or set always_open = true")
    windows = [build_window(spec, f"{field}[{i}]") for i, spec in enumerate(specs)]
    return Schedule(windows, parse_hhmm(ready_by, "ready_by"), windows[0].zone)


def scopes(settings: Settings) -> dict[str, Schedule]:
    """The schedule of every scope: the shared one and each worker that has its own."""
    result = {DEFAULT_SCOPE: build_schedule(settings.windows, settings.ready_by)}
    for name, specs in settings.worker_windows.items():
        result[name] = build_schedule(specs, settings.ready_by, f"worker_windows.{name}")
    return result


def scope_of(settings: Settings, worker_name: str) -> str:
    return worker_name if worker_name in settings.worker_windows else DEFAULT_SCOPE


def parse_duration(text: str) -> timedelta:
    """'90m', '2h', '1h30m', '45s' or plain seconds; for ``run-now --for``."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise WindowConfigError("duration", f"{text!r} is not a duration; use e.g. 90m, 2h or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if total <= timedelta(0):
        raise WindowConfigError("duration", f"{text!r} is zero; give a positive duration such as 90m")
    return total

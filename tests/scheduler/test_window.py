"""Night windows on a controlled clock: APScheduler's own triggers, zones, DST, midnight."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import WindowConfigError
from scheduler.settings import WindowSpec
from scheduler.window import build_schedule, build_window, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args, tz=BERLIN) -> datetime:
    return datetime(*args, tzinfo=tz)


def test_default_window_crosses_midnight():
    sched = build_schedule([WindowSpec(tz="Europe/Berlin")])
    assert not sched.is_open(at(2026, 11, 22, 21, 59))
    assert sched.is_open(at(2026, 11, 22, 22, 0))
    assert sched.is_open(at(2026, 11, 23, 3, 0))
    assert sched.is_open(at(2026, 11, 23, 6, 59))
    assert not sched.is_open(at(2026, 11, 23, 7, 0))
    assert sched.next_close(at(2026, 11, 23, 1, 0)) == at(2026, 11, 23, 7, 0)
    assert sched.next_open(at(2026, 11, 23, 12, 0)) == at(2026, 11, 23, 22, 0)


def test_night_of_the_dst_change_is_ten_hours_long():
    # 2026-10-25: clocks in Berlin go back from 03:00 CEST to 02:00 CET.
    sched = build_schedule([WindowSpec(tz="Europe/Berlin")])
    opened = sched.next_open(at(2026, 10, 24, 12, 0))
    closes = sched.next_close(opened)
    assert opened == datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert closes == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 07:00 CET
    assert closes - opened == timedelta(hours=10)
    assert sched.is_open(datetime(2026, 10, 25, 5, 59, tzinfo=UTC))
    assert not sched.is_open(datetime(2026, 10, 25, 6, 0, tzinfo=UTC))


def test_spring_night_is_eight_hours_long():
    sched = build_schedule([WindowSpec(tz="Europe/Berlin")])
    opened = sched.next_open(at(2026, 3, 28, 12, 0))
    assert sched.next_close(opened) - opened == timedelta(hours=8)


def test_same_window_in_another_zone_opens_at_its_local_time():
    sched = build_schedule([WindowSpec(tz="America/New_York")])
    assert sched.next_open(datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def test_weekday_windows_and_a_weekend_cron_window():
    sched = build_schedule([WindowSpec(days="mon-fri", tz="Europe/Berlin"),
                            WindowSpec(cron="0 9 * * sat,sun", end="18:00", tz="Europe/Berlin")])
    assert sched.is_open(at(2026, 11, 21, 12, 0))  # Saturday noon: the weekend window
    assert not sched.is_open(at(2026, 11, 18, 12, 0))  # Wednesday noon
    assert not sched.is_open(at(2026, 11, 21, 23, 0))  # Saturday night: weekdays only
    assert sched.is_open(at(2026, 11, 20, 23, 0))  # Friday night
    assert sched.is_open(at(2026, 11, 21, 6, 0))  # ... until Saturday 07:00


def test_touching_windows_close_as_one():
    sched = build_schedule([WindowSpec(start="22:00", end="02:00", tz="UTC"),
                            WindowSpec(start="01:00", end="05:00", tz="UTC")])
    assert sched.next_close(datetime(2026, 11, 22, 23, 0, tzinfo=UTC)) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def test_ready_by_is_the_next_morning():
    sched = build_schedule([WindowSpec(tz="Europe/Berlin")], ready_by="06:30")
    assert sched.ready_by(at(2026, 11, 22, 23, 0)) == at(2026, 11, 23, 6, 30)


@pytest.mark.parametrize("spec, field, words", [
    (WindowSpec(cron="0 25 * * *"), "windows[0].cron", "invalid cron expression"),
    (WindowSpec(cron="0 22 * *"), "windows[0].cron", "five fields"),
    (WindowSpec(tz="Europe/Atlantis"), "windows[0].tz", "unknown time zone 'Europe/Atlantis'"),
    (WindowSpec(start="22:00", end="22:00"), "windows[0]", "zero length"),
    (WindowSpec(cron="30 6 * * *", end="06:30"), "windows[0]", "zero length"),
    (WindowSpec(start="7pm"), "windows[0].start", "HH:MM"),
    (WindowSpec(days="someday"), "windows[0].days", "invalid days"),
])
def test_bad_windows_name_the_field(spec, field, words):
    with pytest.raises(WindowConfigError) as err:
        build_window(spec)
    assert err.value.field == field and words in str(err.value)


def test_bad_window_in_settings_is_refused_at_load(tmp_path):
    from scheduler.settings import Settings

    with pytest.raises(ValueError, match=r"worker_windows.gpu1\[0\].tz: unknown time zone"):
        Settings(data_dir=tmp_path, worker_windows={"gpu1": [{"tz": "Nowhere/Land"}]})


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("600", 600)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "0m", "2d"])
def test_bad_durations(text):
    with pytest.raises(WindowConfigError, match="duration"):
        parse_duration(text)

"""asyncq.schedules, used as a Celery user uses celery.schedules.

Every time here is fixed: nothing depends on the clock of the machine running the tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from asyncq.schedules import ParseException, crontab, maybe_schedule, schedule

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
ALL_MINUTES = set(range(60))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
       second: int = 0) -> datetime:
    """A UTC instant: at(2024, 3, 31, 1, 30)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def runs(entry: crontab | schedule, after: datetime, tz: ZoneInfo | timezone = UTC,
         until: datetime | None = None, count: int = 1000) -> list[datetime]:
    """The runs after ``after``, as the scheduler finds them: each next after the last."""
    found: list[datetime] = []
    moment = after
    while len(found) < count:
        moment = entry.next_after(moment, tz)
        if until is not None and moment >= until:
            break
        found.append(moment)
    return found


# --- parsing --------------------------------------------------------------------------------


def test_every_field_defaults_to_star() -> None:
    entry = crontab()
    assert entry.minute == ALL_MINUTES
    assert entry.hour == set(range(24))
    assert entry.day_of_week == set(range(7))
    assert entry.day_of_month == set(range(1, 32))
    assert entry.month_of_year == set(range(1, 13))


@pytest.mark.parametrize(("spec", "expected"), [
    (5, {5}),
    ("5", {5}),
    ("*", ALL_MINUTES),
    ("*/15", {0, 15, 30, 45}),
    ("1-5", {1, 2, 3, 4, 5}),
    ("1-5/2", {1, 3, 5}),
    ("0,30", {0, 30}),
    (" 0, 30 ", {0, 30}),
    ("1,13,30-45,50-59/2", {1, 13, *range(30, 46), *range(50, 60, 2)}),
    ([0, 30], {0, 30}),
    ({1, 2}, {1, 2}),
    ((59,), {59}),
    (range(0, 60, 20), {0, 20, 40}),
])
def test_minute_forms(spec: object, expected: set[int]) -> None:
    assert crontab(minute=spec).minute == expected  # type: ignore[arg-type]


def test_hour_forms_including_a_range_that_wraps_past_midnight() -> None:
    assert crontab(hour="*/6").hour == {0, 6, 12, 18}
    assert crontab(hour="0,8-17/2").hour == {0, 8, 10, 12, 14, 16}
    assert crontab(hour="22-2").hour == {22, 23, 0, 1, 2}
    assert crontab(hour="22-2/2").hour == {22, 0, 2}


@pytest.mark.parametrize(("spec", "expected"), [
    ("mon-fri", {1, 2, 3, 4, 5}),
    ("sun,sat", {0, 6}),
    ("mon", {1}),
    ("sun", {0}),  # Sunday is 0, as in Celery
    ("Monday", {1}),
    ("tues,THU", {2, 4}),
    ("fri-mon", {5, 6, 0, 1}),  # wraps past Saturday
    ("1-5", {1, 2, 3, 4, 5}),
    ("*/2", {0, 2, 4, 6}),  # days divisible by two, as Celery warns
    (0, {0}),
    ([0, 6], {0, 6}),
])
def test_day_of_week_forms(spec: object, expected: set[int]) -> None:
    assert crontab(day_of_week=spec).day_of_week == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "expected"), [
    ("jan", {1}),
    ("January", {1}),
    ("sept", {9}),
    ("mar-may", {3, 4, 5}),
    ("nov-feb", {11, 12, 1, 2}),
    ("*/3", {1, 4, 7, 10}),
    ("2-12/2", {2, 4, 6, 8, 10, 12}),
    (12, {12}),
])
def test_month_of_year_forms(spec: object, expected: set[int]) -> None:
    assert crontab(month_of_year=spec).month_of_year == expected  # type: ignore[arg-type]


def test_day_of_month_forms() -> None:
    assert crontab(day_of_month="*/10").day_of_month == {1, 11, 21, 31}
    assert crontab(day_of_month="1-7,15-21").day_of_month == {*range(1, 8), *range(15, 22)}
    assert crontab(day_of_month="25-3").day_of_month == {25, 26, 27, 28, 29, 30, 31, 1, 2, 3}


@pytest.mark.parametrize(("fields", "message"), [
    ({"minute": "60"}, r"minute='60': 60 is out of range; minute takes 0-59"),
    ({"minute": 60}, r"minute=60: 60 is out of range"),
    ({"minute": [0, 60]}, r"60 is out of range"),
    ({"minute": -1}, r"-1 is out of range"),
    ({"minute": "-1"}, r"cannot read '-1'"),
    ({"hour": "24"}, r"hour='24': 24 is out of range; hour takes 0-23"),
    ({"hour": "20-24"}, r"24 is out of range"),
    ({"day_of_week": "funday"}, r"'funday' is not a number or a day name"),
    ({"day_of_week": "mon-funday"}, r"'funday' is not a number or a day name"),
    ({"day_of_week": "mo"}, r"'mo' is not a number or a day name"),
    ({"day_of_week": 7}, r"day_of_week takes 0-6 \(0 is Sunday\)"),
    ({"day_of_week": "jan"}, r"'jan' is not a number or a day name"),
    ({"month_of_year": "mon"}, r"'mon' is not a number or a month name"),
    ({"month_of_year": 13}, r"13 is out of range; month_of_year takes 1-12"),
    ({"month_of_year": "0"}, r"0 is out of range"),
    ({"day_of_month": "0"}, r"0 is out of range; day_of_month takes 1-31"),
    ({"day_of_month": 32}, r"32 is out of range"),
    ({"minute": "*/0"}, r"the step must be a positive number"),
    ({"minute": "*/"}, r"the step must be a positive number"),
    ({"minute": "*/x"}, r"the step must be a positive number"),
    ({"minute": "5/2"}, r"a step needs '\*' or a range"),
    ({"minute": "1-"}, r"cannot read '1-'"),
    ({"minute": "0,,30"}, r"an empty part"),
    ({"minute": ""}, r"an empty part"),
    ({"minute": "a"}, r"'a' is not a number"),
    ({"minute": set()}, r"matches nothing"),
    ({"day_of_month": 31, "month_of_year": 2}, r"day_of_month=31 never happens in month_of_year=2"),
    ({"day_of_month": "30,31", "month_of_year": "feb"}, r"never happens"),
    ({"day_of_month": 31, "month_of_year": "apr,jun,sep,nov"}, r"never happens"),
])
def test_invalid_fields_raise_value_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crontab(**fields)  # type: ignore[arg-type]


def test_a_field_that_cannot_be_read_raises_celerys_parse_exception_a_value_error() -> None:
    with pytest.raises(ParseException):
        crontab(minute="*/0")
    assert issubclass(ParseException, ValueError)


def test_a_field_of_the_wrong_type_raises_type_error_as_in_celery() -> None:
    for spec in (1.5, True, None, ["0"]):
        with pytest.raises(TypeError, match="minute="):
            crontab(minute=spec)  # type: ignore[arg-type]


def test_february_29th_alone_is_valid() -> None:
    assert crontab(day_of_month=29, month_of_year=2).day_of_month == {29}
    assert crontab(day_of_month="29-31", month_of_year="feb").day_of_month == {29, 30, 31}


def test_repr_reads_like_celerys() -> None:
    assert repr(crontab(0, 9, "mon-fri")) == "<crontab: 0 9 * * mon-fri (m/h/dM/MY/d)>"
    assert repr(crontab(minute=[30, 0], day_of_month=1)) == (
        "<crontab: 0,30 * 1 * * (m/h/dM/MY/d)>")
    assert repr(schedule(30)) == "<freq: 30.00 seconds>"
    assert repr(schedule(timedelta(hours=2))) == "<freq: 2.00 hours>"


def test_from_string_reads_a_cron_line() -> None:
    assert crontab.from_string("0 9 * * mon-fri") == crontab(minute=0, hour=9,
                                                             day_of_week="mon-fri")
    assert crontab.from_string("*/15 * 1 jan *") == crontab("*/15", day_of_month=1,
                                                            month_of_year=1)
    with pytest.raises(ValueError, match="expected 5 fields, got 4"):
        crontab.from_string("0 9 * *")


def test_equal_schedules_are_equal_and_hash_alike() -> None:
    assert crontab(0, 9, "mon-fri") == crontab("0", "9", "1-5")
    assert crontab(0, 9, "mon-fri") == crontab([0], {9}, [1, 2, 3, 4, 5])
    assert hash(crontab(0, 9, "mon-fri")) == hash(crontab("0", "9", "1-5"))
    assert crontab(0, 9) != crontab(0, 10)
    assert crontab() != schedule(60)
    assert schedule(30) == schedule(timedelta(seconds=30))
    assert schedule(30) == timedelta(seconds=30)  # as in Celery
    assert hash(schedule(30)) == hash(schedule(30.0))
    assert schedule(30) != schedule(31)
    assert schedule(60) != schedule(60, relative=True)
    assert len({crontab(0, 9), crontab("0", "9"), schedule(1), schedule(1)}) == 2


def test_schedule_takes_seconds_or_a_timedelta_and_must_be_positive() -> None:
    assert schedule(90).run_every == timedelta(seconds=90)
    assert schedule(0.5).seconds == 0.5
    assert schedule(timedelta(minutes=5)).seconds == 300
    for bad in (0, -1, timedelta(0)):
        with pytest.raises(ValueError, match="run_every must be positive"):
            schedule(bad)


def test_maybe_schedule() -> None:
    assert maybe_schedule(30) == schedule(30)
    assert maybe_schedule(1.5) == schedule(1.5)
    assert maybe_schedule(timedelta(minutes=1)) == schedule(60)
    assert maybe_schedule(60, relative=True) == schedule(60, relative=True)
    entry = crontab(0, 9)
    assert maybe_schedule(entry) is entry
    assert maybe_schedule(None) is None
    with pytest.raises(TypeError, match="maybe_schedule"):
        maybe_schedule("30")  # type: ignore[call-overload]


# --- next_after at fixed times --------------------------------------------------------------


def test_every_15_minutes() -> None:
    entry = crontab(minute="*/15")
    assert runs(entry, at(2024, 5, 6, 10, 7, 30), count=4) == [
        at(2024, 5, 6, 10, 15), at(2024, 5, 6, 10, 30), at(2024, 5, 6, 10, 45),
        at(2024, 5, 6, 11, 0)]
    # strictly after: a moment on a run gives the next one
    assert entry.next_after(at(2024, 5, 6, 10, 15), UTC) == at(2024, 5, 6, 10, 30)
    # across the end of a year
    assert entry.next_after(at(2024, 12, 31, 23, 50), UTC) == at(2025, 1, 1, 0, 0)


def test_nine_on_weekdays_skips_the_weekend() -> None:
    entry = crontab(minute=0, hour=9, day_of_week="mon-fri")
    friday = at(2024, 6, 7, 8, 0)
    assert friday.weekday() == 4
    assert runs(entry, friday, count=3) == [
        at(2024, 6, 7, 9, 0), at(2024, 6, 10, 9, 0), at(2024, 6, 11, 9, 0)]
    # read in New York (UTC-4 in June): 09:00 there is 13:00 UTC
    assert runs(entry, friday, NEW_YORK, count=2) == [at(2024, 6, 7, 13, 0),
                                                      at(2024, 6, 10, 13, 0)]


def test_the_first_of_each_month() -> None:
    entry = crontab(minute=0, hour=0, day_of_month=1)
    assert runs(entry, at(2024, 10, 15, 12, 0), count=4) == [
        at(2024, 11, 1), at(2024, 12, 1), at(2025, 1, 1), at(2025, 2, 1)]


def test_february_29th_waits_for_the_next_leap_year() -> None:
    entry = crontab(minute=0, hour=12, day_of_month=29, month_of_year=2)
    assert entry.next_after(at(2024, 3, 1), UTC) == at(2028, 2, 29, 12, 0)
    assert entry.next_after(at(2096, 3, 1), UTC) == at(2104, 2, 29, 12, 0)  # 2100 is no leap year


def test_a_rare_day_is_found_decades_ahead_quickly() -> None:
    # February 29th on a Monday: 2016, then 2044
    entry = crontab(minute=0, hour=0, day_of_month=29, month_of_year=2, day_of_week="mon")
    found = entry.next_after(at(2016, 3, 1), UTC)
    assert found == at(2044, 2, 29)
    assert found.isoweekday() == 1


def test_the_search_is_bounded_and_ends_before_the_year_9999() -> None:
    with pytest.raises(ValueError, match="has no run after 9998-06-01"):
        crontab(minute=0, hour=0, day_of_month=1, month_of_year=1).next_after(
            at(9998, 6, 1), UTC)


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # the first Monday of each month
    entry = crontab(minute=0, hour=8, day_of_week=1, day_of_month="1-7")
    assert runs(entry, at(2024, 1, 1, 9, 0), count=3) == [
        at(2024, 2, 5, 8, 0), at(2024, 3, 4, 8, 0), at(2024, 4, 1, 8, 0)]


def test_every_minute_gives_each_minute() -> None:
    assert runs(crontab(), at(2024, 2, 28, 23, 58, 59), count=3) == [
        at(2024, 2, 28, 23, 59), at(2024, 2, 29, 0, 0), at(2024, 2, 29, 0, 1)]


def test_next_after_answers_in_utc_whatever_zone_the_moment_is_in() -> None:
    entry = crontab(minute=0, hour=9)
    moment = datetime(2024, 6, 7, 10, 0, tzinfo=LONDON)  # 09:00 UTC
    found = entry.next_after(moment, UTC)
    assert found == at(2024, 6, 8, 9, 0)
    assert found.tzinfo is UTC


def test_next_after_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match="aware"):
        crontab().next_after(datetime(2024, 1, 1), UTC)
    with pytest.raises(ValueError, match="aware"):
        schedule(30).next_after(datetime(2024, 1, 1), UTC)


def test_next_after_reads_the_apps_timezone_when_no_zone_is_given() -> None:
    entry = crontab(minute=0, hour=9, app=FakeApp(FakeConf("America/New_York")))
    assert entry.next_after(at(2024, 6, 7, 12, 0)) == at(2024, 6, 7, 13, 0)
    assert crontab(minute=0, hour=9).next_after(at(2024, 6, 7, 12, 0)) == at(2024, 6, 8, 9, 0)


def test_schedule_next_after_is_the_last_run_plus_the_interval() -> None:
    every_30s = schedule(timedelta(seconds=30))
    assert every_30s.next_after(at(2024, 1, 1, 12, 0, 0), UTC) == at(2024, 1, 1, 12, 0, 30)
    assert runs(every_30s, at(2024, 1, 1, 23, 59, 15), count=2) == [
        at(2024, 1, 1, 23, 59, 45), at(2024, 1, 2, 0, 0, 15)]
    # real time, also when the clocks change: an hour after 00:30 UTC on London's spring day
    hourly = schedule(3600)
    last = datetime(2024, 3, 31, 0, 30, tzinfo=LONDON)
    assert hourly.next_after(last, LONDON) == at(2024, 3, 31, 1, 30)
    assert hourly.next_after(last, LONDON).tzinfo is UTC


def test_a_relative_schedule_rounds_down_to_its_resolution() -> None:
    hourly = schedule(timedelta(hours=1), relative=True)
    assert runs(hourly, at(2024, 1, 1, 10, 17, 42), count=2) == [at(2024, 1, 1, 11, 0),
                                                                 at(2024, 1, 1, 12, 0)]
    every_5m = schedule(timedelta(minutes=5), relative=True)
    assert every_5m.next_after(at(2024, 1, 1, 10, 17, 42), UTC) == at(2024, 1, 1, 10, 22)
    daily = schedule(timedelta(days=1), relative=True)
    assert daily.next_after(at(2024, 6, 1, 15, 0), LONDON) == at(2024, 6, 1, 23, 0)  # midnight BST
    assert schedule(30, relative=True).next_after(at(2024, 1, 1, 0, 0, 1), UTC) == (
        at(2024, 1, 1, 0, 0, 31))  # below a minute there is nothing to round to


# --- daylight saving ------------------------------------------------------------------------
# London: on the last Sunday of March at 01:00 GMT the clocks go to 02:00 BST (01:00-01:59
# does not happen); on the last Sunday of October at 02:00 BST they go back to 01:00 GMT
# (01:00-01:59 happens twice). New York: 02:00-02:59 is skipped on the second Sunday of
# March, 01:00-01:59 repeated on the first Sunday of November.


def test_london_autumn_a_repeated_time_runs_once_at_its_first_occurrence() -> None:
    entry = crontab(minute=30, hour=1)
    found = runs(entry, at(2024, 10, 26, 12, 0), LONDON, count=2)
    # 01:30 BST (00:30 UTC) on the 27th; not again at 01:30 GMT; then 01:30 GMT on the 28th
    assert found == [at(2024, 10, 27, 0, 30), at(2024, 10, 28, 1, 30)]
    # a scheduler started during the second 01:30 does not run it again
    assert entry.next_after(at(2024, 10, 27, 1, 15), LONDON) == at(2024, 10, 28, 1, 30)


def test_london_spring_a_skipped_time_runs_once_when_the_clocks_jump() -> None:
    entry = crontab(minute=30, hour=1)
    found = runs(entry, at(2024, 3, 30, 12, 0), LONDON, count=3)
    # 01:30 on the 31st does not exist: it runs at 01:00 UTC, when 01:00 GMT became 02:00 BST
    assert found == [at(2024, 3, 31, 1, 0), at(2024, 4, 1, 0, 30), at(2024, 4, 2, 0, 30)]


def test_new_york_spring_and_autumn() -> None:
    skipped = crontab(minute=30, hour=2)
    assert runs(skipped, at(2024, 3, 9, 12, 0), NEW_YORK, count=2) == [
        at(2024, 3, 10, 7, 0),  # 02:00 EST became 03:00 EDT at 07:00 UTC
        at(2024, 3, 11, 6, 30)]
    repeated = crontab(minute=30, hour=1)
    assert runs(repeated, at(2024, 11, 2, 12, 0), NEW_YORK, count=2) == [
        at(2024, 11, 3, 5, 30),  # 01:30 EDT; not 01:30 EST (06:30 UTC)
        at(2024, 11, 4, 6, 30)]


def test_every_half_hour_across_londons_spring_change() -> None:
    found = runs(crontab(minute="*/30"), at(2024, 3, 30, 23, 45), LONDON, count=5)
    # 01:00 and 01:30 GMT do not happen: both and 02:00 BST are one run at 01:00 UTC
    assert found == [at(2024, 3, 31, 0, 0), at(2024, 3, 31, 0, 30), at(2024, 3, 31, 1, 0),
                     at(2024, 3, 31, 1, 30), at(2024, 3, 31, 2, 0)]


def test_every_half_hour_across_londons_autumn_change() -> None:
    found = runs(crontab(minute="*/30"), at(2024, 10, 26, 23, 45), LONDON, count=5)
    # 01:00 and 01:30 run in BST; their repeats in GMT do not
    assert found == [at(2024, 10, 27, 0, 0), at(2024, 10, 27, 0, 30), at(2024, 10, 27, 2, 0),
                     at(2024, 10, 27, 2, 30), at(2024, 10, 27, 3, 0)]


@pytest.mark.parametrize(("zone", "day", "expected_runs"), [
    (LONDON, date(2024, 3, 31), 46),  # 48 wall times, three of them on one instant
    (LONDON, date(2024, 10, 27), 48),  # 48 wall times in 25 hours, each once
    (NEW_YORK, date(2024, 3, 10), 46),
    (NEW_YORK, date(2024, 11, 3), 48),
    (LONDON, date(2024, 6, 1), 48),
])
def test_every_half_hour_on_a_change_day_no_run_twice_and_none_lost(
        zone: ZoneInfo, day: date, expected_runs: int) -> None:
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(),
                           tzinfo=zone).astimezone(UTC)
    found = [start, *runs(crontab(minute="*/30"), start, zone, until=end)]
    assert len(found) == expected_runs
    assert found == sorted(set(found))  # strictly increasing
    walls = {moment.astimezone(zone).replace(tzinfo=None, fold=0) for moment in found}
    every_wall_time = {datetime.combine(day, datetime.min.time()) + timedelta(minutes=30 * i)
                       for i in range(48)}
    # every wall time that exists ran, and each instant is a wall time of the day
    existing = {wall for wall in every_wall_time
                if wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
                .replace(tzinfo=None) == wall}
    assert existing <= walls <= every_wall_time
    # real time between runs: 30 minutes, or the length of the repeated hour plus 30 minutes
    gaps = {later - earlier for earlier, later in pairwise(found)}
    assert gaps <= {timedelta(minutes=30), timedelta(minutes=90)}


def test_every_minute_through_the_skipped_hour() -> None:
    entry = crontab()
    assert runs(entry, at(2024, 3, 31, 0, 58), LONDON, count=3) == [
        at(2024, 3, 31, 0, 59), at(2024, 3, 31, 1, 0), at(2024, 3, 31, 1, 1)]  # 02:01 BST


def test_a_whole_skipped_day_runs_once() -> None:
    # Samoa skipped 30 December 2011: the clocks went from the 29th 23:59:59 (UTC-10)
    # to the 31st 00:00 (UTC+14), at 10:00 UTC on the 30th
    apia = ZoneInfo("Pacific/Apia")
    noon = crontab(minute=0, hour=12)
    assert runs(noon, at(2011, 12, 29, 12, 0), apia, count=3) == [
        at(2011, 12, 29, 22, 0),  # noon on the 29th
        at(2011, 12, 30, 10, 0),  # noon on the 30th, which did not happen
        at(2011, 12, 30, 22, 0)]  # noon on the 31st


def test_matches_celery_in_utc() -> None:
    celery_schedules = pytest.importorskip("celery.schedules")
    celery_app = pytest.importorskip("celery").Celery(set_as_current=False)
    celery_app.conf.timezone = "UTC"
    choices: dict[str, list[Any]] = {
        "minute": ["*", "*/15", "0", "0,30", "5-10/2", [1, 40]],
        "hour": ["*", "9", "*/6", "22-2", [23]],
        "day_of_week": ["*", "mon-fri", "sun,sat", "fri-mon"],
        "day_of_month": ["*", "1", "29", "31", "1-7", "*/10"],
        "month_of_year": ["*", "2", "jan", "*/3", "mar-may"],
    }
    chosen = random.Random(5)
    compared = 0
    while compared < 500:
        fields = {name: chosen.choice(specs) for name, specs in choices.items()}
        try:
            theirs = celery_schedules.crontab(**fields, app=celery_app)
        except ValueError:
            continue
        last = at(2020, 1, 1) + timedelta(minutes=chosen.randrange(10 * 365 * 24 * 60))
        start, delta, _ = theirs.remaining_delta(last)
        assert crontab(**fields).next_after(last, UTC) == start + delta, (fields, last)
        compared += 1


# --- is_due and remaining_estimate ----------------------------------------------------------


@dataclass
class FakeConf:
    timezone: str


@dataclass
class FakeApp:
    conf: FakeConf


NOW = at(2024, 5, 6, 10, 7)  # a Monday


def test_schedule_is_due_and_remaining_estimate() -> None:
    entry = schedule(30, nowfun=lambda: NOW)
    assert entry.now() == NOW
    assert entry.remaining_estimate(NOW - timedelta(seconds=10)) == timedelta(seconds=20)
    assert entry.is_due(NOW - timedelta(seconds=10)) == (False, 20.0)
    assert entry.is_due(NOW - timedelta(seconds=30)) == (True, 30.0)
    state = entry.is_due(NOW - timedelta(seconds=45))  # overdue: run now, next in 30 s
    assert (state.is_due, state.next) == (True, 30.0)
    assert entry.remaining_estimate(NOW - timedelta(seconds=45)) == timedelta(seconds=-15)


def test_relative_schedule_is_due_checks_again_at_the_next_boundary() -> None:
    hourly = schedule(timedelta(hours=1), relative=True, nowfun=lambda: NOW)
    assert hourly.is_due(at(2024, 5, 6, 9, 3)) == (True, 53 * 60.0)  # run now, next at 11:00
    assert hourly.is_due(at(2024, 5, 6, 9, 30)) == (True, 53 * 60.0)
    assert hourly.is_due(at(2024, 5, 6, 10, 0)) == (False, 53 * 60.0)


def test_crontab_is_due_and_remaining_estimate() -> None:
    entry = crontab(minute="*/15", nowfun=lambda: NOW)
    assert entry.remaining_estimate(at(2024, 5, 6, 10, 0)) == timedelta(minutes=8)
    assert entry.is_due(at(2024, 5, 6, 10, 0)) == (False, 480.0)
    # last ran at 09:45: 10:00 is past, so due now, and then 10:15 is 8 minutes away
    assert entry.is_due(at(2024, 5, 6, 9, 45)) == (True, 480.0)
    assert entry.remaining_estimate(at(2024, 5, 6, 9, 45)) == timedelta(minutes=-7)


def test_is_due_reads_naive_times_as_utc_as_celery_does() -> None:
    entry = crontab(minute="*/15", nowfun=lambda: datetime(2024, 5, 6, 10, 7))
    assert entry.is_due(datetime(2024, 5, 6, 10, 0)) == (False, 480.0)
    assert entry.now() == NOW


def test_crontab_is_due_in_the_apps_timezone() -> None:
    entry = crontab(minute=0, hour=9, nowfun=lambda: NOW,
                    app=FakeApp(FakeConf("America/New_York")))
    assert entry.tz == NEW_YORK
    # 09:00 in New York is 13:00 UTC: not due at 10:07 UTC
    assert entry.is_due(at(2024, 5, 5, 13, 0)) == (False, (2 * 60 + 53) * 60.0)
    # with no app, UTC: 09:00 UTC has passed since yesterday's run
    utc_entry = crontab(minute=0, hour=9, nowfun=lambda: NOW)
    assert utc_entry.tz == UTC
    assert utc_entry.is_due(at(2024, 5, 5, 9, 0)) == (True, (22 * 60 + 53) * 60.0)


def test_without_nowfun_the_clock_is_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    now = crontab().now()
    assert now.tzinfo is not None
    assert before <= now <= datetime.now(UTC)

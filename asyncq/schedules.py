"""Periodic schedules with the names and arguments of Celery's ``celery.schedules``.

A Celery project moves over by changing one import line:
``from celery.schedules import crontab, schedule`` becomes
``from asyncq.schedules import crontab, schedule``. ``schedule`` is an interval,
``crontab`` is a cron-like pattern of minutes, hours, days and months, and
``maybe_schedule`` turns a number of seconds or a ``timedelta`` into a ``schedule``.

asyncq's scheduler asks one question of each: ``next_after(moment, tz)``, the first run
strictly after an aware ``moment``, as an aware datetime in UTC. It is a pure function of
its arguments (no clock), so it is easy to test and to reason about. Celery's own API
(``remaining_estimate``, ``is_due``) is built on it and reads the clock from ``nowfun``,
or the current UTC time.

A crontab is read as wall-clock times in the time zone ``tz``. When the clocks change, no
run is skipped and none runs twice: a wall-clock time that happens twice (the hour repeated
when the clocks go back) runs at its first occurrence only, and a wall-clock time that does
not happen (the hour skipped when the clocks go forward) runs once, at the instant the
clocks jump over it, as cron does. Several wall-clock times that fall on that one instant
give one run.

Differences from Celery, all on input Celery accepts but that is almost surely a mistake:
day names are accepted only in ``day_of_week`` and month names only in ``month_of_year``
(Celery takes either in any field), a name must be a prefix of at least three letters of
the full name (``'tues'``, ``'sept'``; Celery reads only the first three letters, so it
takes ``'monkey'``), ``schedule`` needs a positive interval, and equality compares what
the schedules run (``relative`` included, ``nowfun`` not).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from calendar import monthrange
from collections.abc import Callable, Iterable, Iterator
from datetime import MAXYEAR, date, datetime, time, timedelta, timezone, tzinfo
from typing import NamedTuple, Protocol, TypeAlias, overload
from zoneinfo import ZoneInfo

__all__ = ["ParseException", "crontab", "maybe_schedule", "schedstate", "schedule"]

Cronspec: TypeAlias = "int | str | Iterable[int]"
NowFun: TypeAlias = "Callable[[], datetime]"

UTC = timezone.utc

# The Gregorian calendar repeats every 400 years, so a day pattern that has no day in
# 401 years from any start never matches (a valid crontab always matches well before).
SEARCH_YEARS = 401

DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
               "september", "october", "november", "december")

# The longest each month can be (February in a leap year).
LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30,
                 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}

_PART = re.compile(r"^(?:(?P<star>\*)|(?P<first>[0-9a-z]+)(?:-(?P<last>[0-9a-z]+))?)"
                   r"(?:/(?P<step>.*))?$")


class ParseException(ValueError):
    """A crontab field that cannot be read (Celery's name; a ``ValueError`` here)."""


class schedstate(NamedTuple):  # lower case: Celery's name
    """What ``is_due`` returns: whether to run now, and seconds until to check again."""

    is_due: bool
    next: float


class _Conf(Protocol):
    @property
    def timezone(self) -> str: ...


class _App(Protocol):
    """An asyncq (or Celery) app: only ``app.conf.timezone`` is read."""

    @property
    def conf(self) -> _Conf: ...


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i

    def describe(self) -> str:
        extra = " (0 is Sunday)" if self.name == "day_of_week" else ""
        return f"{self.name} takes {self.low}-{self.high}{extra}"


MINUTE = _Field("minute", 0, 59)
HOUR = _Field("hour", 0, 23)
DAY_OF_WEEK = _Field("day_of_week", 0, 6, DAY_NAMES)
DAY_OF_MONTH = _Field("day_of_month", 1, 31)
MONTH_OF_YEAR = _Field("month_of_year", 1, 12, MONTH_NAMES)


# --- parsing ------------------------------------------------------------------------------


def parse_field(spec: Cronspec, field: _Field) -> set[int]:
    """The set of values ``spec`` stands for in ``field``; ValueError if it is not valid."""
    if isinstance(spec, bool):
        raise TypeError(f"{field.name}={spec!r}: expected an int, a str or ints")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.split(","):
            values.update(_parse_part(part.strip().lower(), field, spec))
    elif isinstance(spec, Iterable):
        values = set(spec)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{field.name}={spec!r}: expected ints")
    else:
        raise TypeError(f"{field.name}={spec!r}: expected an int, a str or ints")
    bad = sorted(v for v in values if not field.low <= v <= field.high)
    if bad:
        raise ValueError(f"{field.name}={spec!r}: {bad[0]} is out of range; {field.describe()}")
    if not values:
        raise ValueError(f"{field.name}={spec!r} matches nothing")
    return values


def _parse_part(part: str, field: _Field, spec: str) -> list[int]:
    """One comma-separated part: '*', 'n', 'a-b', '*/n' or 'a-b/n' (names allowed)."""
    if not part:
        raise ParseException(f"{field.name}={spec!r}: an empty part between commas")
    match = _PART.match(part)
    if match is None:
        raise ParseException(f"{field.name}={spec!r}: cannot read {part!r}")
    star, first, last, step = match.group("star", "first", "last", "step")
    if star:
        values = list(range(field.low, field.high + 1))
    else:
        values = _expand_range(_number(first, field, spec),
                               _number(last or first, field, spec), field)
    if step is None:
        return values
    if not star and last is None:
        raise ParseException(f"{field.name}={spec!r}: a step needs '*' or a range, as in "
                             f"'*/{step}' or '{first}-{field.high}/{step}'")
    if not step.isdigit() or int(step) == 0:
        raise ParseException(f"{field.name}={spec!r}: the step must be a positive number")
    return values[::int(step)]


def _expand_range(first: int, last: int, field: _Field) -> list[int]:
    """first..last inclusive, wrapping past the end of the field ('fri-mon', '22-2')."""
    if first <= last:
        return list(range(first, last + 1))
    return list(range(first, field.high + 1)) + list(range(field.low, last + 1))


def _number(token: str, field: _Field, spec: str) -> int:
    if token.isdigit():
        value = int(token)
        if not field.low <= value <= field.high:
            raise ValueError(f"{field.name}={spec!r}: {value} is out of range; "
                             f"{field.describe()}")
        return value
    for index, name in enumerate(field.names):
        if len(token) >= 3 and name.startswith(token):
            return field.low + index
    kind = {"day_of_week": "day name", "month_of_year": "month name"}.get(field.name)
    what = f"not a number or a {kind}" if kind else "not a number"
    raise ValueError(f"{field.name}={spec!r}: {token!r} is {what}; {field.describe()}")


# --- time helpers ---------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    """``moment`` with a naive value read as UTC (as Celery does)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"next_after needs an aware datetime, not {moment!r}")


def resolve_wall_time(wall: datetime, tz: tzinfo, fold: int = 0) -> datetime:
    """The UTC instant of the naive wall-clock time ``wall`` in ``tz``.

    A time that happens twice is taken at occurrence ``fold`` (0: the first). A time that
    does not happen (skipped when the clocks go forward) is taken as the instant of the jump.
    The result never decreases as ``wall`` increases (for fold=0).
    """
    instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    return _jump_over(wall, tz)


def _jump_over(wall: datetime, tz: tzinfo) -> datetime:
    """The instant the clocks jump over the non-existent wall-clock time ``wall``."""
    # Read with the offset from before the jump, ``wall`` is at or after it; read with the
    # offset from after, before it. Halve that interval to the second of the change.
    after = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    offset_after = after.astimezone(tz).utcoffset()
    second = timedelta(seconds=1)
    while after - before > second:
        middle = before + max((after - before) // second // 2, 1) * second
        if middle.astimezone(tz).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def _zone(app: _App | None) -> tzinfo:
    name = app.conf.timezone if app is not None else None
    return ZoneInfo(name) if name else UTC


# --- schedules ------------------------------------------------------------------------------


class BaseSchedule:
    """What ``schedule`` and ``crontab`` share: the clock, the time zone, Celery's API."""

    def __init__(self, nowfun: NowFun | None = None, app: _App | None = None) -> None:
        self.nowfun = nowfun
        self.app = app

    @property
    def tz(self) -> tzinfo:
        """The app's ``timezone`` setting, or UTC without an app."""
        return _zone(self.app)

    def now(self) -> datetime:
        """``nowfun()``, or the current time in UTC; a naive result is read as UTC."""
        return _aware(self.nowfun()) if self.nowfun else datetime.now(UTC)

    def next_after(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """The first run strictly after the aware ``moment``, in UTC."""
        raise NotImplementedError

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now to the next run after ``last_run_at`` (negative when overdue)."""
        return self.next_after(_aware(last_run_at), self.tz) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(is_due, next)``: run now or not, and seconds until the scheduler checks again.

        As in Celery: ``(True, 20.0)`` means run now and check again in 20 seconds,
        ``(False, 12.3)`` means not yet, check again in 12.3 seconds.
        """
        now = self.now()
        remaining = (self.next_after(_aware(last_run_at), self.tz) - now).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        return schedstate(True, (self.next_after(now, self.tz) - now).total_seconds())


class schedule(BaseSchedule):  # lower case: Celery's name
    """Run every ``run_every`` (seconds or a ``timedelta``) after the last run.

    With ``relative=True`` the run time is rounded down to the resolution of the interval
    in the time zone (whole days, hours or minutes), as Celery's ``relative`` does.
    """

    def __init__(self, run_every: float | timedelta, relative: bool = False,
                 nowfun: NowFun | None = None, app: _App | None = None) -> None:
        if not isinstance(run_every, timedelta):
            run_every = timedelta(seconds=run_every)
        if run_every <= timedelta(0):
            raise ValueError(f"schedule: run_every must be positive, not {run_every!r}")
        self.run_every = run_every
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        return _humanize(self.seconds)

    def next_after(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """``moment + run_every`` in real time (rounded down if ``relative``), in UTC."""
        _require_aware(moment)
        plain = moment.astimezone(UTC) + self.run_every
        unit = _resolution(self.run_every) if self.relative else None
        if unit is None:
            return plain
        zone = self.tz if tz is None else tz
        if unit == "day":  # calendar days, as Celery counts them
            end = (moment.astimezone(zone).replace(tzinfo=None) + self.run_every)
            rounded = resolve_wall_time(datetime.combine(end.date(), time()), zone)
        else:
            end = plain.astimezone(zone)
            wall = end.replace(tzinfo=None, minute=0 if unit == "hour" else end.minute,
                               second=0, microsecond=0)
            rounded = resolve_wall_time(wall, zone, end.fold)
        return rounded if rounded > moment else plain

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return (self.run_every, self.relative) == (other.run_every, other.relative)
        if isinstance(other, timedelta):  # as in Celery: schedule(30) == timedelta(seconds=30)
            return not self.relative and self.run_every == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.run_every)


def _resolution(interval: timedelta) -> str | None:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if interval.total_seconds() >= size:
            return unit
    return None


def _humanize(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{seconds / size:.2f} {unit}s"
    return f"{seconds:.2f} seconds"


class crontab(BaseSchedule):  # lower case: Celery's name
    """Run at the wall-clock times that match every field, like a cron(5) line.

    Each field takes an int, a set or list of ints, or a string: ``'*'``, ``'5'``,
    ``'*/15'``, ``'1-5'``, ``'1-5/2'``, ``'0,30'``, or names in ``day_of_week``
    (``'mon-fri'``, ``'sun,sat'``; Sunday is 0, Saturday 6) and ``month_of_year``
    (``'jan'``, ``'mar-may'``). A range may wrap (``'fri-mon'``, ``hour='22-2'``).
    A day must match ``day_of_week``, ``day_of_month`` and ``month_of_year`` all three.
    ValueError if a field is not valid or no day of ``day_of_month`` exists in any month
    of ``month_of_year`` (such as the 30th of February).
    """

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*",
                 day_of_week: Cronspec = "*", day_of_month: Cronspec = "*",
                 month_of_year: Cronspec = "*", nowfun: NowFun | None = None,
                 app: _App | None = None) -> None:
        self._orig = (minute, hour, day_of_month, month_of_year, day_of_week)
        self.minute = parse_field(minute, MINUTE)
        self.hour = parse_field(hour, HOUR)
        self.day_of_week = parse_field(day_of_week, DAY_OF_WEEK)
        self.day_of_month = parse_field(day_of_month, DAY_OF_MONTH)
        self.month_of_year = parse_field(month_of_year, MONTH_OF_YEAR)
        if not any(day <= LONGEST_MONTH[month]
                   for month in self.month_of_year for day in self.day_of_month):
            raise ValueError(f"crontab: day_of_month={day_of_month!r} never happens in "
                             f"month_of_year={month_of_year!r}")
        self._times = [(h, m) for h in sorted(self.hour) for m in sorted(self.minute)]
        self._days = sorted(self.day_of_month)
        self._months = sorted(self.month_of_year)
        super().__init__(nowfun=nowfun, app=app)

    @classmethod
    def from_string(cls, line: str) -> crontab:
        """``crontab.from_string('0 9 * * mon-fri')``: minute hour dM MY dW, as in cron."""
        fields = line.split()
        if len(fields) != 5:
            raise ValueError(f"crontab line {line!r}: expected 5 fields, got {len(fields)}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def next_after(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """The first matching wall-clock time in ``tz`` strictly after ``moment``, in UTC.

        Only matching months and days are visited, and within a day the first time after
        ``moment`` is found by bisection. ValueError if nothing matches in the next
        401 years (a full turn of the Gregorian calendar: a crontab that passed its
        checks always matches sooner), or before the year 9999.
        """
        _require_aware(moment)
        zone = self.tz if tz is None else tz
        for day in self._days_from(moment.astimezone(zone).date()):
            found = self._first_on(day, moment, zone)
            if found is not None:
                return found
        raise ValueError(f"{self!r} has no run after {moment.isoformat()}")

    def _days_from(self, start: date) -> Iterator[date]:
        """The days, from ``start`` on, that match the three day fields."""
        for year in range(start.year, min(start.year + SEARCH_YEARS, MAXYEAR - 1) + 1):
            for month in self._months:
                if (year, month) >= (start.year, start.month):
                    yield from self._days_in(year, month, start)

    def _days_in(self, year: int, month: int, start: date) -> Iterator[date]:
        length = monthrange(year, month)[1]
        for number in self._days:
            if number > length:
                return
            day = date(year, month, number)
            if day >= start and day.isoweekday() % 7 in self.day_of_week:
                yield day

    def _first_on(self, day: date, moment: datetime, tz: tzinfo) -> datetime | None:
        """The first matching time on ``day`` after ``moment``, or None."""

        def instant(hour_minute: tuple[int, int]) -> datetime:
            return resolve_wall_time(datetime.combine(day, time(*hour_minute)), tz)

        index = bisect_right(self._times, moment, key=instant)
        return instant(self._times[index]) if index < len(self._times) else None

    def __repr__(self) -> str:
        shown = " ".join(_show(spec) for spec in self._orig)
        return f"<crontab: {shown} (m/h/dM/MY/d)>"

    def _key(self) -> tuple[frozenset[int], ...]:
        return tuple(frozenset(values) for values in (
            self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())


def _show(spec: Cronspec) -> str:
    if isinstance(spec, (str, int)):
        return str(spec)
    return ",".join(str(value) for value in sorted(spec))


@overload
def maybe_schedule(value: None, relative: bool = False, app: _App | None = None) -> None: ...


@overload
def maybe_schedule(value: float | timedelta | BaseSchedule, relative: bool = False,
                   app: _App | None = None) -> BaseSchedule: ...


def maybe_schedule(value: object, relative: bool = False,
                   app: _App | None = None) -> BaseSchedule | None:
    """A number of seconds or a ``timedelta`` as a ``schedule``; a schedule (or None) as is."""
    if value is None or isinstance(value, BaseSchedule):
        if value is not None and app is not None:
            value.app = app
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value, relative, app=app)
    raise TypeError(f"maybe_schedule: expected seconds, a timedelta or a schedule, "
                    f"not {value!r}")

"""Settings and their defaults, all in one place, under Celery's names.

Every name Celery 5 documents is accepted: those asyncq implements are fields of
``Settings``; the others are kept in ``Settings.not_used`` (a worker lists them once
at start-up) and read back as set. A name neither asyncq nor Celery knows is an
error, with the closest name suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from asyncq.celery_settings import CELERY_SETTINGS
from asyncq.exceptions import ConfigurationError

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DAY = 24 * 3600


@dataclasses.dataclass
class Settings:
    """What ``AsyncQ(**settings)`` and ``app.conf.update()`` accept; anything else is an error."""

    broker_url: str = ""  # '' = $ASYNCQ_BROKER_URL, else redis://localhost:6379/0
    result_backend: str = ""  # '' = the broker; asyncq keeps results beside the queues
    task_default_queue: str = "celery"  # Celery's default queue name
    task_routes: dict[str, Any] = dataclasses.field(default_factory=dict)  # name/glob -> queue
    task_queues: tuple[str, ...] = ()  # more queue names the app knows (names or kombu Queues)
    task_create_missing_queues: bool = True  # False: apply_async to an unknown queue raises
    task_ignore_result: bool = False  # True: delete the record once the task is final
    task_track_started: bool = True  # show STARTED while a task runs (Celery: False)
    task_acks_late: bool = False  # ack after the task ends, so a dead child's task reruns
    task_redelivery_limit: int = 3  # acks-late redeliveries after a lost worker, then FAILURE
    result_extended: bool = True  # keep args and kwargs in the record (Celery: False)
    result_expires: int = DAY  # seconds a final result is kept (Celery: one day)
    task_record_ttl: int = 7 * DAY  # safety TTL of records of queued or running tasks
    # Work on a Redis that may evict keys when full (maxmemory-policy other than
    # noeviction), warned about rather than refused: tasks and results may vanish.
    broker_allow_eviction: bool = False
    task_serializer: str = "json"  # accepted for Celery code; only json exists
    result_serializer: str = "json"  # likewise
    accept_content: tuple[str, ...] = ("json",)  # likewise
    task_time_limit: float = 0.0  # seconds before the child is killed: TimeLimitExceeded; 0 = none
    task_soft_time_limit: float = 0.0  # seconds before SoftTimeLimitExceeded is raised; 0 = none
    worker_concurrency: int = 0  # child processes; 0 = the number of CPUs
    worker_max_tasks_per_child: int = 0  # replace a child after this many tasks; 0 = never
    worker_prefetch_multiplier: int = 4  # messages a child takes per round trip (Celery: 4)
    worker_result_hold: float = 0.002  # seconds a short acks-late task's end may wait (0: none)
    worker_heartbeat_interval: float = 2.0  # seconds between a worker's heartbeats
    worker_lost_after: float = 10.0  # seconds without a heartbeat before others recover its tasks
    worker_fetch_timeout: float = 1.0  # seconds a child blocks on BLMOVE before looking round
    worker_send_task_events: bool = True  # task events on a capped stream (Celery: False)
    events_max_length: int = 10_000  # events kept in the stream (approximately)
    key_prefix: str = "asyncq"  # hash tag and prefix of every Redis key
    api_max_content_length: int = 1024 * 1024  # bytes; larger REST bodies get 413
    api_allow_any_queue: bool = False  # True: REST clients may name queues the app does not know
    timezone: str = "UTC"  # how naive ETA datetimes are read (an IANA name, as in Celery)
    enable_utc: bool = True  # accepted as in Celery; asyncq keeps every time in UTC
    include: tuple[str, ...] = ()  # task modules a worker imports at start-up
    imports: tuple[str, ...] = ()  # likewise (Celery's older name for the same idea)
    task_default_rate_limit: str = ""  # '10/s', '100/m', '1000/h'; '' = no limit
    worker_disable_rate_limits: bool = False  # True: run every task at once, limits or not
    beat_schedule: dict[str, Any] = dataclasses.field(default_factory=dict)  # periodic tasks
    task_always_eager: bool = False  # run tasks in the calling process, as apply() does
    task_eager_propagates: bool = False  # eager: re-raise a task's exception in the caller
    # Celery names asyncq accepts but does not use: name -> value (listed at start-up).
    not_used: dict[str, Any] = dataclasses.field(default_factory=dict)

    def update(self, values: Any = None, **more: Any) -> None:
        for name, value in {**dict(values or {}), **more}.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _FIELDS and name in CELERY_SETTINGS:
            self.not_used[name] = value
            return
        super().__setattr__(name, _checked(name, value))

    def __getattr__(self, name: str) -> Any:
        """A Celery setting asyncq does not use reads back as set (None if never set)."""
        if name in CELERY_SETTINGS:
            return self.__dict__.get("not_used", {}).get(name)
        raise AttributeError(f"no setting {name!r}")

    # Celery's app.conf is also a mapping.
    def __getitem__(self, name: str) -> Any:
        if name not in _FIELDS and name not in CELERY_SETTINGS:
            raise KeyError(name)
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in _FIELDS or name in self.not_used)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self else default

    def setdefault(self, name: str, value: Any) -> Any:
        if name not in self or (name in _FIELDS and getattr(self, name) == _default(name)):
            self[name] = value
        return self[name]

    @property
    def broker(self) -> str:
        return self.broker_url or os.environ.get("ASYNCQ_BROKER_URL") or DEFAULT_BROKER_URL


_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def _default(name: str) -> Any:
    field = _FIELDS[name]
    return field.default_factory() if field.default is dataclasses.MISSING \
        and field.default_factory is not dataclasses.MISSING else field.default


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _checked(name: str, value: Any) -> Any:
    """Refuse unknown names (with a suggestion) and values of the wrong kind."""
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, [*_FIELDS, *CELERY_SETTINGS], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"unknown setting {name!r}{hint}")
    if name in _CONVERT:
        value = _CONVERT[name](value)
    if name == "task_default_rate_limit" and value:
        rate_per_second(value)  # a malformed limit is an error now, not in a worker
    if isinstance(value, timedelta):
        value = int(value.total_seconds())
    default = _FIELDS[name].default
    expected = dict if default is dataclasses.MISSING else type(default)
    if expected is tuple and isinstance(value, list | tuple):
        value = tuple(value)
    if value is None and expected in (int, float, str):
        value = expected()  # Celery writes None for "no limit" / "not set"
    fits = {bool: (bool,), int: (int,), float: (int, float), str: (str,),
            dict: (dict,), tuple: (tuple,)}.get(expected)
    if fits and (not isinstance(value, fits) or (expected is not bool and isinstance(value, bool))):
        raise ConfigurationError(f"{name}={value!r}: expected a {expected.__name__}")
    if name in ("task_serializer", "result_serializer") and value != "json":
        raise ConfigurationError(f"{name}={value!r}: asyncq speaks JSON only, never pickle")
    if name == "accept_content":
        value = tuple(value)
        if set(value) - {"json", "application/json"}:
            raise ConfigurationError(f"accept_content={value!r}: asyncq accepts JSON only")
    return value


def queue_names(queues: Any) -> tuple[str, ...]:
    """``task_queues`` as names: Celery writes kombu ``Queue`` objects (their ``name``
    counts), or a dict keyed by name; a plain name works too."""
    if isinstance(queues, str):
        queues = (queues,)
    names = []
    for queue in queues or ():
        name = queue if isinstance(queue, str) else getattr(queue, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"task_queues: {queue!r} is neither a queue name nor an "
                                     "object with a name (such as kombu's Queue)")
        names.append(name)
    return tuple(names)


def _time_zone_name(value: Any) -> str:
    """An IANA time zone name (``'Europe/London'``) that this machine knows."""
    name = str(getattr(value, "key", value) or "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"timezone={value!r}: not a time zone name this machine "
                                 "knows, such as 'Europe/London' or 'UTC'") from None
    return name


# Settings given in more than one form, each to its one form.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "include": _names, "imports": _names, "task_queues": queue_names,
    "timezone": _time_zone_name}

_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_per_second(rate: str | float) -> float:
    """Celery's rate limit forms: ``'10/s'``, ``'100/m'``, ``'1000/h'``, or a number of
    tasks a second; 0 means no limit."""
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        return rate_per_second(f"{rate}/s")
    count, _, unit = str(rate).strip().partition("/")
    try:
        per_second = float(count) / _RATE_UNITS[unit.strip() or "s"]
    except (ValueError, KeyError):
        raise ConfigurationError(f"rate limit {rate!r}: write it as '10/s', '100/m' or "
                                 "'1000/h'") from None
    if not math.isfinite(per_second) or per_second < 0:
        raise ConfigurationError(f"rate limit {rate!r}: not a finite, positive rate")
    return per_second

"""Damaged data in Redis: skipped, and told once.

Redis may hold what no asyncq wrote: a registry entry that is not JSON, a
counter that is not a number, an event whose time is not a time, a key of the
wrong type (a string where a hash belongs). Whoever reads what asyncq keeps
for recovery and watching (``asyncq.recovery``, ``asyncq.monitor``) skips such
an entry and goes on with the rest: one bad entry must not stop the recovery
of every dead worker, nor turn /inspect into a 500.

``skip`` logs a skipped entry once per process, and no more than
``LINES_PER_MINUTE`` new ones a minute, so that a reader running every tick
does not flood the log; it returns the entry, for views that show what they
left out. The small parsers below raise ValueError for anything damaged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import ResponseError

log = logging.getLogger("asyncq.damage")

TOLD_MAX = 10_000  # skipped entries a process remembers having logged (oldest forgotten)
LINES_PER_MINUTE = 20  # new lines at most; the rest are logged in a later minute
BIGGEST_COUNT = 2**63 - 1  # what HINCRBY can hold


@dataclass(frozen=True)
class Skipped:
    """A damaged entry a reader left out: its key, the entry in it (a hash field, a
    stream id; '' for the whole key, of the wrong type) and what is wrong with it."""

    key: str
    entry: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "entry": self.entry, "reason": self.reason}


class _Told:
    """Which skipped entries this process has logged, and how many lines this minute."""

    def __init__(self) -> None:
        self.seen: dict[Skipped, None] = {}  # insertion-ordered: the oldest goes first
        self.minute_began = -math.inf
        self.lines = 0

    def first_time(self, skipped: Skipped) -> bool:
        if skipped in self.seen:
            return False
        now = time.monotonic()
        if now - self.minute_began >= 60:
            self.minute_began, self.lines = now, 0
        if self.lines >= LINES_PER_MINUTE:
            return False  # not marked as told: it gets its line in a later minute
        self.lines += 1
        if len(self.seen) >= TOLD_MAX:
            del self.seen[next(iter(self.seen))]
        self.seen[skipped] = None
        return True


_told = _Told()


def skip(key: str, entry: str, reason: str, exc_info: bool = False) -> Skipped:
    """Note that a reader left out a damaged entry; logged the first time only (with the
    exception being handled, when ``exc_info``)."""
    skipped = Skipped(key, entry, reason)
    if _told.first_time(skipped):
        where = f"entry {entry!r} of {key}" if entry else key
        log.warning("skipped damaged data in Redis: %s: %s", where, reason, exc_info=exc_info)
    return skipped


def is_wrong_type(exc: BaseException) -> bool:
    """Whether Redis refused a command because the key holds another type of value (the
    error's text may be wrapped: a pipeline names the command, a script its line)."""
    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


def wrong_type(exc: BaseException) -> str:
    """The reason to give for a key of the wrong type; re-raises any other error."""
    if not is_wrong_type(exc):
        raise exc
    return "the key holds another type of value than asyncq keeps there"


def whole(text: str | None) -> int:
    """A count as Redis keeps it: a whole number from 0 to 2**63-1, in ASCII digits."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 19 \
            or int(text) > BIGGEST_COUNT:
        raise ValueError(f"{shown(text)} is not a count")
    return int(text)


def finite(text: str | None) -> float:
    """A finite number (seconds, a Unix time), written as Python or Redis writes one."""
    try:
        value = float(text) if text is not None and len(text) <= 64 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{shown(text)} is not a number")
    return value


def shown(text: str | None, width: int = 40) -> str:
    """A damaged value for a log line: quoted, and cut short."""
    return repr(text if text is None or len(text) <= width else text[:width] + "...")

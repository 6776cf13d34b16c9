"""Riding out a Redis outage: log it once, back off (capped), say when it ends.

Every Redis step of a worker goes through ``Outage.run``: a child's steps for a
task it has taken (retried until Redis answers: a result computed during an
outage is stored once Redis is back), the supervisor's recovery (retried until
a cold shutdown), and its housekeeping (one try per tick: the next tick tries
again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import RedisClusterException

from asyncq.connection import TRANSIENT_ERRORS, is_refusal, is_transient

# What redis-py raises while Redis is down, restarting or still loading its data, a
# Sentinel-managed master is failing over, or a cluster node is failing or resharding.
# RedisClusterException also covers a cluster with no node answering ("Redis
# Cluster cannot be connected"), which redis-py raises outside its RedisError tree;
# the same class names keys in two slots, which asyncq's scripts never do.
REDIS_DOWN: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, RedisClusterException)

T = TypeVar("T")


class GaveUp(Exception):
    """``Outage.run`` stopped trying: Redis was still away when its ``pause`` said stop."""


def sleep(delay: float) -> bool:
    """The default pause between tries: sleep the backoff, then try again."""
    time.sleep(delay)
    return True


def back_off(delay: float) -> bool:
    """A pause that sleeps the backoff, then gives up: the caller's own loop tries again."""
    time.sleep(delay)
    return False


def no_second_try(delay: float) -> bool:
    return False


class Outage:
    """Tracks one process's view of Redis being unreachable."""

    def __init__(self, log: logging.Logger, first_delay: float = 0.2, max_delay: float = 2.0):
        self.log = log
        self.first_delay = first_delay
        self.max_delay = max_delay  # kept short so work resumes soon after Redis returns
        self.since: float | None = None
        self.delay = first_delay
        self.refusal_told = -60.0  # when a refusal (full, busy) was last logged

    def run(self, step: Callable[[], T], pause: Callable[[float], bool] = sleep) -> T:
        """Run ``step``, a Redis step, until Redis answers; returns what it returns.

        While Redis is away (``connection.is_transient``: a wrong password is not an
        outage) or refuses for now (``is_refusal``: full, or busy with a script),
        each failure is noted and ``pause(backoff)`` waits before the next try; when
        ``pause`` returns False, GaveUp is raised instead.
        """
        while True:
            try:
                value = step()
            except Exception as exc:  # a cluster client that finds no node raises its own kind
                if not (is_transient(exc) or is_refusal(exc)):
                    raise
                if not pause(self.failed(exc)):
                    raise GaveUp from exc
                continue
            self.ok()
            return value

    def once(self, step: Callable[[], object]) -> bool:
        """One try of ``step``; False if Redis was away (noted, and logged once)."""
        try:
            self.run(step, pause=no_second_try)
        except GaveUp:
            return False
        return True

    def failed(self, exc: Exception) -> float:
        """Note a failed call; returns how long to wait before the next try."""
        if is_refusal(exc):  # reads still work meanwhile: told once a minute, not per call
            if time.monotonic() - self.refusal_told >= 60.0:
                self.refusal_told = time.monotonic()
                self.log.error("Redis refused (%s); retrying with backoff while it lasts", exc)
            return self.max_delay
        if self.since is None:
            self.since = time.monotonic()
            self.delay = self.first_delay
            self.log.error("Redis unreachable (%s); retrying with backoff", exc)
        else:
            self.delay = min(self.delay * 2, self.max_delay)
        return self.delay

    def ok(self) -> None:
        """Note a call that worked; logs the end of an outage."""
        if self.since is not None:
            self.log.warning("Redis is back after %.1fs", time.monotonic() - self.since)
            self.since = None

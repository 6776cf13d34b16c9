"""Riding out a Redis outage: log it once, back off (capped), say when it ends."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisClusterException

from asyncq.connection import TRANSIENT_ERRORS

# What redis-py raises while Redis is down, restarting or still loading its data, a
# Sentinel-managed master is failing over, or a cluster node is failing or resharding.
# RedisClusterException also covers a cluster with no node answering ("Redis
# Cluster cannot be connected"), which redis-py raises outside its RedisError tree;
# the same class names keys in two slots, which asyncq's scripts never do.
REDIS_DOWN: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, RedisClusterException)


class Outage:
    """Tracks one process's view of Redis being unreachable."""

    def __init__(self, log: logging.Logger, first_delay: float = 0.2, max_delay: float = 2.0):
        self.log = log
        self.first_delay = first_delay
        self.max_delay = max_delay  # kept short so work resumes soon after Redis returns
        self.since: float | None = None
        self.delay = first_delay

    def failed(self, exc: Exception) -> float:
        """Note a failed call; returns how long to wait before the next try."""
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

"""RQ's side of the peer rows: a no-op and a 10 ms sleep, nothing else.

Jobs go on the queue below on $BENCH_REDIS_URL with RQ's defaults (results kept for
500 s); run with ``rq worker --worker-class rq.worker.SimpleWorker --url URL QUEUE``.
"""

from __future__ import annotations

import os
import time

import redis
from rq import Queue

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "default"


def queue() -> Queue:
    return Queue(QUEUE, connection=redis.Redis.from_url(URL))


def noop():
    return None


def sleep10():
    time.sleep(0.01)
    return None

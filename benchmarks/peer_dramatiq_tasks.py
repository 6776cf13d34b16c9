"""Dramatiq's side of the peer rows: a no-op and a 10 ms sleep, nothing else.

RedisBroker on $BENCH_REDIS_URL with the Results middleware (RedisBackend on the same
Redis) and ``store_results=True``, so results are stored as asyncq and Celery store them.
Dramatiq's default middleware stays as it is. Run with
``dramatiq benchmarks.peer_dramatiq_tasks --processes P --threads T``.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "default"
RESULT_TTL_MS = 600_000  # Dramatiq's own default, written out: peers.py reads it back

backend = RedisBackend(url=URL)
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=backend, result_ttl=RESULT_TTL_MS))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop():
    return None


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def sleep10():
    time.sleep(0.01)
    return None

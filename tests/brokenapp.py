"""tests.taskapp's tasks, in children that fail at start-up while Redis holds BROKEN:
a ``worker_process_init`` receiver exits the process with status 1, as a child whose
set-up cannot work would (an exception there is only logged, as in Celery)."""

from __future__ import annotations

import os

import redis

from asyncq.signals import worker_process_init
from tests.taskapp import app

__all__ = ["app"]
BROKEN, STARTS = "brokenapp:broken", "brokenapp:starts"


@worker_process_init.connect
def fail_while_broken(**kwargs):
    client = redis.Redis.from_url(os.environ["ASYNCQ_BROKER_URL"])
    try:
        client.incr(STARTS)
        broken = client.exists(BROKEN)
    finally:
        client.close()
    if broken:
        os._exit(1)

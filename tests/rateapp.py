"""Tasks for the rate limit tests: one limited to 20 a second, one without a limit.

The broker URL comes from $ASYNCQ_BROKER_URL, which the test suite points at its
private redis-server.
"""

from __future__ import annotations

import os

from asyncq import Celery

app = Celery("rates", broker=os.environ.get("ASYNCQ_BROKER_URL"),
             worker_prefetch_multiplier=4)


@app.task(name="rates.limited", rate_limit="20/s")
def limited(i: int) -> int:
    return i


@app.task(name="rates.free")
def free(i: int) -> int:
    return i

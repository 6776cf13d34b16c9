"""The benchmark's tasks, written once against Celery's API and imported under each
system: $BENCH_SYSTEM picks ``celery`` or ``asyncq`` (only the import differs)."""

from __future__ import annotations

import os
import time

if os.environ.get("BENCH_SYSTEM") == "celery":
    from celery import Celery
else:
    from asyncq import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# The same fair settings for both: acks-late, STARTED tracked, results stored.
app = Celery("bench", broker=URL, backend=URL, task_acks_late=True, task_track_started=True,
             task_ignore_result=False)
if os.environ.get("BENCH_SYSTEM") == "celery":
    # Celery's own defaults, written out so the results can state them.
    app.conf.update(worker_prefetch_multiplier=4, broker_connection_retry_on_startup=True)
if os.environ.get("BENCH_PREFETCH"):  # a batch size other than the default, for both
    app.conf.update(worker_prefetch_multiplier=int(os.environ["BENCH_PREFETCH"]))


@app.task(name="bench.noop")
def noop():
    return None


@app.task(name="bench.sleep10")
def sleep10():
    time.sleep(0.01)
    return None

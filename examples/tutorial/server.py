"""The tutorial's scenario on asyncq: a long-running task behind a REST API.

Run it all with one command (a private Redis is started when none is configured):

    asyncq -A examples.tutorial.server dev

or piece by piece, as in the tutorial:

    asyncq -A examples.tutorial.server worker --concurrency=1 --loglevel=info
    gunicorn --workers 1 --bind 127.0.0.1:5000 examples.tutorial.server:app

The task sleeps $TASK_SECONDS seconds (default 30, as in the tutorial).
"""

from __future__ import annotations

import os
import time

from asyncq import Celery
from asyncq.api import create_app

BROKER_URL = os.environ.get("ASYNCQ_BROKER_URL", "redis://localhost:6379/0")
TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "30"))

celery = Celery("async_tasks", broker=BROKER_URL, backend=BROKER_URL,
                task_ignore_result=False, task_track_started=True)


@celery.task(bind=True, name="async_tasks.long_running_task", acks_late=True)
def long_running_task(self) -> str:
    time.sleep(TASK_SECONDS)  # stands for the long-running work
    return f"done long-running task {self.request.id}"


@celery.task(bind=True, name="async_tasks.count_to")
def count_to(self, total: int, delay: float = 0.5) -> int:
    """Reports PROGRESS {"current", "total"} as it goes: GET /results/<id> shows it."""
    for current in range(1, total + 1):
        self.update_state(state="PROGRESS", meta={"current": current, "total": total})
        time.sleep(delay)
    return total


@celery.task(name="async_tasks.add")
def add(a: float, b: float) -> float:
    """A quick task for the generic routes: POST /tasks/async_tasks.add."""
    return a + b


# The tutorial's three routes for the long task, plus /tasks, /results and /health.
app = create_app(celery, routes={"async_long_running_task": long_running_task.name})

"""Periodic tasks for the scheduler tests, written as Celery code (imports renamed).

The broker URL comes from $ASYNCQ_BROKER_URL, which the test suite points at its
private redis-server.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import redis

from asyncq import Celery
from asyncq.schedules import crontab

app = Celery("beats", broker=os.environ.get("ASYNCQ_BROKER_URL"))
app.conf.beat_schedule = {
    "tick-every-second": {"task": "beats.tick", "schedule": 1.0},
    "weekday-mornings": {"task": "beats.tick", "schedule": crontab(hour=7, minute=30,
                                                                   day_of_week="mon-fri")},
}
ticks = redis.Redis.from_url(os.environ.get("ASYNCQ_BROKER_URL") or "redis://localhost")


@app.on_after_configure.connect
def setup_periodic_tasks(sender: Celery, **kwargs: object) -> None:
    sender.add_periodic_task(timedelta(hours=1), tick.s(), name="hourly")


@app.task(bind=True, name="beats.tick")
def tick(self) -> None:
    ticks.rpush("beats:ticks", f"{self.request.id} {time.time():.6f}")

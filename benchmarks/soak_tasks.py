"""Tasks for the soak run (benchmarks/soak.py). Each one books its runs in Redis,
so the run can count tasks that ran twice, or ran after their final state."""

from __future__ import annotations

import os
import signal
import time

from asyncq import Celery, states

app = Celery("soak", task_acks_late=True, worker_heartbeat_interval=1.0,
             worker_lost_after=5.0, task_redelivery_limit=5)


def book_start(task) -> None:
    client = task.app.broker.client
    if task.app.broker.status(task.request.id) in states.READY_STATES:
        client.hincrby("soak:after_final", task.request.id, 1)
    client.hincrby("soak:starts", task.request.id, 1)


def book_end(task) -> None:
    task.app.broker.client.hincrby("soak:completions", task.request.id, 1)


@app.task(bind=True, name="soak.instant")
def instant(self, n):
    book_start(self)
    book_end(self)
    return n


@app.task(bind=True, name="soak.sleepy")
def sleepy(self, ms):
    book_start(self)
    time.sleep(ms / 1000)
    book_end(self)
    return ms


@app.task(bind=True, name="soak.fail")
def fail(self, n):
    book_start(self)
    book_end(self)
    raise ValueError(f"expected failure {n}")


@app.task(bind=True, name="soak.kill_once")
def kill_once(self):
    """Kills its own child on its first delivery: must come back and succeed."""
    book_start(self)
    if self.app.broker.client.hsetnx("soak:killed_self", self.request.id, 1):
        os.kill(os.getpid(), signal.SIGKILL)
    book_end(self)
    return "survived"

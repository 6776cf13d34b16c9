"""Tasks the test suite runs in real worker processes (``asyncq -A tests.taskapp worker``).

The broker URL comes from $ASYNCQ_BROKER_URL, which the test suite points at
its private redis-server.
"""

from __future__ import annotations

import os
import signal
import time

from asyncq import Celery

# Short heartbeats so that recovery of a dead worker takes seconds in tests.
app = Celery("tests", task_track_started=True,
             worker_heartbeat_interval=float(os.environ.get("TEST_HEARTBEAT", "0.5")),
             worker_lost_after=float(os.environ.get("TEST_LOST_AFTER", "3")))


@app.task(name="tests.add")
def add(a, b):
    return a + b


@app.task(name="tests.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="tests.unserializable")
def unserializable():
    return {1, 2, 3}


@app.task(bind=True, name="tests.progress")
def progress(self, total):
    for current in range(1, total + 1):
        self.update_state(state="PROGRESS", meta={"current": current, "total": total})
    return {"done": total, "id": self.request.id, "args": self.request.args}


def _announce_pid(task):
    task.update_state(state="PROGRESS", meta={"pid": os.getpid()})


@app.task(bind=True, name="tests.block", acks_late=True)
def block(self, key, seconds=30.0):
    """Report its pid, then wait until ``key`` appears in Redis (or ``seconds`` pass)."""
    _announce_pid(self)
    client = self.app.broker.client
    deadline = time.monotonic() + seconds
    while not client.exists(key) and time.monotonic() < deadline:
        client.blpop([key + ":never"], timeout=0.05)
    return "released"


@app.task(bind=True, name="tests.block_early", acks_late=False)
def block_early(self, key, seconds=30.0):
    return block.run(self, key, seconds)


@app.task(bind=True, name="tests.sleep", task_acks_late=True)
def sleep(self, seconds):
    _announce_pid(self)
    time.sleep(seconds)
    return seconds


@app.task(bind=True, name="tests.suicide", acks_late=True)
def suicide(self):
    """Kills its own process every time: a poison task."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True, name="tests.kill_once", acks_late=True)
def kill_once(self, marker):
    """Kills its process on the first delivery only (``marker`` remembers it in Redis)."""
    if self.app.broker.client.set(marker, 1, nx=True):
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def _wait_for_key(task, key, seconds):
    """Return once ``key`` exists in Redis, or after ``seconds``; polls every 50 ms."""
    client = task.app.broker.client
    deadline = time.monotonic() + seconds
    while not client.exists(key) and time.monotonic() < deadline:
        client.blpop([key + ":never"], timeout=0.05)


@app.task(bind=True, name="tests.hold")
def hold(self, key, seconds=10.0):
    """Wait for ``key`` like tests.block, but without update_state: the record stays STARTED."""
    _wait_for_key(self, key, seconds)
    return "released"


@app.task(bind=True, name="tests.report")
def report(self, key, meta, seconds=10.0):
    """Put the task in the custom state PROGRESS with ``meta``, then wait for ``key``."""
    self.update_state(state="PROGRESS", meta=meta)
    _wait_for_key(self, key, seconds)
    return "released"


@app.task(bind=True, name="tests.count")
def count(self, key):
    """INCR ``key``: tells how many times the task's body ran."""
    return self.app.broker.client.incr(key)


@app.task(bind=True, name="tests.whoami")
def whoami(self, *args, **kwargs):
    """Return what the bound task sees as ``self.request``."""
    request = self.request
    return {"id": request.id, "args": request.args, "kwargs": request.kwargs,
            "hostname": request.hostname, "called_directly": request.called_directly,
            "routing_key": request.delivery_info.get("routing_key")}

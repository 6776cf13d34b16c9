"""Tasks for tests/test_features.py, run in real workers (``asyncq -A tests.featureapp worker``).

The broker URL comes from $ASYNCQ_BROKER_URL, which the test suite points at its
private redis-server. Tasks that the tests must observe leave traces in Redis
(run counters, timestamps, tags), never in memory.
"""

from __future__ import annotations

import json
import os
import time

from asyncq import Celery

# Heartbeats (and so the moving of due scheduled messages) every 0.5 s; results kept 60 s;
# every task under features.img.* goes to the queue "images".
app = Celery("features", worker_heartbeat_interval=0.5, result_expires=60,
             task_routes={"features.img.*": "images"})


class Boom(Exception):
    """The error of features.boom: a class of our own, to check the type survives the trip."""


class Flaky(Exception):
    """The reason features.flaky gives for asking another try."""


def _redis(task):
    return task.app.broker.client


@app.task(name="features.add")
def add(a, b):
    return a + b


@app.task(name="features.mul")
def mul(a, b):
    return a * b


@app.task(name="features.total")
def total(values):
    return sum(values)


@app.task(name="features.boom")
def boom(*args):
    raise Boom(f"boom with {list(args)}")


@app.task(bind=True, name="features.mark")
def mark(self, value, key):
    """RPUSH ``value`` to the list ``key`` (the order tasks ran in); returns ``value``."""
    _redis(self).rpush(key, value)
    return value


@app.task(bind=True, name="features.stamp")
def stamp(self, key):
    """RPUSH the time it ran (Unix seconds) to the list ``key``: how many runs, and when."""
    now = time.time()
    _redis(self).rpush(key, f"{now:.6f}")
    return now


@app.task(bind=True, name="features.flaky", max_retries=2)
def flaky(self, key, succeed_on, countdown=0.1):
    """Count its tries in ``key``; ask for a retry until try number ``succeed_on``."""
    tries = _redis(self).incr(key)
    if tries < succeed_on:
        raise self.retry(exc=Flaky(f"try {tries} failed"), countdown=countdown)
    return tries


@app.task(bind=True, name="features.backing_off", autoretry_for=(KeyError,),
          retry_backoff=0.05, retry_backoff_max=0.4, retry_jitter=True, max_retries=6)
def backing_off(self, key, succeed_on):
    """Raise KeyError (autoretried) until try ``succeed_on``. Each try appends to ``key``:
    its retry count, when it ran, and the eta its record held (when it was due)."""
    client = _redis(self)
    eta = client.hget(self.app.keys.task(self.request.id), "eta")
    tries = client.rpush(key, json.dumps({"retries": self.request.retries, "at": time.time(),
                                          "eta": float(eta) if eta else None}))
    if tries < succeed_on:
        raise KeyError(f"try {tries}")
    return tries


@app.task(bind=True, name="features.block")
def block(self, key, seconds=30.0):
    """Report its pid (PROGRESS meta), then wait until ``key`` exists (or ``seconds`` pass)."""
    self.update_state(state="PROGRESS", meta={"pid": os.getpid()})
    client = _redis(self)
    deadline = time.monotonic() + seconds
    while not client.exists(key) and time.monotonic() < deadline:
        client.blpop([key + ":never"], timeout=0.05)
    return "released"


@app.task(name="features.getpid")
def getpid():
    return os.getpid()


@app.task(bind=True, name="features.where")
def where(self):
    """Which worker ran it, from which queue."""
    return {"worker": self.request.hostname,
            "queue": self.request.delivery_info.get("routing_key")}


@app.task(bind=True, name="features.img.resize")
def resize(self, size):
    """Routed to the queue "images" by the app's task_routes."""
    return {"size": size, **where.__wrapped__(self)}


@app.task(bind=True, name="features.quiet", ignore_result=True)
def quiet(self, key):
    """INCR ``key``; its result is not kept."""
    return _redis(self).incr(key)

"""Tasks for tests/test_canvas.py and tests/test_workflow_endings.py, run in real workers
(``asyncq -A tests.canvasapp worker``), written as a Celery 5 user writes them.

The broker URL comes from $ASYNCQ_BROKER_URL, which the test suite points at its
private redis-server. What the tests must observe (which errbacks ran, with what; how
many times a task was delivered; the order steps ran in) is left in Redis, never in
memory: the tests read it there and wait on it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from asyncq import Celery

ERRBACKS = "canvas:errbacks"  # one JSON entry per errback call, in the order they ran
CRASHES = "canvas:crashes"  # crash_after_store notes here what it saw just before dying


def deliveries_key(task_id: str) -> str:
    """How many times a task of this module was delivered (INCR'd on each run)."""
    return f"canvas:deliveries:{task_id}"


# Heartbeats every 0.5 s (revokes with terminate are acted on at the next one), a dead
# worker's heartbeat lapses after 3 s, an acks-late task whose child dies is delivered
# once more and then fails, and a child takes one message at a time (so a message
# behind a running task stays in its queue).
app = Celery("canvas", worker_heartbeat_interval=0.5, worker_lost_after=3,
             task_redelivery_limit=1, worker_prefetch_multiplier=1, result_expires=120)


class Boom(Exception):
    """The error of canvas.boom: a class of our own, to check the type survives the trip."""


def _redis():
    return app.broker.client


def _count_delivery(task) -> int:
    return _redis().incr(deliveries_key(task.request.id))


# -- plain work -------------------------------------------------------------------

@app.task(name="canvas.add")
def add(a, b):
    return a + b


@app.task(name="canvas.mul")
def mul(a, b):
    return a * b


@app.task(name="canvas.xsum")
def xsum(values):
    return sum(values)


@app.task(name="canvas.identity")
def identity(value):
    return value


@app.task(name="canvas.add_to_all")
def add_to_all(values, extra):
    """[v + extra for each v]: with lists, appends ``extra`` to each list."""
    return [value + extra for value in values]


@app.task(name="canvas.mark")
def mark(value, key):
    """RPUSH ``value`` (as JSON) to the list ``key`` (which steps ran, in what order);
    returns ``value``."""
    _redis().rpush(key, json.dumps(value))
    return value


@app.task(bind=True, name="canvas.where")
def where(self):
    """The queue its message came from."""
    return self.request.delivery_info.get("routing_key")


@app.task(name="canvas.boom")
def boom(*args):
    raise Boom(f"boom with {list(args)}")


@app.task(name="canvas.quiet", ignore_result=True)
def quiet(value):
    """A task whose result is not kept: it cannot be a chord member."""
    return value


@app.task(name="canvas.sleepy")
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True, name="canvas.block")
def block(self, gate, seconds=30.0):
    """Report its pid (PROGRESS meta), then wait until the key ``gate`` exists (or
    ``seconds`` pass); returns "released". Early-acked (the default)."""
    self.update_state(state="PROGRESS", meta={"pid": os.getpid()})
    client = _redis()
    deadline = time.monotonic() + seconds
    while not client.exists(gate) and time.monotonic() < deadline:
        client.blpop([gate + ":never"], timeout=0.05)
    return "released"


# -- ways for a step to end other than by returning or raising ------------------------

@app.task(bind=True, name="canvas.limited", time_limit=1)
def limited(self, *args):
    """Report its pid, then sleep past its 1 s hard time limit."""
    self.update_state(state="PROGRESS", meta={"pid": os.getpid()})
    time.sleep(30)
    return "not killed"


@app.task(bind=True, name="canvas.suicide", acks_late=True)
def suicide(self, *args):
    """Count the delivery, then SIGKILL its own child, every time: a lost child, again and
    again, until the redelivery limit ends it FAILURE WorkerLostError."""
    _count_delivery(self)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # not reached


@app.task(bind=True, name="canvas.crash_after_store")
def crash_after_store(self, value):
    """Return ``value``, and SIGKILL this child at its first write to Redis made once its
    own final state is stored: between storing the step's state and applying what follows
    it (the next step of a chain, a chord's count), or, where the broker does both at
    once, right after. No hook or signal is involved: the child watches its own socket
    writes (a profile function on ``socket.sendall``) and, before each one, reads its
    task's state on Redis."""
    _count_delivery(self)
    task_id = self.request.id

    def before_each_call(frame, event, arg):
        if event != "c_call" or getattr(arg, "__name__", "") != "sendall":
            return
        state = app.AsyncResult(task_id).state  # profiling is off inside this function
        if state in ("SUCCESS", "FAILURE", "REVOKED", "REJECTED"):
            _redis().rpush(CRASHES, json.dumps({"id": task_id, "state": state}))
            os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(before_each_call)
    return value


# -- errbacks: they record how they were called ---------------------------------------

@app.task(name="canvas.errback_old")
def errback_old(task_id):
    """Celery's old style: an errback of one argument is sent as a task, with the failed
    task's id."""
    _redis().rpush(ERRBACKS, json.dumps({"style": "old", "id": task_id}))
    return task_id


@app.task(name="canvas.errback_new")
def errback_new(request, exc, traceback):
    """Celery's new style: an errback of (request, exc, traceback) is called with the
    failed task's request, its exception and its traceback."""
    _redis().rpush(ERRBACKS, json.dumps({
        "style": "new", "id": request.id,
        "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "is_exception": isinstance(exc, BaseException), "exc": str(exc),
        "traceback": traceback if isinstance(traceback, str) else repr(traceback)}))
    return request.id


@app.task(name="canvas.quiet_boom", ignore_result=True)
def quiet_boom(*args):
    """A failing task whose result is not kept: its errbacks still learn its error."""
    raise Boom("quietly")

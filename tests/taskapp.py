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
             worker_lost_after=float(os.environ.get("TEST_LOST_AFTER", "3")),
             worker_prefetch_multiplier=int(os.environ.get("TEST_PREFETCH", "4")),
             broker_allow_eviction=os.environ.get("TEST_ALLOW_EVICTION") == "1")


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
    return block.__wrapped__(self, key, seconds)


@app.task(name="tests.nap", task_acks_late=True)
def nap(seconds):
    """Sleep without touching Redis (tests.sleep reports its pid through Redis)."""
    time.sleep(seconds)
    return seconds


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


@app.task(bind=True, name="tests.tally", acks_late=True)
def tally(self, gate, completions, seconds=0.0, timeout=30.0):
    """Report its pid, work ``seconds``, wait until ``gate`` or ``<gate>:<its id>`` exists,
    then count one completion in the hash ``completions`` (field: its id), right before
    returning its id. Acks-late."""
    _announce_pid(self)
    time.sleep(seconds)
    client = self.app.broker.client
    own = f"{gate}:{self.request.id}"
    deadline = time.monotonic() + timeout
    while not client.exists(gate, own) and time.monotonic() < deadline:
        client.blpop([gate + ":never"], timeout=0.05)
    client.hincrby(completions, self.request.id, 1)
    return self.request.id


@app.task(bind=True, name="tests.hard_limited", acks_late=True, time_limit=1)
def hard_limited(self, seconds=10.0):
    """Report its pid, then sleep past its 1 s hard time limit. Acks-late."""
    _announce_pid(self)
    time.sleep(seconds)
    return "not killed"


@app.task(bind=True, name="tests.soft_cleanup", soft_time_limit=0.5)
def soft_cleanup(self, seconds=10.0):
    """Wait on Redis past its 0.5 s soft time limit, catch the exception and clean up."""
    from asyncq.exceptions import SoftTimeLimitExceeded

    try:
        _wait_for_key(self, f"test:never:{self.request.id}", seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(bind=True, name="tests.soft_uncaught", soft_time_limit=0.5)
def soft_uncaught(self, seconds=10.0):
    """Wait on Redis past its 0.5 s soft time limit, without catching the exception."""
    _wait_for_key(self, f"test:never:{self.request.id}", seconds)
    return "not interrupted"


@app.task(name="tests.getpid")
def getpid():
    """The pid of the child process that ran it."""
    return os.getpid()

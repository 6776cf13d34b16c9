"""Tasks for tests/test_fencing.py, run in real workers (``asyncq -A tests.fenceapp worker``).

Each run of ``tracked`` leaves its trace in Redis: how many runs began and how many
ran to the end, per task id, and the most runs of one task ever at once. Settings
come from the environment so a test can ask for the defaults (an empty value).
"""

from __future__ import annotations

import os
import time
import uuid

from asyncq import Celery


def _setting(name: str, default: str, kind: type = float) -> dict[str, float]:
    value = os.environ.get(f"TEST_{name.upper()}", default)
    return {name: kind(value)} if value else {}


app = Celery("fence", task_acks_late=os.environ.get("TEST_ACKS_LATE", "1") == "1",
             **_setting("worker_heartbeat_interval", "0.5"),
             **_setting("worker_lost_after", "3"),
             **_setting("worker_prefetch_multiplier", "4", int))


def began_key(task_id: str) -> str:
    return f"fence:began:{task_id}"


def ended_key(task_id: str) -> str:
    return f"fence:ended:{task_id}"


def beats_key(task_id: str) -> str:
    return f"fence:beats:{task_id}"


OVERLAPS = "fence:overlaps"  # ids of tasks two runs of which were seen running at once
STEP = 0.05


@app.task(bind=True, name="fence.tracked")
def tracked(self, seconds: float) -> int:
    """Work ``seconds`` in small steps; each step notes this run as alive and looks
    for another run of the same task id alive at the same moment. After a freeze it
    goes on with the steps it has left, as real work would."""
    redis = app.broker.client
    task_id, run = self.request.id, f"{os.getpid()}:{uuid.uuid4()}"
    redis.incr(began_key(task_id))
    for _ in range(round(seconds / STEP)):  # steps, not a deadline: a stopped run goes on
        now = time.time()
        redis.hset(beats_key(task_id), run, now)
        others = {k: float(v) for k, v in redis.hgetall(beats_key(task_id)).items()
                  if k.decode() != run}
        if any(now - beat < 3 * STEP for beat in others.values()):
            redis.sadd(OVERLAPS, task_id)
        time.sleep(STEP)
    redis.incr(ended_key(task_id))
    return os.getpid()

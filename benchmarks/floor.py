"""The floor: a bare consumer that keeps the shape of asyncq's guarantees, and nothing
else, draining the same no-op tasks: ``python -m benchmarks.floor``.

What asyncq can at best reach on this machine, with its Redis data model, in Python
and redis-py: the rest of a drain's cost is asyncq's own code. Per task, as asyncq:

* a PENDING record (a hash with a TTL), written before the message is queued;
* ``FETCH``: one script moves up to K messages from the queue into the consumer's
  in-flight list and marks each task STARTED (unless its record is final already);
* the task runs: the JSON message decoded, the function looked up and called, its
  result encoded;
* ``FINISH``: one script, for each of the K finished tasks, stores SUCCESS with the
  result unless the record is final, sets the record's TTL, publishes a notice on
  the task's channel and removes the message from the in-flight list.

Two consumer processes, K = the batch (asyncq's counterpart is
``worker_prefetch_multiplier``). Left out: task events and counters, run
ownership (fencing), canvas follow-ups, heartbeats and recovery, signals, retries,
time limits, priorities, the cluster key layout (the scripts build record keys from
the ids they read, which only a single Redis allows) and a supervisor process.

Timing as for asyncq (benchmarks/measure.py): from the first task's final state to
the last one's (``finished_at`` in the records), and from the consumers' launch.
Commands per task: those the consumers sent (counted by them: their script calls)
and all that Redis executed (INFO commandstats, the scripts' inner calls included).
CPU per task: the consumers' own (from their first fetch on) and redis-server's (INFO
cpu), to set beside a worker's (benchmarks/profile.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.measure import LOG_DIR, ROOT, calls_per_task, command_calls

PREFIX = "floor"
QUEUE = f"{PREFIX}:queue"
RECORD_TTL = 86_400  # seconds a PENDING or STARTED record lives (asyncq's record_ttl)
RESULT_TTL = 86_400  # seconds a final record lives (asyncq's result_expires)
BATCHES = (1, 4, 16)
CONSUMERS = 2
TIMEOUT = 300.0  # seconds a drain may take at most


def record(task_id: str) -> str:
    return f"{PREFIX}:task:{task_id}"


def inflight(consumer: int) -> str:
    return f"{PREFIX}:inflight:{consumer}"


# KEYS[1] the queue, KEYS[2] the consumer's in-flight list
# ARGV[1] how many messages to take at most (K), ARGV[2] now, ARGV[3] the consumer
# Returns the messages taken, oldest first.
FETCH = """
local final = {SUCCESS = true, FAILURE = true, REVOKED = true, REJECTED = true}
local taken = {}
for i = 1, tonumber(ARGV[1]) do
  local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not raw then break end
  local record = 'floor:task:' .. cjson.decode(raw)['id']
  if not final[redis.call('HGET', record, 'status')] then
    redis.call('HSET', record, 'status', 'STARTED', 'worker', ARGV[3], 'started_at', ARGV[2])
  end
  taken[i] = raw
end
return taken
"""

# KEYS[1] the consumer's in-flight list
# ARGV[1] now, ARGV[2] the final record's TTL (seconds),
# ARGV[3..] per finished task: its id, its message, its result (JSON)
FINISH = """
local final = {SUCCESS = true, FAILURE = true, REVOKED = true, REJECTED = true}
for i = 3, #ARGV, 3 do
  local record = 'floor:task:' .. ARGV[i]
  if not final[redis.call('HGET', record, 'status')] then
    redis.call('HSET', record, 'status', 'SUCCESS', 'result', ARGV[i + 2],
               'finished_at', ARGV[1])
    redis.call('EXPIRE', record, ARGV[2])
    redis.call('PUBLISH', 'floor:done:' .. ARGV[i], 'SUCCESS ' .. ARGV[i + 2])
  end
  redis.call('LREM', KEYS[1], 1, ARGV[i + 1])
end
return 1
"""


def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def noop() -> None:
    return None


TASKS: dict[str, Callable[..., Any]] = {"bench.noop": noop}


# -- the consumer (a process of its own) --------------------------------------
def consume(url: str, batch: int, consumer: int) -> tuple[int, float]:
    """Take, run and finish batches until the queue is empty; returns the number of
    commands sent (the scripts are loaded beforehand by the parent) and the CPU time
    spent meanwhile (seconds; start-up left out)."""
    client = redis.Redis.from_url(url)
    client.ping()  # connected before the clock starts
    fetch, finish, mine = sha(FETCH), sha(FINISH), inflight(consumer)
    name = f"floor-{consumer}"
    sent, cpu = 0, time.process_time()
    while True:
        taken = client.evalsha(fetch, 2, QUEUE, mine, batch, f"{time.time():.6f}", name)
        sent += 1
        if not taken:
            return sent, time.process_time() - cpu
        done: list[str | bytes] = []
        for raw in taken:
            body = json.loads(raw)
            result = TASKS[body["task"]](*body["args"], **body["kwargs"])
            done += [body["id"], raw, json.dumps(result)]
        client.evalsha(finish, 1, mine, f"{time.time():.6f}", RESULT_TTL, *done)
        sent += 1


# -- the drain ------------------------------------------------------------------
def enqueue(client: redis.Redis, n: int) -> list[str]:
    """N no-op tasks, each a PENDING record then its message (as asyncq's enqueue)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for task_id in ids[start:start + 1000]:
            pipe.hset(record(task_id), mapping={"status": "PENDING", "task": "bench.noop",
                                                "queue": "celery",
                                                "submitted_at": f"{time.time():.6f}"})
            pipe.expire(record(task_id), RECORD_TTL)
            pipe.lpush(QUEUE, json.dumps({"id": task_id, "task": "bench.noop", "args": [],
                                          "kwargs": {}, "queue": "celery"}))
        pipe.execute()
    return ids


def finished_at(client: redis.Redis, ids: list[str]) -> list[float]:
    """Every task's finish time; raises if one is not SUCCESS or a message is left."""
    times: list[float] = []
    for start in range(0, len(ids), 1000):
        pipe = client.pipeline(transaction=False)
        for task_id in ids[start:start + 1000]:
            pipe.hmget(record(task_id), "status", "finished_at")
        for status, when in pipe.execute():
            if status != b"SUCCESS":
                raise RuntimeError(f"floor: a task ended {status!r}, not SUCCESS")
            times.append(float(when))
    left = [client.llen(key) for key in (QUEUE, *map(inflight, range(CONSUMERS)))]
    if any(left):
        raise RuntimeError(f"floor: messages left in the queue and in-flight lists: {left}")
    return times


def drain(url: str, n: int, batch: int, consumers: int = CONSUMERS) -> dict[str, Any]:
    """N queued no-op tasks, then ``consumers`` processes taking ``batch`` at a time:
    tasks/s (first to last final state, and from launch) and commands per task."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    ids = enqueue(client, n)
    for script in (FETCH, FINISH):
        client.script_load(script)
    before, redis_cpu = command_calls(client), redis_cpu_seconds(client)
    launched = time.time()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "floor.log", "ab") as log:
        processes = [subprocess.Popen(
            [sys.executable, "-m", "benchmarks.floor", "consume", url, str(batch), str(i)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log) for i in range(consumers)]
        sent, cpu = 0, 0.0
        for process in processes:
            out, _ = process.communicate(timeout=TIMEOUT)
            if process.returncode:
                raise RuntimeError(f"a floor consumer failed; see {LOG_DIR / 'floor.log'}")
            sent += int(out.split()[0])
            cpu += float(out.split()[1])
    after = command_calls(client)  # before the INFO cpu below: only the two INFOs above count
    redis_cpu = redis_cpu_seconds(client) - redis_cpu
    executed = calls_per_task(before, after, n, own={"info": 2})
    times = finished_at(client, ids)
    client.close()
    return {"batch": batch, "tasks_per_s": n / (max(times) - min(times)),
            "with_start_per_s": n / (max(times) - launched), "sent_per_task": sent / n,
            "executed_per_task": sum(executed.values()), "executed_by_command": executed,
            "consumer_cpu_us_per_task": 1e6 * cpu / n, "redis_cpu_us_per_task": 1e6 * redis_cpu / n}


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU time redis-server has used so far (INFO cpu: user + system, seconds)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("consume", help="one consumer process (the drain starts them)")
    one.add_argument("url")
    one.add_argument("batch", type=int)
    one.add_argument("consumer", type=int)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--batch", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    if options.command == "consume":
        sent, cpu = consume(options.url, options.batch, options.consumer)
        print(sent, f"{cpu:.6f}")
        return 0
    from asyncq.cli.localredis import LocalRedis

    with tempfile.TemporaryDirectory(prefix="floor-redis-") as folder:
        server = LocalRedis(folder).start()
        try:
            for batch in options.batch:
                for _ in range(options.repeat):
                    row = drain(server.url, options.tasks, batch)
                    print(f"K={batch:<3} {row['tasks_per_s']:8,.0f} tasks/s "
                          f"({row['with_start_per_s']:,.0f} from launch); commands per task: "
                          f"{row['sent_per_task']:.2f} sent, {row['executed_per_task']:.2f} "
                          f"executed; CPU per task: consumers "
                          f"{row['consumer_cpu_us_per_task']:.0f} us, redis-server "
                          f"{row['redis_cpu_us_per_task']:.0f} us", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A hostile Redis: registry entries, counters, heartbeats and events that no asyncq
wrote, and keys of the wrong type.

Every reader leaves the damaged entry out, logs it once, and goes on with the
rest: the recovery of every other dead worker; /inspect, /inspect/tasks,
/inspect/throughput, /events, /metrics and /health (the dashboard's data); and
``asyncq inspect``, ``status`` and ``events``. Where natural the answer names
what it left out (``skipped``).

Real redis-server, real worker processes and a real gunicorn; every wait is on
an event, bounded.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncq.cli.localredis import free_port
from asyncq.message import encode_message
from tests.conftest import (
    Process,
    http,
    inflight_key,
    kill_worker_host,
    read_record,
    run_asyncq,
    task_key,
    wait_for_progress_pid,
    wait_until,
    wait_until_listening,
    worker_key,
)
from tests.taskapp import add, tally

APP = "tests.taskapp"
LAPSE = 3.0  # tests.taskapp's worker_lost_after
WORKERS = "{asyncq}:workers"  # the registry: worker id -> {"concurrency", "queues"}
COUNTERS = "{asyncq}:counters"
EVENTS = "{asyncq}:events"
QUEUES = "{asyncq}:queues"
COMPLETIONS = "test:completions"  # tests.tally counts its completions here
SKIPPED = "skipped damaged data in Redis"  # the one line a skipped entry is logged with

# Registry entries no worker wrote: none names lists that can be known.
DAMAGED_REGISTRY = {
    b"garbage@test": b"not json",
    b"listed@test": b"[1, 2]",
    b"wordy@test": b'{"concurrency": "two", "queues": ["celery"]}',
    b"greedy@test": b'{"concurrency": 200000, "queues": ["celery"]}',  # 200,000 lists
    b"\xff\xfe@test": b'{"concurrency": 1, "queues": ["celery"]}',  # not UTF-8: no keys
}


# -- helpers ----------------------------------------------------------------------

def throughput_key(seconds_ago: int) -> str:
    return f"{{asyncq}}:throughput:{(int(time.time()) - seconds_ago) // 5 * 5}"


def ended(client, kind: str) -> int:
    return sum(1 for _, fields in client.xrange(EVENTS) if fields.get(b"type") == kind.encode())


def beats(client, worker_id: str, count: int) -> None:
    """Wait until the worker has beaten ``count`` more times: each tick of its main loop
    beats, then reads the registry for dead workers."""
    seen: set[bytes | None] = {client.hget(worker_key(worker_id), "heartbeat")}

    def more() -> bool:
        seen.add(client.hget(worker_key(worker_id), "heartbeat"))
        return len(seen) > count

    wait_until(more, f"{count} more heartbeats of {worker_id}", timeout=count + 10)


def logged(process, key: str, entry: str = "") -> int:
    """How many lines of ``process`` say that entry ``entry`` of ``key`` was skipped."""
    where = f"entry {entry!r} of {key}" if entry else key
    return process.count(re.escape(f"{SKIPPED}: {where}: "))


def get(api: str, path: str) -> Any:
    status, _, body = http("GET", f"{api}{path}")
    assert status == 200, f"GET {path}: {status} {body}"
    return body


def skipped_entries(answer) -> set[tuple[str, str]]:
    return {(entry["key"], entry["entry"]) for entry in answer["skipped"]}


def metric_families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def explain(done) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def asyncq(redis_url: str, *args: str):
    return run_asyncq("-A", APP, *args, broker_url=redis_url)


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[str, Process]]:
    """gunicorn serving the REST API of tests.taskapp: its URL, and the process (whose
    output the tests read)."""
    port = free_port()
    server = Process([sys.executable, "-m", "gunicorn", "--workers", "1", "--bind",
                      f"127.0.0.1:{port}", "--no-control-socket", "asyncq.api:from_env()"],
                     env={"ASYNCQ_BROKER_URL": redis_url, "ASYNCQ_APP": APP})
    try:
        wait_until_listening(port, server)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.stop()


@pytest.fixture
def api(served: tuple[str, Process]) -> str:
    return served[0]


# -- recovery ---------------------------------------------------------------------

def test_a_dead_workers_task_is_recovered_past_damaged_registry_entries(
        app, client, start_worker, gate):
    # given entries in the worker registry that no worker wrote
    client.hset(WORKERS, mapping=DAMAGED_REGISTRY)
    # and a worker running an acks-late task, and a second worker, idle
    doomed = start_worker("--hostname=doomed@test")
    late = tally.delay(gate.key, COMPLETIONS)
    wait_for_progress_pid(late, timeout=20)
    survivor = start_worker("--hostname=survivor@test")

    # when the first worker's host dies
    kill_worker_host(doomed)
    gate.open()

    # then its acks-late task runs again on the live worker, to completion once
    assert late.get(timeout=LAPSE + 20) == late.id
    assert read_record(client, late.id)["worker"] == "survivor@test"
    assert client.hget(COMPLETIONS, late.id) == b"1"
    survivor.wait_for(r"worker doomed@test lost its heartbeat: recovered 1 task\(s\)")
    wait_until(lambda: not client.hexists(WORKERS, "doomed@test"),
               "the dead worker removed from the registry")
    # and each damaged entry was logged once, though the live worker reads the registry
    # on every heartbeat
    beats(client, "survivor@test", 4)
    for name in ("garbage@test", "listed@test", "wordy@test", "greedy@test"):
        assert logged(survivor, WORKERS, name) == 1, survivor.output
    assert survivor.count(r"the worker id is not UTF-8 text") == 1, survivor.output
    assert survivor.count(r"^Traceback") == 0, survivor.output
    # and the damaged entries are left in place, for whoever wrote them to find
    assert set(DAMAGED_REGISTRY) <= set(client.hkeys(WORKERS))


def test_a_worker_whose_own_registry_entry_is_damaged_starts_and_registers_again(
        app, client, start_worker):
    # given a registry entry under a worker's name that no worker wrote
    client.hset(WORKERS, "phoenix@test", "not json")

    # when a worker starts under that name
    worker = start_worker("--hostname=phoenix@test")

    # then it says once that it cannot know what a previous run held, registers anew
    # and runs tasks
    assert logged(worker, WORKERS, "phoenix@test") == 1, worker.output
    wait_until(lambda: client.hget(WORKERS, "phoenix@test") != b"not json",
               "the worker's own registry entry written again")
    assert json.loads(client.hget(WORKERS, "phoenix@test")) == \
        {"concurrency": 1, "queues": ["celery"]}
    assert add.delay(1, 2).get(timeout=15) == 3


# -- the REST API and the dashboard's data ------------------------------------------

def damage_entries(client) -> dict[str, str]:
    """Beside good data, one damaged entry of each kind the monitor reads; returns the
    ids of what they concern."""
    client.hset(WORKERS, "garbage@test", "not json")
    client.hset(COUNTERS, mapping={"tasks\ttests.fail\tFAILURE": "lots",
                                   "runtime\ttests.fail\t0.005": "-1",
                                   "runtime_sum\ttests.fail": "inf",
                                   "done\tghost@test": "x"})
    # a worker whose heartbeat says nothing readable, holding a task whose start is no time
    client.hset(WORKERS, "phantom@test", json.dumps({"concurrency": 1, "queues": ["celery"]}))
    client.hset(worker_key("phantom@test"), mapping={
        "id": "phantom@test", "hostname": "nowhere", "pid": "many", "concurrency": "1",
        "queues": "celery", "heartbeat": "soon", "tasks": "tests.add"})
    client.lpush(inflight_key("phantom@test"),
                 encode_message("held-1", "tests.add", [1, 2], {}, "celery"))
    client.hset(task_key("held-1"), mapping={"status": "STARTED", "task": "tests.add",
                                             "started_at": "noon", "worker": "phantom@test"})
    # an event whose time is no time, and one with a field name that is not UTF-8
    ghost = client.xadd(EVENTS, {"type": "succeeded", "id": "ghost-task", "name": "tests.add",
                                 "worker": "w", "time": "yesterday"}).decode()
    client.xadd(EVENTS, {b"\xff": b"?", b"type": b"received", b"id": b"odd-task",
                         b"name": b"tests.add", b"time": str(time.time()).encode()})
    client.hset(throughput_key(60), "SUCCESS", "many")
    # a record whose result is not JSON and whose submission time is no time
    client.hset(task_key("broken-1"), mapping={"status": "SUCCESS", "task": "tests.add",
                                               "result": "{oops", "submitted_at": "soon"})
    return {"ghost_event": ghost}


# -- the command line ---------------------------------------------------------------

# -- the writers of the counters and events -----------------------------------------

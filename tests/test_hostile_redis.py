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
    DEAD_LETTERS,
    QUEUE,
    Process,
    http,
    inflight_key,
    kill_worker_host,
    queue_key,
    read_record,
    run_asyncq,
    scheduled_key,
    stream_events,
    task_key,
    wait_for_progress_pid,
    wait_until,
    wait_until_listening,
    worker_key,
)
from tests.taskapp import add, fail, tally

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
    return sum(1 for event in stream_events(client, EVENTS) if event.get("type") == kind)


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
    damaged_slice = throughput_key(60)
    client.hset(damaged_slice, "SUCCESS", "many")
    # a record whose result is not JSON and whose submission time is no time
    client.hset(task_key("broken-1"), mapping={"status": "SUCCESS", "task": "tests.add",
                                               "result": "{oops", "submitted_at": "soon"})
    return {"ghost_event": ghost, "slice": damaged_slice}


def test_monitoring_answers_with_the_good_data_and_names_what_it_skipped(
        served, app, client, start_worker):
    api, server = served
    # given a worker that ran three additions, all counted
    start_worker()
    results = [add.delay(i, i) for i in range(3)]
    assert [result.get(timeout=15) for result in results] == [0, 2, 4]
    wait_until(lambda: ended(client, "succeeded") == 3, "3 'succeeded' events")
    # and, beside them, damaged entries of every kind the monitor reads
    ids = damage_entries(client)

    # when the dashboard's data, /metrics and the rest are asked, twice
    for _ in range(2):
        snapshot = get(api, "/inspect")
        recent = get(api, "/inspect/tasks")
        metrics = get(api, "/metrics")
        throughput = get(api, "/inspect/throughput")
        events = get(api, "/events")
        view = get(api, "/results/broken-1")
        assert get(api, "/health") == {"status": "ok", "redis": "ok", "warnings": []}

    # then /inspect shows the live worker with its count, the phantom with what can be read
    workers = {worker["id"]: worker for worker in snapshot["workers"]}
    [live] = [worker for worker in workers.values() if worker["pid"] is not None]
    assert live["alive"] and live["done"] == 3
    phantom = workers["phantom@test"]
    assert (phantom["pid"], phantom["heartbeat"], phantom["heartbeat_age"],
            phantom["concurrency"]) == (None, None, None, 1)
    assert [task["id"] for task in phantom["reserved"]] == ["held-1"]
    assert phantom["active"] == []
    assert set(workers) == {live["id"], "phantom@test"}
    assert snapshot["tasks_by_state"] == {"SUCCESS": 3}
    # and names each entry it left out
    assert skipped_entries(snapshot) == {
        (WORKERS, "garbage@test"),
        (COUNTERS, "tasks\ttests.fail\tFAILURE"), (COUNTERS, "runtime\ttests.fail\t0.005"),
        (COUNTERS, "runtime_sum\ttests.fail"), (COUNTERS, "done\tghost@test"),
        (worker_key("phantom@test"), "heartbeat"), (worker_key("phantom@test"), "pid"),
        (task_key("held-1"), "started_at")}
    # and the task list has the tasks the good events name, not the one named by no time
    assert {task["id"] for task in recent["tasks"]} == {*(r.id for r in results), "odd-task"}
    assert skipped_entries(recent) == {(EVENTS, ids["ghost_event"])}
    # and /metrics counts the good counters, and how many entries it left out
    families = metric_families(metrics)
    assert samples(families["asyncq_tasks"]) == {
        (("state", "SUCCESS"), ("task", "tests.add")): 3}
    assert samples(families["asyncq_damaged_entries"]) == {(): 8}
    # and the throughput chart leaves out the damaged slice
    assert skipped_entries(throughput) == {(ids["slice"], "SUCCESS")}
    assert round(sum(point["succeeded"] for point in throughput["series"]) * 5) == 3
    # and /events shows the stream as it is: every value is text
    assert {"id": "ghost-task", "time": "yesterday"}.items() <= \
        next(e for e in events["events"] if e["id"] == "ghost-task").items()
    # and a record's damaged fields are left out of its view
    assert view["state"] == "SUCCESS" and "result" not in view and "submitted_at" not in view
    assert {entry["entry"] for entry in view["skipped"]} == {"result", "submitted_at"}

    # and the API logged each damaged entry once, though asked twice
    assert logged(server, WORKERS, "garbage@test") == 1, server.output
    assert logged(server, EVENTS, ids["ghost_event"]) == 1, server.output
    assert logged(server, COUNTERS, "tasks\ttests.fail\tFAILURE") == 1, server.output
    assert server.count(r"^Traceback") == 0, server.output


def test_monitoring_answers_when_keys_hold_the_wrong_type(api, app, client):
    # given a message waiting, and asyncq's own keys holding the wrong type of value
    client.lpush(QUEUE, encode_message("waiting-1", "tests.add", [1, 1], {}, "celery"))
    client.set(WORKERS, "a string, not a hash")
    client.rpush(COUNTERS, "a list, not a hash")
    client.set(EVENTS, "a string, not a stream")
    client.hset(QUEUES, "a hash", "not a set")
    client.set(DEAD_LETTERS, "a string, not a list")
    client.set(queue_key("celery", 5), "a string, not a list")  # one of its priorities
    client.set(scheduled_key("celery"), "a string, not a sorted set")
    damaged_slice = throughput_key(0)
    client.rpush(damaged_slice, "a list, not a hash")

    # when every view is asked, then each answers 200 with what can be read
    snapshot = get(api, "/inspect")
    assert (snapshot["workers"], snapshot["queues"], snapshot["scheduled"],
            snapshot["dead_letters"], snapshot["tasks_by_state"]) == \
        ([], {"celery": 1}, 0, 0, {})
    # and names each key it could not read
    assert skipped_entries(snapshot) == {(WORKERS, ""), (COUNTERS, ""), (QUEUES, ""),
                                         (DEAD_LETTERS, ""), (queue_key("celery", 5), ""),
                                         (scheduled_key("celery"), "")}
    assert "another type" in snapshot["skipped"][0]["reason"]
    recent, events = get(api, "/inspect/tasks"), get(api, "/events")
    assert (recent["tasks"], events["events"]) == ([], [])
    assert skipped_entries(recent) == skipped_entries(events) == {(EVENTS, "")}
    assert skipped_entries(get(api, "/inspect/throughput")) == {(damaged_slice, "")}
    families = metric_families(get(api, "/metrics"))
    assert samples(families["asyncq_queue_length"]) == {(("queue", "celery"),): 1}
    assert samples(families["asyncq_damaged_entries"]) == {(): 6}
    assert get(api, "/health") == {"status": "ok", "redis": "ok", "warnings": []}


# -- the command line ---------------------------------------------------------------

def test_inspect_status_and_events_commands_skip_damaged_entries(
        app, client, redis_url, start_worker):
    # given a worker that ran an addition, and damaged entries beside it
    start_worker()
    good = add.delay(2, 3)
    assert good.get(timeout=15) == 5
    wait_until(lambda: ended(client, "succeeded") == 1, "the 'succeeded' event")
    client.hset(WORKERS, "garbage@test", "not json")
    client.hset(COUNTERS, "tasks\ttests.fail\tFAILURE", "lots")
    ghost = client.xadd(EVENTS, {"type": "succeeded", "id": "ghost-task", "name": "tests.add",
                                 "worker": "w", "time": "yesterday"}).decode()
    client.xadd(EVENTS, {"type": "retried", "id": "odd-task", "name": "tests.add",
                         "time": str(time.time()), "retries": "many"})
    client.hset(task_key("broken-1"), mapping={"status": "SUCCESS", "task": "tests.add",
                                               "result": "{oops", "retries": "-2"})

    # when inspect is asked, then it answers with the worker and what it left out
    done = asyncq(redis_url, "inspect", "--json")
    assert done.returncode == 0, explain(done)
    snapshot = json.loads(done.stdout)
    [worker] = snapshot["workers"]
    assert worker["alive"] and worker["done"] == 1
    assert snapshot["tasks_by_state"] == {"SUCCESS": 1}
    assert skipped_entries(snapshot) == {(WORKERS, "garbage@test"),
                                         (COUNTERS, "tasks\ttests.fail\tFAILURE")}
    assert f"{SKIPPED}: entry 'garbage@test' of {WORKERS}" in done.stderr, explain(done)
    text = asyncq(redis_url, "inspect")
    assert text.returncode == 0, explain(text)
    assert re.search(rf"^{re.escape(worker['id'])}\s+alive\s", text.stdout, re.M), explain(text)
    assert "Skipped: 2 damaged entries in Redis" in text.stdout, explain(text)
    assert f"  {WORKERS} 'garbage@test': not JSON" in text.stdout, explain(text)
    ping = asyncq(redis_url, "inspect", "ping")
    assert ping.returncode == 0 and "pong" in ping.stdout, explain(ping)

    # when events are listed, then the good ones are shown and each damaged one is told
    # once on stderr
    events = asyncq(redis_url, "events", "--no-follow")
    assert events.returncode == 0, explain(events)
    assert re.search(rf"succeeded\s+tests\.add\[{good.id}\]", events.stdout), explain(events)
    assert "ghost-task" not in events.stdout and "odd-task" not in events.stdout
    assert events.stderr.count(f"entry '{ghost}' of {EVENTS}: time: 'yesterday' is not a "
                               "number") == 1, explain(events)
    assert events.stderr.count("retries: 'many' is not a count") == 1, explain(events)
    raw = asyncq(redis_url, "events", "--no-follow", "--json")
    assert raw.returncode == 0, explain(raw)
    assert {json.loads(line)["id"] for line in raw.stdout.splitlines()} >= \
        {good.id, "ghost-task", "odd-task"}

    # when a task's status is asked, then the good record is shown as ever, and a damaged
    # one with what can be read
    assert asyncq(redis_url, "status", good.id).returncode == 0
    status = asyncq(redis_url, "status", "broken-1")
    assert status.returncode == 0, explain(status)
    assert re.search(r"^state\s+SUCCESS$", status.stdout, re.M), explain(status)
    assert f"{SKIPPED}: entry 'result' of {task_key('broken-1')}: not JSON" in status.stderr
    view = json.loads(asyncq(redis_url, "status", "broken-1", "--json").stdout)
    assert {entry["entry"] for entry in view["skipped"]} == {"result", "retries"}
    for command in (done, text, ping, events, raw, status):
        assert "Traceback" not in command.stderr, explain(command)


def test_inspect_and_events_commands_answer_when_keys_hold_the_wrong_type(
        app, client, redis_url):
    # given asyncq's registry, counters and event stream holding the wrong type of value
    client.set(WORKERS, "a string, not a hash")
    client.rpush(COUNTERS, "a list, not a hash")
    client.set(EVENTS, "a string, not a stream")

    # when inspect is asked, then it answers, naming the keys it could not read
    done = asyncq(redis_url, "inspect", "--json")
    assert done.returncode == 0, explain(done)
    assert skipped_entries(json.loads(done.stdout)) == {(WORKERS, ""), (COUNTERS, "")}
    text = asyncq(redis_url, "inspect")
    assert text.returncode == 0 and "Workers: none registered" in text.stdout, explain(text)
    # and Celery's forms find no worker, as with an empty registry
    assert asyncq(redis_url, "inspect", "ping").returncode == 69
    # and status finds no task to read in a record of the wrong type, saying why
    client.set(task_key("stringy-1"), "a string, not a hash")
    status = asyncq(redis_url, "status", "stringy-1")
    assert status.returncode == 4, explain(status)
    assert f"{SKIPPED}: {task_key('stringy-1')}: " in status.stderr, explain(status)
    # and events finds none, saying why once
    events = asyncq(redis_url, "events", "--no-follow")
    assert events.returncode == 0 and events.stdout == "", explain(events)
    assert events.stderr.count(f"{SKIPPED}: {EVENTS}: ") == 1, explain(events)
    for command in (done, text, status, events):
        assert "Traceback" not in command.stderr, explain(command)


# -- the writers of the counters and events -----------------------------------------

def test_a_worker_counts_and_records_events_past_a_damaged_counter(
        app, client, start_worker):
    # given counters that no worker can add to: one not a number, one not a float
    client.hset(COUNTERS, mapping={"tasks\ttests.add\tSUCCESS": "garbage",
                                   "runtime_sum\ttests.add": "not a float"})
    worker = start_worker()

    # when a worker runs three additions and a failure
    results = [add.delay(i, 1) for i in range(3)] + [fail.delay("no")]
    for result in results:
        result.get(timeout=15, propagate=False)
    wait_until(lambda: ended(client, "succeeded") >= 3 and ended(client, "failed") >= 1,
               "the tasks' ending events")

    # then every event is in the stream once, and every other counter counts
    assert (ended(client, "succeeded"), ended(client, "failed")) == (3, 1)
    counters = {k.decode(): v.decode() for k, v in client.hgetall(COUNTERS).items()}
    assert counters["tasks\ttests.fail\tFAILURE"] == "1"
    assert sum(int(v) for k, v in counters.items() if k.startswith("runtime\ttests.add\t")) == 3
    assert [v for k, v in counters.items() if k.startswith("done\t")] == ["4"]
    slices = [client.hgetall(key) for key in client.keys("{asyncq}:throughput:*")]
    assert sum(int(counts.get(b"SUCCESS", 0)) for counts in slices) == 3
    assert sum(int(counts.get(b"FAILURE", 0)) for counts in slices) == 1
    # and the damaged counters are left as they were, the worker saying nothing of events lost
    assert counters["tasks\ttests.add\tSUCCESS"] == "garbage"
    assert counters["runtime_sum\ttests.add"] == "not a float"
    assert worker.count("task events dropped") == 0, worker.output
    assert worker.count(r"^Traceback") == 0, worker.output

"""A hostile Redis never stops a worker: a damaged record or follow-up plan costs its
one message (set aside as a dead letter), a full Redis is waited out, and a Redis that
may evict keys is refused (or, where allowed, warned about).

Real workers of ``tests.taskapp``; the scenarios that reconfigure Redis run on a
redis-server of their own.
"""

from __future__ import annotations

import json

import pytest
import redis

from asyncq import Celery
from asyncq.cli.localredis import LocalRedis
from asyncq.connection import refusal
from asyncq.exceptions import EvictingRedis
from tests.conftest import (
    QUEUE,
    children_of,
    http,
    read_record,
    run_asyncq,
    task_key,
    wait_until,
)


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, to make full or evicting."""
    server = LocalRedis(tmp_path).start()
    client = redis.Redis.from_url(server.url)
    yield server, client
    client.close()
    server.stop()


def sender(url: str, **settings) -> Celery:
    return Celery("hostile", broker=url, **settings)


def test_a_record_of_the_wrong_type_costs_its_message_not_the_worker(app, client, start_worker):
    # given a queued task whose record was replaced by a string (not written by asyncq)
    damaged = app.send_task("tests.add", (1, 1))
    client.delete(task_key(damaged.id))
    client.set(task_key(damaged.id), "junk")

    # when a worker takes it
    worker = start_worker()

    # then that message is set aside as a dead letter, and the worker goes on
    worker.wait_for(rf"Task {damaged.id}: Redis refused a step .*WRONGTYPE")
    wait_until(lambda: client.llen(app.keys.dead_letters()) == 1, "the message set aside")
    assert app.send_task("tests.add", (2, 2)).get(timeout=10) == 4
    assert worker.popen.poll() is None


def test_a_damaged_follow_up_plan_does_not_stop_the_worker(app, client, start_worker):
    # given a finished task whose record holds a follow-up plan no asyncq wrote, and a copy
    # of its message delivered again (as after a crash)
    worker = start_worker()
    done = app.send_task("tests.add", (1, 2))
    assert done.get(timeout=10) == 3
    client.hset(task_key(done.id), "after", "{not json")
    raw = json.dumps({"id": done.id, "task": "tests.add", "args": [1, 2], "kwargs": {},
                      "queue": "celery"})
    client.lpush(QUEUE, raw)

    # then the copy is dropped, the damage logged, and the worker goes on
    worker.wait_for(r"damaged follow-up plan")
    assert app.send_task("tests.add", (2, 3)).get(timeout=10) == 5
    assert worker.popen.poll() is None
    assert read_record(client, done.id)["status"] == "SUCCESS"


def test_a_dead_workers_damaged_message_does_not_stop_the_recovery_of_the_rest(
        app, client, start_worker):
    # given a dead worker that held two started acks-late tasks, one with a damaged record
    ghost = "ghost@gone"
    inflight = app.keys.inflight("celery", ghost, 0)
    damaged, good = app.send_task("tests.add", (1, 1)), app.send_task("tests.add", (2, 2))
    for _ in range(2):
        client.lmove(QUEUE, inflight, "RIGHT", "LEFT")
    for result in (damaged, good):
        client.hset(task_key(result.id), mapping={"started_at": "1", "acks_late": "1"})
    client.delete(task_key(damaged.id))
    client.set(task_key(damaged.id), "junk")
    client.hset(app.keys.workers(), ghost, json.dumps({"concurrency": 1, "queues": ["celery"]}))

    # when a live worker finds it dead
    worker = start_worker()

    # then the good task is recovered and runs; the damaged one is set aside
    assert good.get(timeout=20) == 4
    worker.wait_for(rf"Task tests\.add\[{damaged.id}\] held by a lost child has a damaged record")
    assert client.llen(inflight) == 0
    assert worker.popen.poll() is None


def test_a_full_redis_is_waited_out_and_never_crash_loops_the_children(own_redis, start_worker):
    server, client = own_redis
    app = sender(server.url)
    # given a worker on a Redis with a small maxmemory and noeviction
    worker = start_worker(env={"ASYNCQ_BROKER_URL": server.url}, concurrency=2)
    children = set(children_of(worker.pid))
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 2_000_000)
    client.config_set("maxmemory-policy", "noeviction")

    # when Redis fills up
    filler = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:
            client.set(f"filler:{filler}", "x" * 100_000)
            filler += 1
    # (and stays full: a limit 1 MB below what it holds, more than the client buffers Redis
    # frees meanwhile, so no small write squeezes in; with 100 KB it sometimes did)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1_000_000)
    # then a submission fails with Redis's own error
    with pytest.raises(redis.ResponseError) as refused:  # OOM, or a script's error over it
        app.send_task("tests.add", (1, 1))
    assert refusal(refused.value) == "full", refused.value
    # and the worker waits it out: the same children, the supervisor alive
    worker.wait_for(r"Redis refused .*maxmemory", timeout=15)
    assert set(children_of(worker.pid)) == children
    assert worker.popen.poll() is None

    # when memory is freed, work flows again
    client.delete(*(f"filler:{i}" for i in range(filler)))
    assert app.send_task("tests.add", (2, 2)).get(timeout=15) == 4
    assert set(children_of(worker.pid)) == children


def test_an_evicting_redis_is_refused_unless_allowed(own_redis, start_worker, start_gunicorn):
    server, client = own_redis
    # given a Redis that evicts any key when full
    client.config_set("maxmemory", 100_000_000)
    client.config_set("maxmemory-policy", "allkeys-lru")

    # then a worker refuses to start on it, naming the setting and the way out
    refused = start_worker(env={"ASYNCQ_BROKER_URL": server.url}, wait_ready=False)
    assert refused.wait(20) == 1
    assert "maxmemory-policy is allkeys-lru" in refused.output
    assert "broker_allow_eviction" in refused.output
    # and so does a producer
    with pytest.raises(EvictingRedis, match="maxmemory-policy is allkeys-lru"):
        sender(server.url).send_task("tests.add", (1, 1))

    # unless allowed: then the worker warns at start-up and works
    allowed = start_worker(env={"ASYNCQ_BROKER_URL": server.url, "TEST_ALLOW_EVICTION": "1"})
    allowed.wait_for(r"allowed by broker_allow_eviction")
    app = sender(server.url, broker_allow_eviction=True)
    assert app.send_task("tests.add", (2, 2)).get(timeout=10) == 4
    # and the risk shows in /health, /inspect and `asyncq inspect`
    env = {"ASYNCQ_BROKER_URL": server.url, "TEST_ALLOW_EVICTION": "1",
           "ASYNCQ_APP": "tests.taskapp"}
    api = start_gunicorn("asyncq.api:from_env()", env=env)
    for path in ("/health", "/inspect"):
        status, _, body = http("GET", api + path)
        assert status == 200 and "maxmemory-policy is allkeys-lru" in body["warnings"][0], body
    report = run_asyncq("-A", "tests.taskapp", "inspect", broker_url=server.url)
    assert "Warning: maxmemory-policy is allkeys-lru" in report.stdout


def test_children_that_fail_at_start_up_are_respawned_ever_more_slowly(client, start_worker):
    from tests.brokenapp import BROKEN, STARTS, app

    # given children whose start-up fails (a worker_process_init receiver raises)
    client.set(BROKEN, 1)
    worker = start_worker(app="tests.brokenapp")

    # then each failure in a row doubles the pause before the next child
    worker.wait_for(r"child 0 failed at start-up again: its next child starts in 0\.1s")
    worker.wait_for(r"its next child starts in 0\.8s", timeout=20)
    # so by now the supervisor has forked five children, not a spinning loop's hundreds
    assert int(client.get(STARTS)) <= 6, client.get(STARTS)
    assert worker.popen.poll() is None

    # when start-up works again, the next child serves
    client.delete(BROKEN)
    assert app.send_task("tests.add", (2, 2)).get(timeout=20) == 4

"""Redis goes away and comes back (AOF on): nothing is lost, and everyone says so clearly."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from asyncq.cli.localredis import LocalRedis
from asyncq.message import encode_message
from tests.conftest import http
from tests.taskapp import app as test_app
from tests.taskapp import nap, sleep


@pytest.fixture
def aof_redis(tmp_path) -> Iterator[LocalRedis]:
    """A redis-server of this test's own, with the append-only file on, so it can restart."""
    server = LocalRedis(tmp_path / "aof", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def aof_app(aof_redis):
    original = test_app.conf.broker_url
    test_app.conf.broker_url = aof_redis.url
    test_app.reset_connection()
    yield test_app
    test_app.conf.broker_url = original
    test_app.reset_connection()


def test_redis_restart_loses_nothing(aof_redis, aof_app, start_worker, start_gunicorn):
    # Given a worker and the API on a Redis with AOF, and tasks queued and running
    worker = start_worker(concurrency=2, env={"ASYNCQ_BROKER_URL": aof_redis.url})
    api = start_gunicorn("examples.tutorial.server:app",
                         env={"ASYNCQ_BROKER_URL": aof_redis.url, "TASK_SECONDS": "0.1"})
    # (tests.nap does not touch Redis itself, so none fails for being run in the outage)
    before = [nap.delay(0.3) for _ in range(12)]
    worker.wait_for(r"Task tests\.nap\[.*\] received")

    # When redis-server stops
    stopped_at = len(worker.lines)
    aof_redis.stop()

    # Then the API answers 503 with a JSON error, never a stack trace
    for method, path in (("GET", "/health"), ("POST", "/async_long_running_task")):
        status, headers, body = http(method, api + path)
        assert status == 503, (path, body)
        assert headers["Content-Type"] == "application/json"
        assert "unreachable" in body["error"]
    # And the worker says so, supervisor included; a task running meanwhile still
    # finishes, its result held until Redis is back
    worker.wait_for(r"MainProcess\] Redis unreachable", start=stopped_at)
    finished_in_outage = worker.wait_for(r"tests\.nap\[(.*)\] succeeded", start=stopped_at)
    outage_start = len(worker.lines)

    # When it comes back (same port, same data)
    aof_redis.start()

    # Then the worker resumes and every task submitted before the outage ends SUCCESS
    worker.wait_for(r"Redis is back after", timeout=30)
    for result in before:
        assert result.get(timeout=30) == 0.3
    assert aof_app.AsyncResult(finished_in_outage.group(1)).state == "SUCCESS"
    assert http("GET", f"{api}/health")[0] == 200
    # And new work flows again
    assert sleep.delay(0.01).get(timeout=15) == 0.01
    assert sum("Redis unreachable" in line for line in worker.lines) <= 3  # 1 supervisor + 2
    assert "Traceback" not in "\n".join(worker.lines[outage_start:])


def test_a_long_outage_does_not_make_live_workers_recover_each_other(
        aof_redis, aof_app, start_worker):
    # Given two live workers, each running a task
    env = {"ASYNCQ_BROKER_URL": aof_redis.url}
    workers = [start_worker(f"--hostname={name}@test", env=env) for name in ("a", "b")]
    tasks = [sleep.delay(5) for _ in workers]
    for worker in workers:
        worker.wait_for(r"Task tests\.sleep\[.*\] received")

    # When Redis is away for longer than the heartbeat lapse (3 s here), so that every
    # worker's heartbeat key has expired when it comes back
    aof_redis.stop()
    time.sleep(3.5)  # the awaited thing is the clock itself: the lapse must pass
    aof_redis.start()

    # Then each task still runs once, to SUCCESS, and no worker recovered the other
    for result in tasks:
        assert result.get(timeout=30) == 5
    for worker in workers:
        assert "lost its heartbeat" not in worker.output
        assert "held by a lost child" not in worker.output
    for result in tasks:
        assert "redeliveries" not in aof_app.broker.record(result.id)


def test_a_message_whose_ack_was_lost_is_run_once_redis_is_back(aof_redis, aof_app,
                                                                 start_worker):
    # Given an idle worker, and in its child's in-flight list a message no child runs:
    # what a Sentinel failover leaves when the replica missed the last writes (or a
    # BLMOVE whose answer was lost with the connection)
    worker = start_worker("--hostname=lossy@test", env={"ASYNCQ_BROKER_URL": aof_redis.url})
    client, keys = aof_app.broker.client, aof_app.keys
    task_id = "lost-ack-1"
    client.hset(keys.task(task_id), mapping={"status": "PENDING", "task": "tests.add",
                                             "queue": "celery"})
    message = encode_message(task_id, "tests.add", [2, 3], {}, "celery")
    client.lpush(keys.inflight("celery", "lossy@test", 0), message)

    # When Redis goes away and comes back
    aof_redis.stop()
    worker.wait_for(r"Redis unreachable")
    aof_redis.start()

    # Then the child takes the message back and it runs, once
    assert aof_app.AsyncResult(task_id).get(timeout=20) == 5
    worker.wait_for(r"Task tests\.add\[lost-ack-1\] held by a lost child: requeued")
    assert worker.count(r"Task tests\.add\[lost-ack-1\] succeeded") == 1
    assert client.llen(keys.inflight("celery", "lossy@test", 0)) == 0

"""The worker process: running tasks, the queues it consumes, warm and cold shutdown."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.conftest import (
    QUEUE,
    inflight_key,
    parent_pid,
    queue_key,
    read_record,
    wait_for_progress_pid,
    wait_for_state,
    wait_until,
    worker_key,
)
from tests.taskapp import add, block, hold, whoami


def test_a_running_task_is_started_then_success(app, client, start_worker, gate):
    # given a worker
    start_worker("--hostname=started@test")

    # when it runs a task that waits at a gate
    result = hold.delay(gate.key)
    wait_for_state(result, "STARTED")

    # then the record names the worker and the start time, and the task is not ready
    record = read_record(client, result.id)
    assert record["worker"] == "started@test"
    assert float(record["started_at"]) >= float(record["submitted_at"])
    assert result.info is None
    assert not result.ready()

    # and once the gate opens, the task ends SUCCESS with its return value
    gate.open()
    assert result.get(timeout=10) == "released"
    record = read_record(client, result.id)
    assert record["status"] == "SUCCESS"
    assert float(record["finished_at"]) >= float(record["started_at"])
    assert float(record["runtime"]) >= 0


def test_a_task_runs_in_a_child_of_the_worker(app, start_worker, gate):
    # given a worker
    worker = start_worker()

    # when tests.block runs, it reports its process id as PROGRESS meta
    result = block.delay(gate.key)
    pid = wait_for_progress_pid(result)

    # then that process is a child of the worker, not the worker itself
    assert pid != worker.pid
    assert parent_pid(pid) == worker.pid
    gate.open()
    assert result.get(timeout=10) == "released"


def test_a_worker_consumes_the_queues_named_with_q(app, client, start_worker):
    # given one task sent to the queue "other" and one to the default queue
    elsewhere = whoami.apply_async((1,), queue="other")
    default = add.delay(1, 1)

    # when a worker consumes only "other"
    start_worker("--queues=other", "--hostname=other@test")

    # then it runs the first, and says where it came from ...
    assert elsewhere.get(timeout=10) == {
        "id": elsewhere.id, "args": [1], "kwargs": {}, "hostname": "other@test",
        "called_directly": False, "routing_key": "other"}
    assert client.llen(queue_key("other")) == 0
    # ... and leaves the default queue alone
    assert default.state == "PENDING"
    assert client.llen(QUEUE) == 1


def test_sigterm_finishes_the_running_task_then_exits_0(app, client, start_worker, gate):
    # given a worker running a task that waits at a gate
    worker = start_worker("--hostname=warm@test")
    running = block.delay(gate.key)
    wait_for_progress_pid(running)

    # when the worker gets SIGTERM (and, once it has told its child, a task is queued)
    worker.signal(signal.SIGTERM)
    worker.wait_for("warm shutdown")
    told_children = time.time()
    wait_until(lambda: float(client.hget(worker_key("warm@test"), "heartbeat") or 0)
               > told_children, "a heartbeat after the warm shutdown began")
    waiting = add.delay(1, 1)

    # then the worker keeps running until the task can finish ...
    assert worker.popen.poll() is None
    assert running.state == "PROGRESS"
    gate.open()
    assert running.get(timeout=10) == "released"
    # ... and exits 0, having taken no new work
    assert worker.wait(timeout=10) == 0
    assert running.state == "SUCCESS"
    assert waiting.state == "PENDING"
    assert client.llen(QUEUE) == 1


def test_a_second_sigterm_kills_the_child_and_requeues_acks_late_work(
        app, client, start_worker, gate):
    # given an acks-late task running in a worker
    result = block.delay(gate.key)
    [message] = client.lrange(QUEUE, 0, -1)
    worker = start_worker("--hostname=cold@test")
    child = wait_for_progress_pid(result)

    # when the worker gets SIGTERM, then SIGTERM again while the task runs
    worker.signal(signal.SIGTERM)
    worker.wait_for("warm shutdown")
    worker.signal(signal.SIGTERM)

    # then it exits 1, its child is killed, and the message is back in the queue, PENDING
    assert worker.wait(timeout=10) == 1
    worker.wait_for("cold shutdown: killing children")
    assert not Path(f"/proc/{child}").exists()
    assert client.lrange(QUEUE, 0, -1) == [message]
    assert client.llen(inflight_key("cold@test")) == 0
    assert result.state == "PENDING"

    # and a later worker runs it to SUCCESS
    gate.open()
    start_worker()
    assert result.get(timeout=10) == "released"
    assert result.state == "SUCCESS"

"""Delivery: lost children (acks-late on and off), poison tasks, bad messages, duplicates."""

from __future__ import annotations

import json
import os
import signal

import pytest

from asyncq.exceptions import NotRegistered, WorkerLostError
from tests.conftest import (
    DEAD_LETTERS,
    QUEUE,
    inflight_key,
    parent_pid,
    read_record,
    wait_for_progress_pid,
    wait_until,
)
from tests.taskapp import add, block, block_early, count, suicide

UNREGISTERED = json.dumps({"id": "unregistered-id", "task": "tests.nope", "args": [],
                           "kwargs": {}, "queue": "celery"}).encode()


def test_acks_late_task_whose_child_is_killed_is_delivered_again(
        app, client, start_worker, gate):
    # given an acks-late task running, its message still held in the child's in-flight list
    worker = start_worker("--hostname=late@test")
    result = block.delay(gate.key)
    first = wait_for_progress_pid(result)
    [message] = client.lrange(inflight_key("late@test"), 0, -1)
    assert json.loads(message)["id"] == result.id

    # when its child is SIGKILLed mid-task
    os.kill(first, signal.SIGKILL)

    # then the task runs again in a fresh child ...
    worker.wait_for(rf"child 0 \(pid {first}\) died: signal 9 \(SIGKILL\)")
    second = wait_for_progress_pid(result, other_than=first)
    assert parent_pid(second) == worker.pid
    # ... and ends SUCCESS once, counted as one redelivery
    gate.open()
    assert result.get(timeout=10) == "released"
    assert read_record(client, result.id)["redeliveries"] == "1"
    worker.wait_for(rf"Task tests\.block\[{result.id}\] succeeded")
    assert worker.count(rf"Task tests\.block\[{result.id}\] succeeded") == 1
    assert client.llen(QUEUE) == 0
    assert client.llen(inflight_key("late@test")) == 0


def test_task_without_acks_late_whose_child_is_killed_fails_worker_lost(
        app, client, start_worker, gate):
    # given a task without acks-late running
    worker = start_worker()
    result = block_early.delay(gate.key)
    pid = wait_for_progress_pid(result)

    # when its child is SIGKILLed mid-task
    os.kill(pid, signal.SIGKILL)

    # then the task ends FAILURE with WorkerLostError naming the signal, and is not run again
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        result.get(timeout=10)
    record = read_record(client, result.id)
    assert record["exc_type"] == "asyncq.exceptions.WorkerLostError"
    assert "SIGKILL" in record["exc_message"]
    assert "redeliveries" not in record
    assert client.llen(QUEUE) == 0
    assert worker.count(r"Task tests\.block_early\[.*\] succeeded") == 0


def test_a_task_that_always_kills_its_child_fails_after_the_redelivery_limit(
        app, client, start_worker):
    # given a worker, and the default redelivery limit
    worker = start_worker()
    limit = app.conf.task_redelivery_limit
    assert limit == 3

    # when a task kills its own child every time it runs
    result = suicide.delay()

    # then it ends FAILURE WorkerLostError once it has been delivered 1 + limit times
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        result.get(timeout=20)
    worker.wait_for(rf"Task tests\.suicide\[{result.id}\] held by a lost child: failed")
    assert worker.count(r"child 0 \(pid \d+\) died: signal 9 \(SIGKILL\)") == 1 + limit
    assert worker.count(rf"Task tests\.suicide\[{result.id}\] held by a lost child: requeued") \
        == limit
    assert client.llen(QUEUE) == 0
    assert read_record(client, result.id)["redeliveries"] == str(limit)
    # and the worker still serves the next task
    assert add.delay(2, 3).get(timeout=10) == 5


def test_a_malformed_message_with_a_readable_id_fails_that_task(app, client, start_worker):
    # given a message whose id can be read but whose args are not a list
    client.lpush(QUEUE, b'{"id": "bad-args", "task": "tests.add", "args": 5, "kwargs": {}}')

    # when a worker takes it
    start_worker()
    wait_until(lambda: client.llen(DEAD_LETTERS) == 1, "the message in the dead-letter list")

    # then its task ends FAILURE, saying what was wrong
    with pytest.raises(ValueError, match="'args'"):
        app.AsyncResult("bad-args").get(timeout=10)


def test_garbled_messages_are_set_aside_intact_and_the_worker_carries_on(
        app, client, start_worker):
    # given garbled messages and one naming an unregistered task, pushed straight into the queue
    garbled = [
        b"this is not JSON",
        b'{"id": "\xc3\x28 invalid utf-8", "task": "tests.add"}',
        b'{"id": "truncated", "task": "tests.add", "args": [1, ',
    ]
    for raw in [*garbled, UNREGISTERED]:
        client.lpush(QUEUE, raw)

    # when a worker starts
    worker = start_worker()

    # then every one of them is moved, byte for byte, to the dead-letter list
    dead = wait_until(lambda: client.lrange(DEAD_LETTERS, 0, -1) if
                      client.llen(DEAD_LETTERS) == 4 else None, "4 dead letters")
    assert sorted(dead) == sorted([*garbled, UNREGISTERED])
    assert client.llen(QUEUE) == 0
    # and the worker, whose child never died, still serves the next task
    assert add.delay(2, 3).get(timeout=10) == 5
    assert worker.count(r"died") == 0


def test_a_message_naming_an_unregistered_task_fails_not_registered(app, client, start_worker):
    # given a well-formed message naming a task no worker knows, pushed into the queue
    client.lpush(QUEUE, UNREGISTERED)

    # when a worker takes it
    start_worker()
    wait_until(lambda: client.llen(DEAD_LETTERS) == 1, "the message in the dead-letter list")

    # then its task id is recorded FAILURE, NotRegistered
    result = app.AsyncResult("unregistered-id")
    assert result.state == "FAILURE"
    record = read_record(client, "unregistered-id")
    assert record["exc_type"] == "asyncq.exceptions.NotRegistered"
    assert record["exc_message"] == "task 'tests.nope' is not registered"
    with pytest.raises(NotRegistered):
        result.get(timeout=10)


def test_a_not_registered_error_reads_as_it_was_stored(app, client, start_worker):
    # given a message naming an unregistered task, failed by a worker
    client.lpush(QUEUE, UNREGISTERED)
    start_worker()
    wait_until(lambda: client.llen(DEAD_LETTERS) == 1, "the message in the dead-letter list")

    # when its error is read back
    error = app.AsyncResult("unregistered-id").get(timeout=10, propagate=False)

    # then it says what the worker said, once
    assert isinstance(error, NotRegistered)
    assert str(error) == read_record(client, "unregistered-id")["exc_message"]


def test_a_dead_lettered_duplicate_does_not_replace_a_final_state(app, client, start_worker):
    # given a task that ran to SUCCESS
    worker = start_worker()
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5

    # when a message with the same id names a task this worker does not know (as a copy would
    # on a worker of another release), and is set aside
    duplicate = {**json.loads(UNREGISTERED), "id": result.id}
    client.lpush(QUEUE, json.dumps(duplicate))
    wait_until(lambda: client.llen(DEAD_LETTERS) == 1, "the copy in the dead-letter list")

    # then the task keeps its one final state
    assert worker.count("died") == 0
    assert result.state == "SUCCESS"
    assert result.get(timeout=10) == 5


def test_a_duplicate_of_a_finished_task_is_acked_and_not_run_again(app, client, start_worker):
    # given a task that counts its runs, run once to SUCCESS
    counter = "test:runs"
    result = count.delay(counter)
    [message] = client.lrange(QUEUE, 0, -1)
    worker = start_worker("--hostname=dup@test")
    assert result.get(timeout=10) == 1

    # when a copy of its message is delivered again
    client.lpush(QUEUE, message)

    # then the worker acks it without running the task a second time
    worker.wait_for(rf"Task tests\.count\[{result.id}\] already SUCCESS: not run again")
    assert client.get(counter) == b"1"
    assert client.llen(inflight_key("dup@test")) == 0
    assert client.llen(QUEUE) == 0
    assert result.state == "SUCCESS"
    assert result.result == 1

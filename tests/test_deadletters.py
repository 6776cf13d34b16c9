"""``asyncq dead list|requeue|purge`` against messages set aside by a real worker.

The dead letters are made the way production makes them: messages go into the
queue and a worker that cannot run them sets them aside. That worker runs the
example app, which knows neither ``tests.add`` nor ``tests.nope``, so the set is:

* garbled bytes (not JSON, invalid UTF-8): can never run;
* a JSON message for ``tests.add`` whose ``args`` is not a list: its task was
  failed, and no app can run it as it stands, so it stays;
* a message for ``tests.nope``: registered nowhere, so it stays;
* a message for ``tests.add`` submitted the normal way (PENDING record and all)
  but taken by the example worker, as a worker of an older release would take a
  task it does not have yet: ``tests.taskapp`` has it, so it is the one that
  ``requeue`` puts back and a ``tests.taskapp`` worker then runs.

The commands run as subprocesses, as an operator or a script would run them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass

import pytest
import redis

from tests.conftest import (
    DEAD_LETTERS,
    QUEUE,
    ROOT,
    asyncq_command,
    queue_key,
    read_record,
    run_asyncq,
    task_key,
    wait_until,
)
from tests.taskapp import add, count

APP = ("-A", "tests.taskapp")
OLD_RELEASE = "examples.tutorial.server"  # a worker that lacks every tests.* task
GARBLED = b"this is not JSON \xc3\x28"
BAD_ARGS = b'{"id": "bad-args", "task": "tests.add", "args": 5, "kwargs": {}, "queue": "celery"}'
UNREGISTERED = json.dumps({"id": "unregistered-id", "task": "tests.nope", "args": [],
                           "kwargs": {}, "queue": "celery"}).encode()


@dataclass
class DeadSet:
    runnable_id: str  # the tests.add task tests.taskapp can run
    runnable: bytes  # its message, as submitted
    raws: list[bytes]  # the dead-letter list as the worker left it, newest first


def set_aside_by_a_worker(client: redis.Redis, start_worker, count: int) -> list[bytes]:
    """Let a worker of OLD_RELEASE take what is queued; stop it once ``count`` messages
    are dead letters, so that it does not set requeued messages aside again."""
    worker = start_worker(app=OLD_RELEASE)
    wait_until(lambda: client.llen(DEAD_LETTERS) == count, f"{count} dead letters")
    worker.stop()
    assert client.llen(QUEUE) == 0
    return client.lrange(DEAD_LETTERS, 0, -1)


@pytest.fixture
def dead_set(app, client, start_worker) -> DeadSet:
    runnable = add.delay(2, 3)
    [message] = client.lrange(QUEUE, 0, -1)
    for raw in (GARBLED, BAD_ARGS, UNREGISTERED):
        client.lpush(QUEUE, raw)
    raws = set_aside_by_a_worker(client, start_worker, 4)
    assert sorted(raws) == sorted([message, GARBLED, BAD_ARGS, UNREGISTERED])
    # the worker that set it aside failed the runnable task, as it should have
    assert read_record(client, runnable.id)["exc_type"] == "asyncq.exceptions.NotRegistered"
    return DeadSet(runnable.id, message, raws)


def dead(redis_url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run_asyncq(*APP, "dead", *args, broker_url=redis_url, input=input)


# -- list ----------------------------------------------------------------------
def test_list_shows_each_dead_letter_and_why_it_cannot_run(redis_url, dead_set):
    # when the dead letters are listed
    done = dead(redis_url, "list")

    # then one row per message, in list order, saying who it is and what is wrong
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["#", "TASK", "ID", "TASK", "WHY", "IT", "CANNOT", "RUN",
                                "MESSAGE"]
    rows = {raw: lines[1 + index] for index, raw in enumerate(dead_set.raws)}
    assert rows[GARBLED].split()[:4] == [str(dead_set.raws.index(GARBLED)), "-", "-", "not"]
    assert "not JSON" in rows[GARBLED] and "this is not JSON \\xc3(" in rows[GARBLED]
    assert rows[BAD_ARGS].split()[1:3] == ["bad-args", "tests.add"]
    assert "field 'args' missing or not a list" in rows[BAD_ARGS]
    assert rows[UNREGISTERED].split()[1:3] == ["unregistered-id", "tests.nope"]
    assert "unregistered task" in rows[UNREGISTERED]
    assert rows[dead_set.runnable].split()[1:3] == [dead_set.runnable_id, "tests.add"]
    assert "nothing: can be requeued" in rows[dead_set.runnable]
    assert lines[-1] == "4 dead letter(s) in {asyncq}:dead: 1 can be requeued, 3 cannot run."


def test_list_json_gives_scripts_every_field_and_the_exact_bytes(redis_url, dead_set):
    # when the dead letters are listed as JSON
    done = dead(redis_url, "list", "--json")

    # then one object per message, whose index and bytes match the Redis list exactly
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert [entry["index"] for entry in entries] == [0, 1, 2, 3]
    assert [base64.b64decode(entry["raw_base64"]) for entry in entries] == dead_set.raws
    by_raw = {base64.b64decode(entry["raw_base64"]): entry for entry in entries}
    keys = {"index", "id", "task", "queue", "priority", "requeueable", "problem", "detail", "raw",
            "raw_base64"}
    assert all(set(entry) == keys for entry in entries)
    garbled = by_raw[GARBLED]
    assert (garbled["id"], garbled["task"], garbled["requeueable"], garbled["problem"]) == \
        (None, None, False, "not JSON")
    assert garbled["raw"] == "this is not JSON \\xc3("
    assert garbled["detail"].startswith("not JSON: ")
    assert by_raw[BAD_ARGS]["problem"] == "field 'args' missing or not a list"
    assert by_raw[UNREGISTERED]["problem"] == "unregistered task"
    assert by_raw[UNREGISTERED]["detail"] == "app 'tests' has no task named 'tests.nope'"
    assert by_raw[dead_set.runnable] == {
        "index": dead_set.raws.index(dead_set.runnable), "id": dead_set.runnable_id,
        "task": "tests.add", "queue": "celery", "priority": 0, "requeueable": True, "problem": None,
        "detail": None, "raw": dead_set.runnable.decode(),
        "raw_base64": base64.b64encode(dead_set.runnable).decode()}


def test_an_empty_list_is_not_an_error(redis_url):
    # given no dead letters, when they are listed, then the answer is "none", exit status 0
    done = dead(redis_url, "list")
    assert (done.returncode, done.stdout) == (0, "No dead letters in {asyncq}:dead.\n")
    done = dead(redis_url, "list", "--json")
    assert (done.returncode, json.loads(done.stdout)) == (0, [])


# -- requeue -------------------------------------------------------------------
def test_requeue_puts_back_what_can_run_and_reports_the_rest(
        app, client, redis_url, dead_set, start_worker):
    # when every dead letter is requeued
    done = dead(redis_url, "requeue")

    # then the runnable one is back on its queue, byte for byte ...
    assert done.stdout.splitlines() == [
        f"requeued {dead_set.runnable_id} (tests.add) to queue celery",
        "1 requeued, 3 kept in the dead-letter list."]
    assert client.lrange(QUEUE, 0, -1) == [dead_set.runnable]
    # ... with a fresh PENDING record, as submission writes it (the failure is gone)
    record = read_record(client, dead_set.runnable_id)
    assert set(record) == {"status", "task", "queue", "submitted_at"}
    assert (record["status"], record["task"], record["queue"]) == ("PENDING", "tests.add",
                                                                    "celery")
    assert 0 < client.ttl(task_key(dead_set.runnable_id)) <= app.conf.task_record_ttl
    assert app.AsyncResult(dead_set.runnable_id).state == "PENDING"
    # and the three that cannot run stay, unchanged, each reported with its reason
    assert sorted(client.lrange(DEAD_LETTERS, 0, -1)) == sorted([GARBLED, BAD_ARGS,
                                                                  UNREGISTERED])
    kept = done.stderr
    assert "kept" in kept and "not JSON" in kept
    assert "bad-args (tests.add): field 'args' missing or not a list" in kept
    assert "unregistered-id (tests.nope): app 'tests' has no task named 'tests.nope'" in kept
    # and the exit status tells a script that not everything went back
    assert done.returncode == 1

    # when a worker that has the task starts, then the requeued task runs to SUCCESS
    start_worker()
    assert app.AsyncResult(dead_set.runnable_id).get(timeout=10) == 5


def test_requeue_by_id_and_its_exit_statuses(client, redis_url, dead_set):
    # when the runnable message is requeued by its task id, then exit status 0
    done = dead(redis_url, "requeue", "--id", dead_set.runnable_id)
    assert done.returncode == 0, done.stderr
    assert client.lrange(QUEUE, 0, -1) == [dead_set.runnable]
    assert client.llen(DEAD_LETTERS) == 3

    # when the same id is asked for again, then nothing matches: exit status 1
    done = dead(redis_url, "requeue", "--id", dead_set.runnable_id)
    assert done.returncode == 1
    assert f"no dead letter with task id {dead_set.runnable_id!r}" in done.stderr
    assert client.llen(QUEUE) == 1

    # when the id of a message that cannot be decoded is asked for, then it stays: exit 1
    done = dead(redis_url, "requeue", "--id", "bad-args")
    assert done.returncode == 1
    assert "field 'args' missing or not a list" in done.stderr
    assert client.llen(DEAD_LETTERS) == 3 and client.llen(QUEUE) == 1


def test_a_stray_copy_of_a_finished_task_is_not_run_again(app, client, redis_url,
                                                          start_worker):
    # given a task that ran to SUCCESS once ...
    counter = "test:runs"
    result = count.delay(counter)
    [message] = client.lrange(QUEUE, 0, -1)
    worker = start_worker()
    assert result.get(timeout=10) == 1
    worker.stop()
    # ... and a second copy of its message, set aside by a worker that lacks the task
    client.lpush(QUEUE, message)
    set_aside_by_a_worker(client, start_worker, 1)
    assert result.state == "SUCCESS"

    # when the dead letters are listed and requeued
    listed = json.loads(dead(redis_url, "list", "--json").stdout)
    done = dead(redis_url, "requeue")

    # then the copy is shown as not runnable, and stays where it is: exit status 1
    assert [(e["id"], e["problem"]) for e in listed] == [(result.id, "task already SUCCESS")]
    assert done.returncode == 1
    assert "requeueing would run it again" in done.stderr
    assert client.lrange(DEAD_LETTERS, 0, -1) == [message]
    assert client.llen(QUEUE) == 0
    assert result.state == "SUCCESS" and client.get(counter) == b"1"


def test_a_message_set_aside_twice_is_requeued_once(app, client, redis_url, start_worker):
    # given two copies of one runnable message in the dead-letter list (both look
    # requeueable when listed: the record is the NotRegistered failure they caused)
    counter = "test:runs"
    result = count.delay(counter)
    [message] = client.lrange(QUEUE, 0, -1)
    client.lpush(QUEUE, message)
    set_aside_by_a_worker(client, start_worker, 2)
    listed = json.loads(dead(redis_url, "list", "--json").stdout)
    assert [entry["requeueable"] for entry in listed] == [True, True]

    # when both are requeued
    done = dead(redis_url, "requeue")

    # then the first goes back, and the requeue script itself refuses the second,
    # whose task is now PENDING again: one copy queued, one kept, exit status 1
    assert done.returncode == 1
    assert f"kept #1 {result.id} (tests.count): task {result.id} is PENDING" in done.stderr
    assert client.lrange(QUEUE, 0, -1) == [message]
    assert client.lrange(DEAD_LETTERS, 0, -1) == [message]
    # and the task runs once
    start_worker()
    assert result.get(timeout=10) == 1
    assert client.get(counter) == b"1"


def test_a_message_with_a_priority_goes_back_to_its_priority_list(
        app, client, redis_url, start_worker):
    # given a priority-7 task and a message claiming priority 42, both set aside
    result = add.apply_async((4, 5), priority=7)
    [message] = client.lrange(queue_key("celery", 7), 0, -1)
    far_out = json.dumps({"id": "far-out", "task": "tests.add", "args": [1, 1], "kwargs": {},
                          "queue": "celery", "priority": 42}).encode()
    client.lpush(QUEUE, far_out)
    set_aside_by_a_worker(client, start_worker, 2)

    # when they are requeued
    done = dead(redis_url, "requeue")

    # then the priority-7 message is back on the priority-7 list
    assert client.lrange(queue_key("celery", 7), 0, -1) == [message]
    # and the one no worker would look for stays, saying why
    assert done.returncode == 1
    assert "far-out (tests.add): field 'priority' is not one of 0-9" in done.stderr
    assert client.lrange(DEAD_LETTERS, 0, -1) == [far_out]
    # and a worker runs the requeued one
    start_worker()
    assert result.get(timeout=10) == 9


def test_requeue_with_nothing_to_requeue_exits_1(redis_url):
    done = dead(redis_url, "requeue")
    assert done.returncode == 1
    assert "No dead letters in {asyncq}:dead." in done.stderr


# -- purge ---------------------------------------------------------------------
def test_purge_asks_first_and_says_how_many_it_removed(client, redis_url, dead_set):
    # when purge is declined at the prompt, then nothing is removed: exit status 1
    done = dead(redis_url, "purge", input="n\n")
    assert done.returncode == 1
    assert "Delete the 4 dead letter(s) in {asyncq}:dead? [y/N]" in done.stdout
    assert client.lrange(DEAD_LETTERS, 0, -1) == dead_set.raws

    # when it is confirmed, then all four go
    done = dead(redis_url, "purge", input="y\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("Removed 4 dead letter(s) from {asyncq}:dead.\n")
    assert not client.exists(DEAD_LETTERS)

    # and purging an empty list with --yes removes nothing and is not an error
    done = dead(redis_url, "purge", "--yes")
    assert (done.returncode, done.stdout) == (0, "Removed 0 dead letter(s) from {asyncq}:dead.\n")


def test_purge_keeps_dead_letters_that_arrive_while_it_asks(client, redis_url):
    # given two dead letters, and purge waiting at its prompt
    client.lpush(DEAD_LETTERS, b"old 1", b"old 2")
    purge = subprocess.Popen(asyncq_command(*APP, "dead", "purge"), cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "ASYNCQ_BROKER_URL": redis_url,
                                  "PYTHONUNBUFFERED": "1"})
    try:
        prompt = "Delete the 2 dead letter(s) in {asyncq}:dead? [y/N]: "
        assert purge.stdout is not None and purge.stdout.read(len(prompt)) == prompt
        # when a worker sets another one aside before the operator answers yes
        client.lpush(DEAD_LETTERS, b"new")
        out, _ = purge.communicate("y\n", timeout=30)
    finally:
        if purge.poll() is None:
            purge.kill()
            purge.wait()

    # then only the two that were shown are removed
    assert purge.returncode == 0
    assert "Removed 2 dead letter(s)" in out
    assert "1 newer dead letter(s) arrived meanwhile and were kept." in out
    assert client.lrange(DEAD_LETTERS, 0, -1) == [b"new"]


# -- errors scripts can tell apart ----------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    ((*APP, "dead", "requeue", "--bogus"), "No such option '--bogus'"),
    ((*APP, "dead", "list", "extra"), "unexpected extra argument"),
    (("-A", "no_such_module", "dead", "list"), "no module named 'no_such_module'"),
    (("dead", "list"), "name the app with -A"),
])
def test_usage_errors_exit_2(redis_url, args, says):
    done = run_asyncq(*args, broker_url=redis_url)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_exits_3_with_one_plain_line():
    from asyncq.cli.localredis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    for command in (("list",), ("requeue",), ("purge", "--yes")):
        done = dead(url, *command)
        assert done.returncode == 3, command
        assert done.stderr.startswith(f"Error: Redis at {url} is unreachable")
        assert "Traceback" not in done.stderr

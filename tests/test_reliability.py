"""Fault injection: children and whole workers SIGKILLed, several workers recovering one
dead worker at once, time limits, recycled children, and garbled or oversize messages.

Real redis-server, real worker processes; every wait is on an event, bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from asyncq import Celery
from asyncq.exceptions import (
    NotRegistered,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)
from tests.conftest import (
    DEAD_LETTERS,
    QUEUE,
    Process,
    inflight_key,
    kill_worker_host,
    parent_pid,
    read_record,
    task_key,
    wait_for_progress_pid,
    wait_until,
    worker_key,
)
from tests.taskapp import (
    add,
    block_early,
    getpid,
    hard_limited,
    soft_cleanup,
    soft_uncaught,
    tally,
)

LAPSE = 3.0  # tests.taskapp's worker_lost_after: how long a dead worker's heartbeat key lives
WORKERS = "{asyncq}:workers"  # registry: worker id -> {"concurrency", "queues"}
COMPLETIONS = "test:completions"  # tests.tally counts its completions here, per task id
MB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------

def completions(client: redis.Redis) -> dict[str, int]:
    """How many times each tests.tally task ran to completion, by task id."""
    return {k.decode(): int(v) for k, v in client.hgetall(COMPLETIONS).items()}


def inflight_lists(client: redis.Redis, worker_id: str) -> list[bytes]:
    return client.keys(f"{{asyncq:*}}:inflight:{worker_id}:*")


def held_ids(client: redis.Redis, worker_id: str) -> list[str]:
    """The ids of the messages in a worker's in-flight lists, sorted."""
    return sorted(json.loads(raw)["id"] for key in inflight_lists(client, worker_id)
                  for raw in client.lrange(key, 0, -1))


def running_on(client: redis.Redis, result: Any, worker: Process, worker_id: str) -> int:
    """Wait until a tests.tally/block-style task reports its pid; check that it runs in a
    child of ``worker`` and that its record names ``worker_id``. Returns the pid."""
    pid = wait_for_progress_pid(result, timeout=20)
    assert parent_pid(pid) == worker.pid, f"task {result.id} runs in pid {pid}, not in {worker}"
    assert read_record(client, result.id)["worker"] == worker_id
    return pid


def line_number(worker: Process, pattern: str) -> int:
    """The index of the first output line matching ``pattern`` (the line must be there)."""
    regex = re.compile(pattern)
    for number, line in enumerate(list(worker.lines)):
        if regex.search(line):
            return number
    raise AssertionError(f"no line matching {pattern!r}; output:\n{worker.output}")


class WorkerFailed(AssertionError):
    """The worker exited, or logged a traceback, while a test waited on it."""


def wait_while_alive(worker: Process, probe: Callable[[], Any], what: str,
                     timeout: float = 20.0) -> Any:
    """wait_until, but fail at once, with the worker's output, if the worker exits or logs
    a traceback (a supervisor that crashed may linger, joining its children, and serve on)."""

    def alive_probe() -> Any:
        if worker.popen.poll() is not None:
            raise WorkerFailed(f"worker exited with {worker.popen.returncode} while waiting "
                               f"for {what}; output:\n{worker.output}")
        if worker.count(r"^Traceback \(most recent call last\)"):
            raise WorkerFailed(f"worker logged a traceback while waiting for {what}; "
                               f"output:\n{worker.output}")
        return probe()

    try:
        return wait_until(alive_probe, what, timeout)
    except WorkerFailed:
        raise
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; worker output:\n{worker.output}") from None


@contextlib.contextmanager
def killed_on_failure(worker: Process) -> Iterator[None]:
    """If the block fails, SIGKILL ``worker`` and its children at once, rather than wait at
    teardown on a crashed supervisor that no longer acts on SIGTERM."""
    try:
        yield
    except BaseException:
        if worker.popen.poll() is None:
            kill_worker_host(worker)
        raise


def requeued_lines(workers: list[Process], task_id: str) -> int:
    pattern = rf"Task tests\.tally\[{task_id}\] held by a lost child: requeued$"
    return sum(worker.count(pattern) for worker in workers)


# -- 1. children SIGKILLed mid-task, again and again ---------------------------------

def test_children_killed_mid_task_again_and_again_every_task_completes_exactly_once(
        app, client, start_worker, gate):
    # given a worker with two children, and 20 acks-late tasks that each work 50-200 ms and
    # then wait at a gate of their own before counting their completion and returning
    worker = start_worker("--hostname=chaos@test", concurrency=2)
    results = [tally.delay(gate.key, COMPLETIONS, 0.05 + 0.05 * (n % 4)) for n in range(20)]
    # every third task is killed on its first delivery; the first one on its first two
    kills_planned = {results[n].id: 1 for n in range(0, 20, 3)}
    kills_planned[results[0].id] = 2
    assert sum(kills_planned.values()) == 8

    # when the test watches every delivery: it SIGKILLs the child running a delivery that is
    # planned to die (before its gate opens, so mid-task), and opens the gate of any other
    kills: Counter[str] = Counter()
    handled: set[tuple[str, str]] = set()

    def deliveries_to_handle() -> str | list[tuple[str, tuple[str, str], int]]:
        pipe = client.pipeline(transaction=False)
        for result in results:
            pipe.hgetall(task_key(result.id))
        records = [{k.decode(): v.decode() for k, v in raw.items()} for raw in pipe.execute()]
        if all(record.get("status") in ("SUCCESS", "FAILURE") for record in records):
            return "all final"
        fresh = []
        for result, record in zip(results, records, strict=True):
            delivery = (result.id, record.get("started_at", ""))  # one per delivery
            if record.get("status") == "PROGRESS" and delivery not in handled:
                fresh.append((result.id, delivery, json.loads(record["meta"])["pid"]))
        return fresh

    while (fresh := wait_until(deliveries_to_handle, "a new delivery, or every task final",
                               timeout=20)) != "all final":
        for task_id, delivery, pid in fresh:
            handled.add(delivery)
            if kills[task_id] < kills_planned.get(task_id, 0):
                assert parent_pid(pid) == worker.pid
                os.kill(pid, signal.SIGKILL)
                kills[task_id] += 1
            else:
                client.set(f"{gate.key}:{task_id}", 1)

    # then every task ends SUCCESS ...
    assert kills == kills_planned
    assert [result.get(timeout=20) for result in results] == [result.id for result in results]
    # ... having run to completion exactly once, each kill counted as one redelivery
    assert completions(client) == {result.id: 1 for result in results}
    assert {result.id: int(read_record(client, result.id).get("redeliveries", 0))
            for result in results} == {result.id: kills[result.id] for result in results}
    # and the worker saw each kill, no other death, and logged each success once
    wait_until(lambda: worker.count(r"died: signal 9 \(SIGKILL\)") >= 8, "8 deaths logged")
    assert worker.count(r"died") == 8
    for result in results:
        pattern = rf"Task tests\.tally\[{result.id}\] succeeded"
        wait_until(lambda pattern=pattern: worker.count(pattern), f"{pattern} logged")
        assert worker.count(pattern) == 1
    assert client.llen(QUEUE) == 0
    assert inflight_lists(client, "chaos@test") == []


# -- 2. a whole worker SIGKILLed while another runs ----------------------------------

def test_a_dead_workers_tasks_are_recovered_by_a_live_worker_once_its_heartbeat_lapses(
        app, client, start_worker, gate):
    # given a worker running an acks-late task and an early-acked one
    doomed = start_worker("--hostname=doomed@test", concurrency=2)
    late = tally.delay(gate.key, COMPLETIONS)
    early = block_early.delay(gate.key)
    running_on(client, late, doomed, "doomed@test")
    running_on(client, early, doomed, "doomed@test")
    # and a second worker, idle
    survivor = start_worker("--hostname=survivor@test")

    # when the first worker's host dies: supervisor and children SIGKILLed together
    last_beat = float(client.hget(worker_key("doomed@test"), "heartbeat"))  # or a later one
    killed_at = time.monotonic()
    kill_worker_host(doomed)
    assert held_ids(client, "doomed@test") == sorted([late.id, early.id])
    gate.open()

    # then the acks-late task runs again on the second worker, to completion once, as soon
    # as the dead worker's heartbeat has lapsed (not before, and not long after)
    assert late.get(timeout=LAPSE + 20) == late.id
    elapsed = time.monotonic() - killed_at
    assert elapsed <= LAPSE + 4, f"recovered {elapsed:.1f}s after the kill"
    record = read_record(client, late.id)
    restarted = float(record["started_at"]) - last_beat
    assert restarted >= LAPSE - 0.1, f"started again {restarted:.2f}s after the last heartbeat"
    assert record["redeliveries"] == "1"
    assert record["worker"] == "survivor@test"
    assert completions(client) == {late.id: 1}
    # and the early-acked task ends FAILURE WorkerLostError, naming the lost heartbeats
    with pytest.raises(WorkerLostError, match="heartbeats"):
        early.get(timeout=10)
    assert read_record(client, early.id)["exc_message"] == \
        "Worker doomed@test stopped sending heartbeats"
    assert "redeliveries" not in read_record(client, early.id)
    # and nothing of the dead worker is left behind
    survivor.wait_for(r"worker doomed@test lost its heartbeat: recovered 2 task\(s\)")
    assert not client.hexists(WORKERS, "doomed@test")
    assert inflight_lists(client, "doomed@test") == []
    assert client.llen(QUEUE) == 0


# -- 3. several live workers recovering one dead worker at once ------------------------

def test_three_workers_recovering_one_dead_worker_at_once_requeue_each_task_once(
        app, client, start_worker, gate):
    # given a worker running three acks-late tasks, one in each of its children
    ghost = start_worker("--hostname=ghost@test", concurrency=3)
    results = [tally.delay(gate.key, COMPLETIONS) for _ in range(3)]
    for result in results:
        running_on(client, result, ghost, "ghost@test")
    # and three live workers, whose heartbeats last long enough for them to be paused
    rescuers = [start_worker(f"--hostname=rescuer{n}@test", wait_ready=False,
                             env={"TEST_LOST_AFTER": "60"}) for n in range(3)]
    for rescuer in rescuers:
        rescuer.wait_for(r" ready\.$", timeout=30)

    # when the first worker's host dies while the live supervisors are paused, and they all
    # resume at the same moment once its heartbeat has lapsed, so they recover it together
    for rescuer in rescuers:
        os.kill(rescuer.pid, signal.SIGSTOP)
    try:
        kill_worker_host(ghost)
        gate.open()
        wait_until(lambda: not client.exists(worker_key("ghost@test")),
                   "the dead worker's heartbeat key lapsed", timeout=LAPSE + 10)
        assert held_ids(client, "ghost@test") == sorted(result.id for result in results)
    finally:
        for rescuer in rescuers:
            os.kill(rescuer.pid, signal.SIGCONT)

    # then every task runs again, to completion exactly once, requeued exactly once
    for result in results:
        assert result.get(timeout=20) == result.id
    assert completions(client) == {result.id: 1 for result in results}
    for result in results:
        record = read_record(client, result.id)
        assert record["redeliveries"] == "1"
        assert record["worker"] in {f"rescuer{n}@test" for n in range(3)}
    # and the dead worker's in-flight lists and registry entry are gone
    wait_until(lambda: not client.hexists(WORKERS, "ghost@test"),
               "the dead worker removed from the registry")
    assert inflight_lists(client, "ghost@test") == []
    # and the live workers' logs together show each task requeued exactly once; any other
    # recoverer found it missing (already taken)
    wait_until(lambda: all(requeued_lines(rescuers, result.id) for result in results),
               "a 'requeued' line for every task")
    assert [requeued_lines(rescuers, result.id) for result in results] == [1, 1, 1]
    outcomes = Counter(match.group(1) for rescuer in rescuers for line in list(rescuer.lines)
                       if (match := re.search(r"held by a lost child: (\w+)$", line)))
    assert set(outcomes) <= {"requeued", "missing"}, outcomes
    assert outcomes["requeued"] == 3
    # and their summaries add up to the three tasks

    def recovered() -> list[int]:
        return [int(match.group(1)) for rescuer in rescuers for line in list(rescuer.lines)
                if (match := re.search(r"worker ghost@test lost its heartbeat: "
                                       r"recovered (\d+) task", line))]

    wait_until(lambda: sum(recovered()) >= 3, "summaries of 3 recovered tasks")
    assert sum(recovered()) == 3, recovered()


# -- a worker restarted under the same name --------------------------------------------

def test_a_worker_restarted_under_the_same_name_first_takes_back_what_it_held(
        app, client, start_worker, gate):
    # given a worker running an acks-late task and an early-acked one, killed with its host
    first = start_worker("--hostname=phoenix@test", concurrency=2)
    late = tally.delay(gate.key, COMPLETIONS)
    early = block_early.delay(gate.key)
    running_on(client, late, first, "phoenix@test")
    running_on(client, early, first, "phoenix@test")
    kill_worker_host(first)
    # and, no other worker running, its heartbeat lapsed with both messages still held
    wait_until(lambda: not client.exists(worker_key("phoenix@test")),
               "the killed worker's heartbeat key lapsed", timeout=LAPSE + 10)
    assert held_ids(client, "phoenix@test") == sorted([late.id, early.id])

    # when a worker starts again under the same name
    gate.open()
    again = start_worker("--hostname=phoenix@test")

    # then, before it is ready, it has requeued the acks-late task and failed the other
    ready = line_number(again, r" ready\.$")
    assert line_number(again, rf"Task tests\.tally\[{late.id}\] held by a lost child: "
                              r"requeued$") < ready
    assert line_number(again, rf"Task tests\.block_early\[{early.id}\] held by a lost child: "
                              r"failed$") < ready
    # and runs the acks-late task to completion, once
    assert late.get(timeout=20) == late.id
    again.wait_for(rf"Task tests\.tally\[{late.id}\] succeeded")
    record = read_record(client, late.id)
    assert record["redeliveries"] == "1"
    assert record["worker"] == "phoenix@test"
    assert completions(client) == {late.id: 1}
    with pytest.raises(WorkerLostError, match="Worker restarted while running the task"):
        early.get(timeout=10)
    assert inflight_lists(client, "phoenix@test") == []
    assert client.llen(QUEUE) == 0


def test_a_starting_worker_leaves_alone_a_live_worker_whose_name_extends_its_own(
        app, client, start_worker, gate):
    # given a live worker named "node@test:2" (default names look like asyncq@HOST:PID)
    # running an acks-late task
    live = start_worker("--hostname=node@test:2")
    result = tally.delay(gate.key, COMPLETIONS)
    running_on(client, result, live, "node@test:2")

    # when a worker named "node@test" starts, its name a prefix of the live one's
    other = start_worker("--hostname=node@test")

    # then it takes back only what it held itself: the live worker's task is not requeued
    assert other.count(r"held by a lost child") == 0, \
        f"node@test took from the in-flight lists of the live node@test:2:\n{other.output}"
    assert "redeliveries" not in read_record(client, result.id)
    assert held_ids(client, "node@test:2") == [result.id]
    # and the task runs to completion once
    gate.open()
    assert result.get(timeout=20) == result.id
    assert completions(client) == {result.id: 1}


# -- 4. time limits and recycled children ----------------------------------------------

def test_a_task_past_its_hard_time_limit_fails_and_its_child_is_replaced(
        app, client, start_worker):
    # given a worker, and an acks-late task with time_limit=1 that sleeps 10 s
    worker = start_worker("--hostname=limits@test")
    assert hard_limited.time_limit == 1 and hard_limited.acks_late

    # when it runs
    submitted = time.monotonic()
    result = hard_limited.delay(10)
    pid = running_on(client, result, worker, "limits@test")

    # then it ends FAILURE TimeLimitExceeded soon after the limit, not after 10 s
    with pytest.raises(TimeLimitExceeded, match="hard time limit"):
        result.get(timeout=10)
    elapsed = time.monotonic() - submitted
    assert 1 <= elapsed < 5, f"failed after {elapsed:.1f}s"
    worker.wait_for(rf"child 0 \(pid {pid}\): hard time limit exceeded, killing it")
    # and its child is replaced: the next task runs in a new child of the same worker
    next_pid = getpid.delay().get(timeout=10)
    assert next_pid != pid
    assert parent_pid(next_pid) == worker.pid
    # and, although acks-late, it is not delivered again
    worker.wait_for(rf"Task tests\.hard_limited\[{result.id}\] held by a lost child: failed$")
    record = read_record(client, result.id)
    assert record["status"] == "FAILURE"
    assert record["exc_type"] == "asyncq.exceptions.TimeLimitExceeded"
    assert "redeliveries" not in record
    assert worker.count(rf"Task tests\.hard_limited\[{result.id}\] received") == 1
    assert client.llen(QUEUE) == 0
    assert inflight_lists(client, "limits@test") == []


def test_a_soft_time_limit_raises_inside_the_task_which_may_clean_up(
        app, client, start_worker):
    # given a worker with one child
    worker = start_worker()
    child = getpid.delay().get(timeout=10)

    # when two tasks with soft_time_limit=0.5 wait on Redis for 10 s, one catching
    # SoftTimeLimitExceeded and one not
    submitted = time.monotonic()
    cleaned = soft_cleanup.delay(10)
    uncaught = soft_uncaught.delay(10)

    # then the first returns what it returns after cleaning up, and the second ends
    # FAILURE SoftTimeLimitExceeded, with its own traceback; neither waits the 10 s out
    assert cleaned.get(timeout=10) == "cleaned up"
    with pytest.raises(SoftTimeLimitExceeded):
        uncaught.get(timeout=10)
    assert time.monotonic() - submitted < 5
    record = read_record(client, uncaught.id)
    assert record["exc_type"] == "asyncq.exceptions.SoftTimeLimitExceeded"
    assert "soft_uncaught" in record["traceback"]
    # and the same child, interrupted twice in the middle of Redis calls, serves on
    assert add.delay(2, 3).get(timeout=10) == 5
    assert getpid.delay().get(timeout=10) == child
    assert worker.count(r"died|hard time limit") == 0


def test_time_limits_come_from_the_task_options_else_from_the_app_settings():
    # given an app (no worker: the worker reads these properties) with app-wide time limits,
    # and tasks with and without their own
    local = Celery("limits", task_time_limit=30, task_soft_time_limit=20)

    @local.task
    def inherits():
        return None

    @local.task(time_limit=5, soft_time_limit=2)
    def own():
        return None

    @local.task(task_time_limit=7)  # Celery's spelling, which asyncq honours
    def celery_spelling():
        return None

    # then a task's own option wins, and a task without one takes the app's setting ...
    assert (own.time_limit, own.soft_time_limit) == (5, 2)
    assert (inherits.time_limit, inherits.soft_time_limit) == (30, 20)
    assert (celery_spelling.time_limit, celery_spelling.soft_time_limit) == (7, 20)
    # ... as it is when the task runs, not when it was declared
    local.conf.task_time_limit = None  # Celery's "no limit"
    assert inherits.time_limit == 0
    assert own.time_limit == 5


def test_max_tasks_per_child_recycles_each_child_after_that_many_tasks(app, start_worker):
    # given a worker with one child, replaced after every 2 tasks
    worker = start_worker("--max-tasks-per-child=2")

    # when 5 tasks report the pid of the child that ran them
    pids = [result.get(timeout=20) for result in [getpid.delay() for _ in range(5)]]

    # then they came from 3 children, 2 tasks each at most, one child after the other
    per_child = Counter(pids)
    assert len(per_child) >= 3 and max(per_child.values()) <= 2, pids
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4], pids
    # and a recycled child is not a dead one
    assert worker.count(r"died") == 0


# -- 6. garbled, truncated and oversize messages -------------------------------------

def test_oversize_messages_are_dead_lettered_intact_and_an_oversize_valid_task_runs(
        app, client, start_worker):
    # given three 5 MB messages that cannot run, and one that can, pushed into the queue
    garbage = (b"\xff\x00not json " * MB)[:5 * MB]
    truncated = b'{"id": "big-truncated", "task": "tests.add", "args": ["' + b"x" * 5 * MB
    bad_args = json.dumps({"id": "big-bad-args", "task": "tests.add",
                           "args": {"a": "x" * 5 * MB}, "kwargs": {},
                           "queue": "celery"}).encode()
    for raw in (garbage, truncated, bad_args):
        client.lpush(QUEUE, raw)
    big = add.delay("y" * 5 * MB, "!")

    # when a worker takes them
    worker = start_worker()

    # then the three are set aside byte for byte, the one with a readable id failed ...
    dead = wait_while_alive(worker, lambda: client.llen(DEAD_LETTERS) == 3 and
                            client.lrange(DEAD_LETTERS, 0, -1), "3 dead letters")
    assert sorted(dead) == sorted([garbage, truncated, bad_args])
    with pytest.raises(ValueError, match="'args'"):
        app.AsyncResult("big-bad-args").get(timeout=10)
    # ... the valid one ran, and the worker, whose child never died, serves on
    value = big.get(timeout=20)
    assert len(value) == 5 * MB + 1 and value.endswith("y!")
    assert add.delay(2, 3).get(timeout=10) == 5
    assert worker.count(r"died") == 0
    assert client.llen(QUEUE) == 0


def test_bad_messages_interleaved_with_valid_tasks_are_set_aside_and_the_rest_succeed(
        app, client, start_worker):
    # given valid tasks interleaved, in the queue, with messages that cannot run
    valid_message = json.dumps({"id": "cut", "task": "tests.add", "args": [1, 2],
                                "kwargs": {}, "queue": "celery"}).encode()
    bad = [
        b"this is not JSON",
        b"",
        b"\xff\xfe\x00 binary",
        valid_message[: len(valid_message) // 2],  # truncated
        b"[1, 2, 3]",  # JSON, not an object
        b'{"task": "tests.add", "args": [], "kwargs": {}, "queue": "celery"}',  # no id
        b'{"id": "mixed-bad-args", "task": "tests.add", "args": "1,2", "kwargs": {},'
        b' "queue": "celery"}',
        b'{"id": "mixed-unregistered", "task": "tests.nope", "args": [], "kwargs": {},'
        b' "queue": "celery"}',
    ]
    results = []
    for n in range(12):
        results.append(add.delay(n, n))
        if n < len(bad):
            client.lpush(QUEUE, bad[n])

    # when a worker with two children takes them all
    worker = start_worker("--hostname=mixed@test", concurrency=2)

    # then every valid task succeeds ...
    assert [result.get(timeout=20) for result in results] == [2 * n for n in range(12)]
    # ... every bad message is set aside intact, those with a readable id failed
    dead = wait_while_alive(worker, lambda: client.llen(DEAD_LETTERS) == len(bad) and
                            client.lrange(DEAD_LETTERS, 0, -1), f"{len(bad)} dead letters")
    assert sorted(dead) == sorted(bad)
    with pytest.raises(ValueError, match="'args'"):
        app.AsyncResult("mixed-bad-args").get(timeout=10)
    with pytest.raises(NotRegistered):
        app.AsyncResult("mixed-unregistered").get(timeout=10)
    # ... and no child died on the way
    assert worker.count(r"died") == 0
    assert client.llen(QUEUE) == 0
    assert inflight_lists(client, "mixed@test") == []


@pytest.mark.parametrize("raw", [
    pytest.param(b"[" * 100_000, id="deeply-nested-json"),
    pytest.param(b'{"id": "lone-\\ud800-surrogate", "task": "tests.add", "args": [1, 2],'
                 b' "kwargs": {}, "queue": "celery"}', id="lone-surrogate-in-id"),
])
def test_a_garbled_message_that_breaks_the_decoder_is_set_aside_and_the_worker_carries_on(
        app, client, start_worker, raw):
    # given a garbled message that the JSON decoder or the Redis client chokes on
    client.lpush(QUEUE, raw)

    # when a worker takes it
    worker = start_worker("--hostname=choke@test")

    # then it is set aside intact, and the worker, still running, serves the next task
    dead = wait_while_alive(worker, lambda: client.lrange(DEAD_LETTERS, 0, -1),
                            "the message in the dead-letter list", timeout=10)
    assert dead == [raw]
    assert add.delay(2, 3).get(timeout=10) == 5
    assert worker.popen.poll() is None
    assert inflight_lists(client, "choke@test") == []


def test_a_poison_message_held_by_a_dead_worker_does_not_take_down_its_recoverer(
        app, client, start_worker, gate):
    # given a worker running an acks-late task, whose host dies just after its idle child
    # took a deeply nested message (as if the kill came between the fetch and the decode)
    fallen = start_worker("--hostname=fallen@test", concurrency=2)
    result = tally.delay(gate.key, COMPLETIONS)
    running_on(client, result, fallen, "fallen@test")
    kill_worker_host(fallen)
    poison = b"[" * 100_000
    client.lpush(inflight_key("fallen@test", 1), poison)
    gate.open()

    # when a live worker recovers the dead worker's messages after its heartbeat lapses
    survivor = start_worker("--hostname=recoverer@test")

    # then the poison is set aside intact, the acks-late task runs again to completion once,
    # and the live worker, still running, serves the next task
    with killed_on_failure(survivor):
        dead = wait_while_alive(survivor, lambda: client.lrange(DEAD_LETTERS, 0, -1),
                                "the poison in the dead-letter list", timeout=LAPSE + 20)
    assert dead == [poison]
    assert result.get(timeout=20) == result.id
    assert completions(client) == {result.id: 1}
    assert add.delay(2, 3).get(timeout=10) == 5
    assert survivor.popen.poll() is None
    assert inflight_lists(client, "fallen@test") == []

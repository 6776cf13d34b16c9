"""Fencing: a message runs only while its holder still owns it, one run at a time per
task id, and children never outlive their supervisor.

Real workers of ``tests.fenceapp`` on the suite's private redis-server. Each run of
``fence.tracked`` notes in Redis when it began and ended, and every 50 ms that it is
alive, so a test sees two runs of one task id at the same moment.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from asyncq.exceptions import WorkerLostError
from tests.conftest import (
    children_of,
    is_gone,
    kill_worker_host,
    process_state,
    queue_key,
    read_record,
    scheduled_key,
    wait_until,
)

APP = "tests.fenceapp"
LAPSE = 3.0  # tests.fenceapp's worker_lost_after


@pytest.fixture
def fence(redis_url):
    from tests import fenceapp

    fenceapp.app.reset_connection()
    yield fenceapp
    fenceapp.app.reset_connection()


def count(client, key: str) -> int:
    return int(client.get(key) or 0)


def inflight_of(fence, worker_id: str, slot: int = 0) -> str:
    return fence.app.keys.inflight("celery", worker_id, slot)


def wait_began(fence, client, result, runs: int = 1) -> None:
    wait_until(lambda: count(client, fence.began_key(result.id)) >= runs,
               f"run {runs} of {result.id} began")


def last_beats(fence, client, task_id: str) -> dict[int, float]:
    """Each run's pid and the last moment it was seen alive."""
    beats = client.hgetall(fence.beats_key(task_id))
    return {int(run.decode().split(":")[0]): float(at) for run, at in beats.items()}


# -- one run at a time per task id ------------------------------------------------------

def test_two_copies_of_one_message_never_run_at_once_and_the_task_runs_once(
        fence, client, start_worker):
    # given two byte-identical copies of one message queued before any worker runs
    result = fence.tracked.delay(1.5)
    raw = client.lindex(queue_key("celery"), 0)
    client.lpush(queue_key("celery"), raw)

    # when a worker with two idle children starts, each child taking one copy
    worker = start_worker(app=APP, concurrency=2, env={"TEST_WORKER_PREFETCH_MULTIPLIER": "1"})

    # then one copy runs; the other waits in the scheduled set, and is dropped once the
    # task is final
    assert isinstance(result.get(timeout=15), int)
    worker.wait_for(rf"Task fence\.tracked\[{result.id}\] is running elsewhere")
    worker.wait_for(rf"Task fence\.tracked\[{result.id}\] already SUCCESS: not run again",
                    timeout=15)
    assert count(client, fence.began_key(result.id)) == 1
    assert count(client, fence.ended_key(result.id)) == 1
    assert client.smembers(fence.OVERLAPS) == set()
    assert client.llen(queue_key("celery")) == 0
    assert client.zcard(scheduled_key("celery")) == 0


def test_a_copy_that_arrives_while_the_task_runs_waits_for_it(fence, client, start_worker):
    # given a task running in one child of a worker, the other child idle
    worker = start_worker(app=APP, concurrency=2, env={"TEST_WORKER_PREFETCH_MULTIPLIER": "1"})
    result = fence.tracked.delay(2.0)
    wait_began(fence, client, result)
    held = [raw for slot in (0, 1)
            for raw in client.lrange(inflight_of(fence, worker_id(worker), slot), 0, -1)]
    assert len(held) == 1

    # when a second copy of its message is queued meanwhile
    client.lpush(queue_key("celery"), held[0])

    # then the idle child does not run it beside the first; it is dropped at the end
    assert isinstance(result.get(timeout=15), int)
    worker.wait_for(rf"Task fence\.tracked\[{result.id}\] already SUCCESS: not run again",
                    timeout=15)
    assert worker.count(rf"Task fence\.tracked\[{result.id}\] is running elsewhere") >= 1
    assert count(client, fence.began_key(result.id)) == 1
    assert client.smembers(fence.OVERLAPS) == set()


def worker_id(worker) -> str:
    return worker.wait_for(r"(\S+) ready\.$").group(1)


# -- fencing: a message recovered away is not its old holder's ------------------------

def test_a_prefetched_message_recovered_away_is_not_started_by_its_old_holder(
        fence, client, start_worker):
    # given a one-child worker running one task with a second one prefetched behind it
    # (both queued before it starts, so that it takes them in one batch)
    first, second = fence.tracked.delay(1.5), fence.tracked.delay(0.1)
    worker = start_worker(app=APP, concurrency=1)
    wait_began(fence, client, first)
    inflight = inflight_of(fence, worker_id(worker))
    wait_until(lambda: client.llen(inflight) == 2, "both messages held by the child")

    # when the second message is taken back to a queue meanwhile, its record back to
    # PENDING (as recovery does for a worker presumed dead: the child started it with its
    # batch), and another worker runs it
    raw = next(m for m in client.lrange(inflight, 0, -1) if second.id.encode() in m)
    assert client.lrem(inflight, 1, raw) == 1
    record = fence.app.keys.task(second.id)
    client.hset(record, "status", "PENDING")
    client.hdel(record, "started_at", "owner")
    client.lpush(queue_key("elsewhere"), raw)
    other = start_worker("--queues=elsewhere", "--hostname=other@test", app=APP)
    assert isinstance(second.get(timeout=15), int)
    other.wait_for(rf"Task fence\.tracked\[{second.id}\] succeeded")

    # then its old holder, reaching it after the first task, does not start it
    assert isinstance(first.get(timeout=15), int)
    worker.wait_for(rf"Task fence\.tracked\[{second.id}\] is no longer held by this worker")
    assert count(client, fence.began_key(second.id)) == 1
    assert client.llen(inflight) == 0


def freeze(worker, seconds: float) -> float:
    """SIGSTOP a whole worker (supervisor and children) for ``seconds``; returns the
    time (Unix) it was woken."""
    pids = [worker.pid, *children_of(worker.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: all(process_state(pid) == "T" for pid in pids), "worker stopped")
    time.sleep(seconds)  # the freeze itself is what is being tested: no event to await
    woken = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    return woken


@pytest.mark.parametrize("acks_late", ["1", "0"])
def test_a_frozen_worker_that_wakes_up_drops_what_was_recovered_from_it(
        fence, client, start_worker, acks_late):
    # given a worker with a running task and a prefetched one (both queued before it
    # starts, so that it takes them in one batch), and a second worker
    running, prefetched = fence.tracked.delay(3.0), fence.tracked.delay(0.2)
    frozen = start_worker(app=APP, concurrency=1, env={"TEST_ACKS_LATE": acks_late})
    wait_began(fence, client, running)
    inflight = inflight_of(fence, worker_id(frozen))
    wait_until(lambda: client.llen(inflight) == 2, "both messages held")
    survivor = start_worker("--hostname=survivor@test", app=APP, concurrency=2,
                            env={"TEST_ACKS_LATE": acks_late})

    # when the first worker is frozen (SIGSTOP) for three times worker_lost_after, so the
    # survivor presumes it dead and recovers its messages, then wakes up
    woken = freeze(frozen, 3 * LAPSE)
    survivor.wait_for(r"worker \S+ lost its heartbeat: recovered 2 task\(s\)")

    # then the prefetched task runs once, on the survivor
    assert isinstance(prefetched.get(timeout=15), int)
    assert count(client, fence.began_key(prefetched.id)) == 1
    # and the woken worker's run of the taken-over task ends at once: it never runs on
    # beside the new run, and each task's body runs to its end at most once
    frozen.wait_for(rf"Task {running.id} was taken over while this worker was stopped")
    old_pid = min(last_beats(fence, client, running.id))  # the first run's child
    if acks_late == "1":  # recovered: it runs again on the survivor, to the end, once
        assert isinstance(running.get(timeout=20), int)
        assert count(client, fence.ended_key(running.id)) == 1
    else:  # early-acked: recovery ended it FAILURE WorkerLostError, and that stands
        with pytest.raises(WorkerLostError):
            running.get(timeout=15)
        assert count(client, fence.ended_key(running.id)) == 0
    assert last_beats(fence, client, running.id)[old_pid] - woken < 1.0
    assert client.smembers(fence.OVERLAPS) <= {running.id.encode()}  # only that moment
    assert read_record(client, running.id)["status"] in ("SUCCESS", "FAILURE")


# -- children never outlive their supervisor ------------------------------------------

def test_children_of_a_killed_supervisor_die_at_once_and_their_task_is_recovered(
        fence, client, start_worker):
    # given a worker whose two children run acks-late tasks, and a second worker
    doomed = start_worker(app=APP, concurrency=2, env={"TEST_WORKER_PREFETCH_MULTIPLIER": "1"})
    results = [fence.tracked.delay(2.0) for _ in range(2)]
    for result in results:
        wait_began(fence, client, result)
    children = children_of(doomed.pid)
    assert len(children) == 2
    survivor = start_worker("--hostname=survivor@test", app=APP, concurrency=2)

    # when only the supervisor is SIGKILLed
    os.kill(doomed.pid, signal.SIGKILL)

    # then its children die with it, mid-task (nobody would enforce their limits)
    wait_until(lambda: all(is_gone(pid) for pid in children), "orphaned children gone",
               timeout=2.0)
    # and their tasks are recovered like a dead host's, each run to its end once
    assert all(isinstance(r.get(timeout=LAPSE + 15), int) for r in results)
    survivor.wait_for(r"lost its heartbeat: recovered 2 task\(s\)")
    assert all(count(client, fence.ended_key(r.id)) == 1 for r in results)
    assert client.smembers(fence.OVERLAPS) == set()


def test_with_the_default_settings_a_dead_hosts_task_is_back_within_15_seconds(
        fence, client, start_worker):
    # given two workers with the default heartbeat settings, one running an acks-late task
    defaults = {"TEST_WORKER_HEARTBEAT_INTERVAL": "", "TEST_WORKER_LOST_AFTER": ""}
    doomed = start_worker("--hostname=doomed@test", app=APP, env=defaults)
    result = fence.tracked.delay(1.0)
    wait_began(fence, client, result)
    start_worker("--hostname=survivor@test", app=APP, env=defaults)

    # when the worker's host dies (supervisor and children SIGKILLed)
    kill_worker_host(doomed)
    killed_at = time.monotonic()

    # then the task starts again on the survivor within 15 s of the kill
    wait_until(lambda: count(client, fence.began_key(result.id)) == 2,
               "the task started again", timeout=20)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= 15, f"recovered {elapsed:.1f}s after the kill"
    assert isinstance(result.get(timeout=10), int)

"""Any final state passes on (issue 15): whatever ends a step of a workflow, the workflow
reacts as it does to a raised exception.

A step may end by returning or raising, and also by its child being killed past the
redelivery limit, by its hard time limit, by a revoke (queued, scheduled, not yet queued,
or running with terminate=True), by expiry, by being dead-lettered, or by a dead worker's
recovery. Each way: the rest of a chain ends FAILURE (REVOKED for a revoke) with the
step's error, a chord's body ends FAILURE, link_error callbacks run, and every .get() on
the workflow raises promptly rather than waiting forever. And a crash between storing a
step's state and applying what follows it still completes the workflow.

Real redis-server, real worker processes (tests.canvasapp: heartbeats every 0.5 s, a dead
worker's heartbeat lapses after 3 s, a redelivery limit of 1); every wait is bounded.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from asyncq import chain, chord, group, signature
from asyncq.exceptions import (
    ChordError,
    NotRegistered,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from tests.canvasapp import (
    CRASHES,
    ERRBACKS,
    add,
    block,
    crash_after_store,
    deliveries_key,
    errback_old,
    limited,
    mark,
    suicide,
    xsum,
)
from tests.conftest import (
    DEAD_LETTERS,
    QUEUE,
    chain_nodes,
    is_gone,
    kill_worker_host,
    scheduled_key,
    wait_for_progress_pid,
    wait_for_states,
    wait_until,
)

APP = "tests.canvasapp"
T = 15  # seconds any one .get() may wait: each ending here takes a few seconds at most
LIMIT = 1  # tests.canvasapp's task_redelivery_limit
LAPSE = 3.0  # tests.canvasapp's worker_lost_after


@pytest.fixture
def worker(capp, start_worker):
    """Start a worker of the canvas app (one child unless told otherwise)."""
    assert capp.conf.task_redelivery_limit == LIMIT

    def start(*extra: str, concurrency: int = 1, **options):
        return start_worker(*extra, app=APP, concurrency=concurrency, **options)

    return start


def key(name: str) -> str:
    """A fresh Redis key for one test's traces."""
    return f"test:{name}:{uuid.uuid4().hex}"


def errback_calls(client) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(ERRBACKS, 0, -1)]


def wait_for_errbacks(client, count: int, timeout: float = 10.0) -> list[dict]:
    return wait_until(lambda: len(calls := errback_calls(client)) >= count and calls,
                      f"{count} errback call(s) recorded in {ERRBACKS}", timeout)


def only_errback(client, task_id: str) -> None:
    """The old-style errback was called once, with ``task_id``; and not again: a task
    queued after that call (the worker has one child) runs after any errback queued with
    it."""
    calls = wait_for_errbacks(client, 1)
    assert mark.delay("sentinel", key("sentinel")).get(timeout=T) == "sentinel"
    assert errback_calls(client) == calls == [{"style": "old", "id": task_id}]


def received(worker_process, task_name: str, task_id: str) -> int:
    return worker_process.count(rf"Task {task_name}\[{task_id}\] received")


def deliveries(client, task_id: str) -> int:
    return int(client.get(deliveries_key(task_id)) or 0)


def running(result) -> None:
    """Wait until a canvas.block task reports that it runs (its PROGRESS meta)."""
    wait_until(lambda: result.state == "PROGRESS", f"task {result.id} running")


# -- the six endings that hang today ------------------------------------------------------

def test_a_chain_step_whose_child_dies_past_the_redelivery_limit_fails_the_rest(
        capp, client, worker):
    # given a worker, and a chain whose second step kills its own child every time it runs
    worker()
    trail = key("trail")
    result = chain(add.s(1, 2), suicide.s(), mark.s(trail), mark.s(trail)).on_error(
        errback_old.s())()
    last, third, killed, first = chain_nodes(result)

    # then, the step delivered 1 + limit times, .get() on the chain raises WorkerLostError
    with pytest.raises(WorkerLostError):
        result.get(timeout=T)
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        killed.get(timeout=T)
    assert deliveries(client, killed.id) == 1 + LIMIT
    # and the rest of the chain ends FAILURE with the step's error, never having run
    wait_for_states([first, killed, third, last], ["SUCCESS", "FAILURE", "FAILURE", "FAILURE"])
    assert first.get(timeout=T) == 3
    assert isinstance(third.result, WorkerLostError)
    assert isinstance(last.result, WorkerLostError)
    assert not client.exists(trail)
    # and the chain's errback is called once, with the failed step's id
    only_errback(client, killed.id)
    assert client.llen(QUEUE) == 0


def test_a_chain_step_past_its_time_limit_fails_the_rest(capp, client, worker):
    # given a worker, and a chain whose second step sleeps 30 s past its 1 s time limit
    worker()
    trail = key("trail")
    submitted = time.monotonic()
    result = chain(add.s(1, 2), limited.s(), mark.s(trail)).on_error(errback_old.s())()
    last, limited_step, first = chain_nodes(result)

    # then .get() on the chain raises TimeLimitExceeded soon after the limit
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=T)
    assert time.monotonic() - submitted < 10
    with pytest.raises(TimeLimitExceeded, match="time limit"):
        limited_step.get(timeout=T)
    # and the rest of the chain ends FAILURE with that error, never having run
    wait_for_states([first, limited_step, last], ["SUCCESS", "FAILURE", "FAILURE"])
    assert isinstance(last.result, TimeLimitExceeded)
    assert not client.exists(trail)
    only_errback(client, limited_step.id)


def test_a_chain_step_revoked_while_queued_revokes_the_rest(capp, client, worker, gate):
    # given a worker whose only child is busy, and a chain whose first step waits in the
    # queue behind it
    worker()
    trail = key("trail")
    blocker = block.delay(gate.key)
    running(blocker)
    result = chain(mark.si("first", trail), mark.si("second", trail),
                   mark.si("third", trail)).on_error(errback_old.s())()
    last, second, first = chain_nodes(result)
    assert client.llen(QUEUE) == 1
    assert first.state == "PENDING"

    # when the queued step is revoked, and the child freed
    assert first.revoke() is not False
    gate.open()

    # then .get() on the chain raises TaskRevokedError; every step ends REVOKED, none ran
    with pytest.raises(TaskRevokedError):
        result.get(timeout=T)
    wait_for_states([first, second, last], ["REVOKED", "REVOKED", "REVOKED"])
    assert blocker.get(timeout=T) == "released"
    assert not client.exists(trail)
    # and the errback is called for the revoked step (asyncq, as issue 15 asks: Celery
    # calls no errback for a revoke)
    only_errback(client, first.id)


def test_a_chain_step_revoked_while_running_with_terminate_revokes_the_rest(
        capp, client, worker, gate):
    # given a worker running the first step of a chain
    w = worker()
    trail = key("trail")
    result = chain(block.si(gate.key), mark.s(trail), mark.s(trail)).on_error(
        errback_old.s())()
    last, second, first = chain_nodes(result)
    pid = wait_for_progress_pid(first)

    # when that step is revoked with terminate=True
    first.revoke(terminate=True)

    # then its child is killed, .get() on the chain raises TaskRevokedError, and the rest
    # of the chain ends REVOKED without running
    with pytest.raises(TaskRevokedError):
        result.get(timeout=T)
    wait_until(lambda: is_gone(pid), f"the child {pid} running the revoked step killed")
    wait_for_states([first, second, last], ["REVOKED", "REVOKED", "REVOKED"])
    assert not client.exists(trail)
    assert received(w, "canvas.mark", second.id) == 0
    only_errback(client, first.id)


def test_a_chord_member_whose_child_dies_past_the_redelivery_limit_fails_the_body(
        capp, client, worker):
    # given a worker, and a chord one of whose members kills its own child every time
    w = worker(concurrency=2)
    result = chord([add.s(1, 1), suicide.s(), add.s(2, 2)],
                   xsum.s().on_error(errback_old.s()))()
    members = result.parent.results

    # then .get() on the chord raises the member's error (Celery: the member's error; the
    # body's own record may hold it or a ChordError naming the member)
    with pytest.raises((WorkerLostError, ChordError)):
        result.get(timeout=T)
    # and the body ends FAILURE without running; the other members succeed
    wait_for_states([result], ["FAILURE"])
    assert result.parent.join(timeout=T, propagate=False)[0] == 2
    assert [member.state for member in members] == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert isinstance(members[1].result, WorkerLostError)
    assert deliveries(client, members[1].id) == 1 + LIMIT
    assert received(w, "canvas.xsum", result.id) == 0
    # and the body's errback is called with the body's id, as Celery does
    assert wait_for_errbacks(client, 1) == [{"style": "old", "id": result.id}]


def test_a_chord_member_past_its_time_limit_fails_the_body(capp, client, worker):
    # given a worker, and a chord one of whose members sleeps past its 1 s time limit
    w = worker(concurrency=2)
    submitted = time.monotonic()
    result = chord([add.s(1, 1), limited.s()], xsum.s().on_error(errback_old.s()))()
    members = result.parent.results

    # then .get() on the chord raises soon after the limit, and the body ends FAILURE
    # without running
    with pytest.raises((TimeLimitExceeded, ChordError)):
        result.get(timeout=T)
    assert time.monotonic() - submitted < 10
    wait_for_states([result, *members], ["FAILURE", "SUCCESS", "FAILURE"])
    assert isinstance(members[1].result, TimeLimitExceeded)
    assert received(w, "canvas.xsum", result.id) == 0
    assert wait_for_errbacks(client, 1) == [{"style": "old", "id": result.id}]


# -- a crash between storing a step's state and applying what follows it --------------------

def test_a_crash_after_a_chain_step_stored_its_state_still_runs_the_next_step(
        capp, client, worker):
    # given a worker with one child, and a chain whose middle step's child is SIGKILLed
    # at its first write to Redis once the step's SUCCESS is stored (before it applies
    # what follows, if it does that apart)
    w = worker()
    trail = key("trail")
    result = chain(add.s(1, 2), crash_after_store.s(), mark.s(trail))()
    last, crashed, first = chain_nodes(result)

    # then the chain still completes, the next step having run once
    assert result.get(timeout=T) == 3
    assert [json.loads(raw) for raw in client.lrange(CRASHES, 0, -1)] == [
        {"id": crashed.id, "state": "SUCCESS"}]
    w.wait_for(r"died: signal 9 \(SIGKILL\)")
    assert crashed.get(timeout=T) == 3
    assert deliveries(client, crashed.id) == 1  # its body ran once: it was not run again
    assert [json.loads(raw) for raw in client.lrange(trail, 0, -1)] == [3]
    assert [first.state, crashed.state, last.state] == ["SUCCESS", "SUCCESS", "SUCCESS"]


def test_a_crash_after_a_chord_member_stored_its_state_still_runs_the_body(
        capp, client, worker):
    w = worker(concurrency=2)
    result = chord([crash_after_store.s(5), add.s(1, 1)], xsum.s())()
    crashed = result.parent.results[0]

    assert result.get(timeout=T) == 7
    assert [json.loads(raw) for raw in client.lrange(CRASHES, 0, -1)] == [
        {"id": crashed.id, "state": "SUCCESS"}]
    w.wait_for(r"died: signal 9 \(SIGKILL\)")
    assert deliveries(client, crashed.id) == 1
    w.wait_for(rf"Task canvas\.xsum\[{result.id}\] received")
    assert received(w, "canvas.xsum", result.id) == 1  # the body ran once


# -- the other endings: a dead worker, expiry, dead letters, revokes before a step runs -------

def test_a_chain_step_lost_with_its_worker_host_fails_the_rest_once_recovered(
        capp, client, worker, gate):
    # given a worker running an (early-acked) chain step, and a second worker
    doomed = worker("--hostname=doomed@test")
    trail = key("trail")
    result = chain(block.si(gate.key), mark.s(trail), mark.s(trail)).on_error(
        errback_old.s())()
    last, second, lost = chain_nodes(result)
    wait_for_progress_pid(lost)
    worker("--hostname=survivor@test")

    # when the first worker's host dies (supervisor and child SIGKILLed together)
    kill_worker_host(doomed)

    # then, once its heartbeat lapses, the live worker fails the step WorkerLostError and
    # the rest of the chain ends FAILURE with it; .get() on the chain raises it
    with pytest.raises(WorkerLostError, match="heartbeats"):
        lost.get(timeout=LAPSE + T)
    with pytest.raises(WorkerLostError):
        result.get(timeout=T)
    wait_for_states([lost, second, last], ["FAILURE", "FAILURE", "FAILURE"])
    assert not client.exists(trail)
    only_errback(client, lost.id)


def test_a_chain_step_that_expires_in_the_queue_revokes_the_rest(capp, client, worker, gate):
    # given a worker whose only child is busy, and a chain whose first step, which expires
    # 1 s after it is sent, waits in the queue behind it
    worker()
    trail = key("trail")
    blocker = block.delay(gate.key)
    running(blocker)
    sent = time.time()
    result = chain(mark.si("first", trail).set(expires=1), mark.si("second", trail)).on_error(
        errback_old.s())()
    last, first = chain_nodes(result)
    assert client.llen(QUEUE) == 1

    # when its expiry passes before the child is free (the awaited thing is time itself)
    time.sleep(max(0.0, sent + 1.2 - time.time()))
    gate.open()

    # then the step ends REVOKED unrun, and .get() on the chain raises TaskRevokedError
    with pytest.raises(TaskRevokedError):
        result.get(timeout=T)
    wait_until(lambda: first.state == "REVOKED" and last.ready(), "the whole chain final")
    assert not client.exists(trail)
    only_errback(client, first.id)


def test_a_dead_lettered_chain_step_fails_the_rest(capp, client, worker):
    # given a worker, and a chain whose middle step names a task no worker has
    worker()
    trail = key("trail")
    result = chain(add.s(1, 2), signature("canvas.nowhere"), mark.s(trail)).on_error(
        errback_old.s())()
    last, lost, first = chain_nodes(result)

    # then that step's message is set aside, the step fails NotRegistered, and the rest of
    # the chain ends FAILURE with it; .get() on the chain raises it
    with pytest.raises(NotRegistered):
        result.get(timeout=T)
    wait_for_states([first, lost, last], ["SUCCESS", "FAILURE", "FAILURE"])
    dead = wait_until(lambda: client.lrange(DEAD_LETTERS, 0, -1), "the dead letter")
    assert [json.loads(raw)["id"] for raw in dead] == [lost.id]
    assert not client.exists(trail)
    only_errback(client, lost.id)


def test_a_chain_step_revoked_while_scheduled_revokes_the_rest(capp, client, worker):
    # given a worker, and a chain sent with a countdown: its first step is scheduled
    worker()
    trail = key("trail")
    result = chain(mark.si("first", trail), mark.si("second", trail)).on_error(
        errback_old.s()).apply_async(countdown=2)
    last, first = chain_nodes(result)
    assert client.zcard(scheduled_key()) == 1

    # when the scheduled step is revoked before it is due
    first.revoke()

    # then the chain ends REVOKED, none of it having run, and .get() raises
    with pytest.raises(TaskRevokedError):
        result.get(timeout=T)
    wait_for_states([first, last], ["REVOKED", "REVOKED"])
    assert not client.exists(trail)
    only_errback(client, first.id)


def test_a_chain_step_revoked_before_its_turn_revokes_the_rest(capp, client, worker, gate):
    # given a worker running the first step of a chain: the second is not queued yet
    worker()
    trail = key("trail")
    result = chain(block.si(gate.key), mark.si("second", trail),
                   mark.si("third", trail)).on_error(errback_old.s())()
    last, second, first = chain_nodes(result)
    wait_for_progress_pid(first)
    assert second.state == "PENDING"

    # when the second step is revoked, then the first one finishes
    second.revoke()
    gate.open()

    # then the first succeeds, the rest ends REVOKED unrun, and .get() raises
    with pytest.raises(TaskRevokedError):
        result.get(timeout=T)
    wait_for_states([first, second, last], ["SUCCESS", "REVOKED", "REVOKED"])
    assert first.get(timeout=T) == "released"
    assert not client.exists(trail)
    only_errback(client, second.id)


def test_a_chord_member_revoked_while_queued_fails_the_body(capp, client, worker, gate):
    # given a worker whose only child is busy, and a chord whose members wait behind it
    w = worker()
    blocker = block.delay(gate.key)
    running(blocker)
    result = chord([add.s(1, 1), add.s(2, 2)], xsum.s().on_error(errback_old.s()))()
    members = result.parent.results

    # when a member is revoked, and the child freed
    members[1].revoke()
    gate.open()

    # then the body ends FAILURE without running, and .get() on the chord raises
    with pytest.raises((TaskRevokedError, ChordError)):
        result.get(timeout=T)
    wait_for_states([result, *members], ["FAILURE", "SUCCESS", "REVOKED"])
    assert received(w, "canvas.xsum", result.id) == 0
    assert wait_for_errbacks(client, 1) == [{"style": "old", "id": result.id}]


def test_a_dead_lettered_chord_member_fails_the_body(capp, client, worker):
    w = worker()
    result = chord([add.s(1, 1), signature("canvas.nowhere")], xsum.s())()
    members = result.parent.results
    with pytest.raises((NotRegistered, ChordError)):
        result.get(timeout=T)
    wait_for_states([result, *members], ["FAILURE", "SUCCESS", "FAILURE"])
    assert received(w, "canvas.xsum", result.id) == 0


# -- nested canvases --------------------------------------------------------------------------

def test_a_killed_step_inside_nested_canvases_ends_every_get(capp, client, worker):
    # given a worker with two children
    worker(concurrency=2)
    trail = key("trail")

    # when a step that kills its child sits in a chain inside a group, and in a group
    # inside a chain (which makes that group a chord header)
    in_group = group(chain(add.s(1, 1), suicide.s(), add.s(1)), add.s(2, 2))()
    in_chain = chain(add.s(1, 1), group(suicide.s(), add.s(1)), xsum.s(), mark.s(trail))()

    # then both .get() raise, and everything after the killed step ends FAILURE
    with pytest.raises(WorkerLostError):
        in_group.get(timeout=T)
    assert in_group.results[1].get(timeout=T) == 4
    with pytest.raises((WorkerLostError, ChordError)):
        in_chain.get(timeout=T)
    wait_for_states([in_group.results[0], in_chain, in_chain.parent],
                    ["FAILURE", "FAILURE", "FAILURE"])
    assert not client.exists(trail)

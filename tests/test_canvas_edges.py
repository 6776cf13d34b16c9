"""Canvas edges found in review: a big chord stays small in Redis, a follow-up Redis
refuses is kept rather than lost, errbacks get the error even without a record, and
Celery's calling details (options on a group call, a chord's task_id, group.link,
an empty chain, a chord dict as Celery writes it)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from asyncq import chain, chord, group, maybe_signature, signature
from asyncq.exceptions import TaskRevokedError
from tests.canvasapp import (
    ERRBACKS,
    Boom,
    add,
    boom,
    errback_new,
    identity,
    quiet_boom,
    sleepy,
    xsum,
)
from tests.conftest import read_record, wait_until

APP = "tests.canvasapp"
T = 15


@pytest.fixture
def worker(capp, start_worker):
    def start(*extra: str, concurrency: int = 2):
        return start_worker(*extra, app=APP, concurrency=concurrency)
    return start


def errback_calls(client) -> list[dict]:
    return [json.loads(entry) for entry in client.lrange(ERRBACKS, 0, -1)]


def test_a_chord_of_many_members_keeps_each_members_record_small(capp, client, worker):
    # given a chord of 500 members (sent before any worker runs)
    result = chord([add.s(i, i) for i in range(500)], xsum.s()).apply_async()

    # then each member's record says which chord it counts towards, not the whole body
    member = result.parent.results[0].id
    assert len(read_record(client, member)["then"]) < 400
    # and the chord runs to its sum
    worker()
    assert result.get(timeout=30) == sum(2 * i for i in range(500))


def test_a_follow_up_redis_refuses_is_kept_as_a_dead_letter_and_runs_when_requeued(
        capp, client, worker):
    # given a chain whose second step's queue key was damaged (a string, not a list)
    w = worker("--queues=celery,second")
    client.set(capp.keys.queue("second"), "not a list")
    result = chain(add.s(1, 1), add.s(10).set(queue="second")).apply_async()
    first = result.parent

    # when the first step ends and its follow-up (pushing the second step) is refused
    wait_until(lambda: first.state == "SUCCESS", "first step done")
    w.wait_for(r"a canvas follow-up failed .*WRONGTYPE")

    # then nothing is lost: the plan stays in the record, the message is a dead letter
    assert "after" in read_record(client, first.id)
    assert client.llen(capp.keys.dead_letters()) == 1
    # and once the key is repaired, requeuing the dead letter finishes the chain
    client.delete(capp.keys.queue("second"))
    client.lmove(capp.keys.dead_letters(), capp.keys.queue("celery"), "RIGHT", "LEFT")
    assert result.get(timeout=T) == 12
    assert "after" not in read_record(client, first.id)


def test_an_errback_learns_the_error_of_a_task_whose_result_is_not_kept(capp, client, worker):
    worker()
    result = quiet_boom.apply_async((1,), link_error=errback_new.s())
    wait_until(lambda: client.llen(ERRBACKS) == 1, "the errback ran")
    call = errback_calls(client)[0]
    assert call["id"] == result.id
    assert call["exc_type"].endswith("Boom") and call["exc"] == "quietly"


def test_a_chain_step_takes_a_datetime_argument(capp, worker):
    worker()
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert chain(add.s(1, 1), identity.si(when)).delay().get(timeout=T) == when


def test_a_later_steps_expiry_counts_from_when_it_is_queued(capp, worker):
    # given a chain whose second step expires 2 s after it is queued, behind a 3 s step
    worker()
    result = chain(sleepy.si(3), add.si(1, 2).set(expires=2)).apply_async()
    # then the second step runs (it was queued only when the first ended)
    assert result.get(timeout=T) == 3
    # while a step expiring before its predecessor ends is revoked
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    late = chain(sleepy.si(0.5), add.si(1, 2).set(expires=past)).apply_async()
    with pytest.raises(TaskRevokedError):
        late.get(timeout=T)


def test_errbacks_of_chords_further_on_are_not_called(capp, client, worker):
    # given a failing step ahead of a chord whose body has an errback
    worker()
    result = chain(boom.s(0), chord([add.s(1)], xsum.s().on_error(errback_new.s()))).delay()
    with pytest.raises(Boom, match="in step"):
        result.get(timeout=T)
    # then that chord never started, so its errback is not called (as in Celery)
    assert result.state == "FAILURE"
    assert errback_calls(client) == []


def test_calling_details_as_in_celery(capp, client, worker):
    worker()
    # a group call takes options as options, not as task keywords
    assert group(add.s(1, 1), add.s(2, 2))(countdown=0.5).get(timeout=T) == [2, 4]
    # a chord's task_id is its body's, and its result's id
    fixed = chord([add.s(1, 1)], xsum.s()).apply_async(task_id="chord-fixed-id")
    assert fixed.id == "chord-fixed-id" and fixed.get(timeout=T) == 2
    # group.link follows the first task only, immutably; a link option is refused
    linked = group(add.s(1, 1), add.s(2, 2))
    linked.link(identity.si("after the first"))
    assert linked.delay().get(timeout=T) == [2, 4]
    with pytest.raises(TypeError, match="link"):
        group(add.s(1, 1)).apply_async(link=identity.s())
    # an empty chain grows with |=, and sends nothing while empty
    grown = chain()
    assert grown.apply_async() is None
    grown |= add.s(1, 1)
    assert grown.delay().get(timeout=T) == 2
    # a chord dict as Celery writes it (header a list) loads and runs
    celery_made = {"task": "celery.chord", "args": [], "options": {}, "immutable": False,
                   "subtask_type": "chord",
                   "kwargs": {"header": [dict(add.s(1, 2)), dict(add.s(3, 4))],
                              "body": dict(xsum.s())}}
    assert maybe_signature(celery_made, app=capp).delay().get(timeout=T) == 10
    # signature() of a signature is a copy
    original = add.s(1, 1)
    signature(original).set(countdown=5)
    assert "countdown" not in original.options

"""A crash between storing a canvas step's final state and applying its follow-ups.

The record part of a step's finish stores the final state together with the plan of
what follows (field ``after``); the follow-ups are applied, and the plan cleared,
in the next round trip. A child SIGKILLed between the two leaves exactly this: a
final record holding ``after``, and the step's message still in the dead child's
in-flight list. These tests make that state with the broker's own commands (the
same ones the child sends), then let a real worker find it, through the two paths
that do: recovery of a dead worker's in-flight list, and a redelivered copy met at
``start``. Either way the workflow completes, and the plan is cleared.
"""

from __future__ import annotations

import json

import pytest

from asyncq import chain, chord
from asyncq.broker import final_notice, now
from asyncq.message import Message
from tests.conftest import queue_key, read_record

APP = "tests.canvasapp"


def finish_then_die(app, client, inflight: str) -> list[str]:
    """Take every queued message into ``inflight`` and run, for each, the record part
    of a SUCCESS finish (state and follow-up plan), as a child does before its
    SIGKILL; nothing after it. Returns the ids of those steps."""
    broker, finished = app.broker, []
    while (raw := client.lmove(queue_key("celery"), inflight, "RIGHT", "LEFT")) is not None:
        message = Message.decode(raw)
        result = sum(message.args) if message.task == "canvas.add" else message.args[0]
        fields = {"status": "SUCCESS", "result": json.dumps(result), "finished_at": now()}
        plan = broker._plan(message.id, None, fields)
        broker._in_stages([broker._store_state(message.id, fields, broker.result_ttl,
                                               final_notice(fields), plan)])
        finished.append(message.id)
    return finished


@pytest.mark.parametrize("found_by", ["recovery of the dead worker", "a redelivered copy"])
def test_a_crash_between_a_steps_state_and_its_follow_ups_still_completes_the_workflow(
        capp, client, start_worker, found_by):
    from tests.canvasapp import add, xsum

    # given a chain and a chord whose first steps a child finished, storing each final
    # state with its follow-up plan, and was then killed before applying any of them
    chained = chain(add.s(1, 1), add.s(10), add.s(100)).apply_async()
    chorded = chord([add.s(2, 2), add.s(3, 3)], xsum.s()).apply_async()
    ghost = "ghost@lost-host"
    inflight = capp.keys.inflight("celery", ghost, 0)
    client.hset(capp.keys.workers(), ghost, json.dumps({"concurrency": 1, "queues": ["celery"]}))
    finished = finish_then_die(capp, client, inflight)
    assert len(finished) == 3
    assert all(read_record(client, task_id).get("after") for task_id in finished)
    assert chained.parent.parent.state == "SUCCESS" and chained.state == "PENDING"
    assert chorded.state == "PENDING"
    if found_by == "a redelivered copy":  # the message went back on its queue instead
        client.hdel(capp.keys.workers(), ghost)
        for raw in client.lrange(inflight, 0, -1):
            client.lpush(queue_key("celery"), raw)
        client.delete(inflight)

    # when a worker starts and finds them
    start_worker(app=APP, concurrency=2)

    # then the follow-ups are applied: the workflows complete, and no plan is left
    assert chained.get(timeout=20) == 112
    assert chorded.get(timeout=20) == 10
    assert all("after" not in read_record(client, task_id) for task_id in finished)
    assert client.llen(inflight) == 0

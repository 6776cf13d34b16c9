"""Submitting a task: the PENDING record and the queued message, as Redis holds them.

No worker runs in these tests, so whatever is in Redis was put there by the submit.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from asyncq import AsyncResult
from asyncq.exceptions import EncodeError, UnknownTaskError
from tests.conftest import QUEUE, asyncq_keys, queue_key, read_record, task_key
from tests.taskapp import add, progress, whoami


def test_delay_records_pending_and_queues_the_message(app, client):
    # given no worker running
    before = time.time()

    # when a task is submitted
    result = add.delay(2, 3)

    # then its record says PENDING ...
    record = read_record(client, result.id)
    assert record["status"] == "PENDING"
    assert record["task"] == "tests.add"
    assert record["queue"] == "celery"
    assert before <= float(record["submitted_at"]) <= time.time()
    assert result.state == "PENDING"
    # ... with a safety TTL, so that it cannot live forever ...
    assert 0 < client.ttl(task_key(result.id)) <= app.conf.task_record_ttl
    # ... and its message waits in the default queue, as JSON
    messages = client.lrange(QUEUE, 0, -1)
    assert len(messages) == 1
    assert json.loads(messages[0]) == {"id": result.id, "task": "tests.add", "args": [2, 3],
                                       "kwargs": {}, "queue": "celery"}


def test_record_then_message_are_written_in_one_round_trip_record_first(app, redis_url):
    # given a connection that watches every command the server runs
    watcher = redis.Redis.from_url(redis_url, socket_timeout=5)
    add.app.broker.client.ping()  # connect first, so that only the submit is watched
    add.app.broker.eviction_warning()  # read once per connection: not part of a submit
    with watcher.monitor() as monitor:
        # when a task is submitted
        result = add.delay(1, 2)
        seen = [monitor.next_command()]
        while not seen[-1]["command"].startswith("LPUSH"):
            seen.append(monitor.next_command())
    watcher.close()

    # then on a single Redis the record (a script: the record's own slot) is written,
    # then the message is pushed (the queue's slot), from one connection in one pipeline
    sent = [c for c in seen if c["client_type"] != "lua"]
    inside = [c["command"] for c in seen if c["client_type"] == "lua"]
    assert [c["command"].split()[0] for c in sent] == ["EVAL", "LPUSH"], seen
    assert len({c["client_address"] + str(c["client_port"]) for c in sent}) == 1, seen
    assert any(c.startswith(f"HSET {task_key(result.id)} ") for c in inside), seen
    assert sent[-1]["command"].startswith(f"LPUSH {QUEUE} "), seen


def test_an_unknown_id_is_unknown_not_pending(app):
    # given an id that was never submitted
    result = AsyncResult("no-such-task", app=app)

    # then it is reported UNKNOWN, never PENDING, and there is nothing to wait for
    assert result.state == "UNKNOWN"
    assert result.status == "UNKNOWN"
    assert not result.ready()
    started = time.monotonic()
    with pytest.raises(UnknownTaskError):
        result.get(timeout=5)
    assert time.monotonic() - started < 1.0


def test_apply_async_honours_task_id_and_queue(app, client):
    # when a task is submitted with its own id, to another queue
    result = add.apply_async((4, 5), task_id="my-own-id", queue="other")

    # then that id is used, and the message goes to that queue only
    assert result.id == "my-own-id"
    assert read_record(client, "my-own-id")["queue"] == "other"
    messages = client.lrange(queue_key("other"), 0, -1)
    assert [json.loads(m) for m in messages] == [
        {"id": "my-own-id", "task": "tests.add", "args": [4, 5], "kwargs": {}, "queue": "other"}]
    assert client.llen(QUEUE) == 0


@pytest.mark.parametrize(("args", "kwargs"), [
    pytest.param(({1, 2}, 3), {}, id="set"),
    pytest.param((object(), 3), {}, id="object"),
    pytest.param((1,), {"b": b"bytes"}, id="bytes-kwarg"),
    pytest.param((float("nan"), 1), {}, id="nan"),
])
def test_arguments_that_are_not_json_fail_at_submit_and_queue_nothing(app, client, args, kwargs):
    # when a task is submitted with arguments JSON cannot carry
    with pytest.raises(EncodeError) as error:
        add.apply_async(args, kwargs)

    # then the error says which task, it is a TypeError too, and nothing reached Redis
    assert "tests.add" in str(error.value)
    assert isinstance(error.value, TypeError)
    assert asyncq_keys(client) == []


def test_calling_a_task_runs_it_inline_without_redis(app, monkeypatch):
    # given a broker that cannot be reached
    monkeypatch.setenv("ASYNCQ_BROKER_URL", "redis://127.0.0.1:1/0")
    app.reset_connection()

    # when tasks are called like functions
    total = add(2, 3)
    request = whoami(7, flag=True)
    report = progress(2)  # its update_state calls do nothing inline

    # then they run here and now, and a bound task sees a direct call
    assert total == 5
    assert request == {"id": None, "args": [7], "kwargs": {"flag": True}, "hostname": None,
                       "called_directly": True, "routing_key": None}
    assert report == {"done": 2, "id": None, "args": [2]}
    # and Redis really was out of reach: queueing fails
    with pytest.raises(redis.ConnectionError):
        add.delay(2, 3)


def test_a_finish_tried_again_after_its_answer_was_lost_still_counts_as_stored(app, client):
    # given a task taken into a child's in-flight list
    from asyncq.message import Message

    result = add.delay(2, 3)
    inflight = app.keys.inflight("celery", "w@test", 0)
    raw = client.lmove(QUEUE, inflight, "RIGHT", "LEFT")
    message = Message.decode(raw)
    fields = {"status": "SUCCESS", "result": "5", "finished_at": "1700000000.000001"}

    # when the finish runs, and runs again as a retry after a lost answer would
    first = app.broker.finish(message, inflight, fields)
    again = app.broker.finish(message, inflight, fields)
    # and a stray copy with another outcome tries to finish it too
    client.lpush(inflight, raw)
    stray = app.broker.finish(message, inflight, {**fields, "finished_at": "1700000001.0"})

    # then the first and its retry both report the store (so the worker counts it once,
    # whichever answer reached it), the stray copy does not, and nothing is held
    assert (first, again, stray) == (True, True, False)
    assert result.get(timeout=1) == 5
    assert client.llen(inflight) == 0


def test_an_ignored_result_is_deleted_with_the_ack_not_before(app, client):
    # given a task taken into a child's in-flight list
    from asyncq.message import Message

    add.delay(1, 1)
    inflight = app.keys.inflight("celery", "w@test", 0)
    message = Message.decode(client.lmove(QUEUE, inflight, "RIGHT", "LEFT"))
    fields = {"status": "SUCCESS", "result": "2", "finished_at": "1700000000.5"}

    # when only the record part of an ignore_result finish ran (a crash before the ack)
    store = app.broker._eval(app.broker._store, [task_key(message.id)],
                             [60, "channel", "final", "", "", *[x for kv in fields.items()
                                                            for x in kv]])
    app.broker._in_stages([store])
    # then a copy delivered again finds the final state and is dropped, not run again
    assert app.broker.start(message, inflight, "w@test", True, True) == ("SUCCESS", "")
    assert client.llen(inflight) == 0

    # and a whole ignore_result finish stores the final state first, then acks and
    # deletes the record, leaving neither record nor message
    add.delay(1, 1)
    message = Message.decode(client.lmove(QUEUE, inflight, "RIGHT", "LEFT"))
    watcher = redis.Redis.from_url(app.conf.broker, socket_timeout=5)
    with watcher.monitor() as monitor:
        assert app.broker.finish(message, inflight, fields, keep_result=False)
        seen = [monitor.next_command()["command"].split()[0]]
        while seen[-1] != "DEL":
            seen.append(monitor.next_command()["command"].split()[0])
    watcher.close()
    assert seen.index("HSET") < seen.index("LREM") < seen.index("DEL"), seen
    assert not client.exists(task_key(message.id))
    assert client.llen(inflight) == 0


def test_calls_of_one_script_in_a_stage_go_as_one_eval_each_failing_on_its_own(app, client):
    # given three submitted tasks, the middle one's record damaged (a string, not a hash)
    ids = [add.delay(i, i).id for i in range(3)]
    client.delete(task_key(ids[1]))
    client.set(task_key(ids[1]), "junk")
    fields = {"status": "SUCCESS", "result": "2", "finished_at": "1700000000.5"}
    stores = [app.broker._eval(app.broker._store, [task_key(task_id)],
                               [60, "channel", "final", "", "",
                                *[x for kv in fields.items() for x in kv]])
              for task_id in ids]
    evals_before = client.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)

    # when the three stores go as one stage on a single Redis
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        app.broker._in_stages(stores)

    # then Redis ran one EVAL for the three (its own INFO read is not an EVAL) ...
    evals_after = client.info("commandstats")["cmdstat_eval"]["calls"]
    assert evals_after - evals_before == 1
    # ... the damaged one failed as it would alone, and the others stored all the same
    assert client.get(task_key(ids[1])) == b"junk"
    for task_id in (ids[0], ids[2]):
        assert read_record(client, task_id)["status"] == "SUCCESS"
        assert 0 < client.ttl(task_key(task_id)) <= 60

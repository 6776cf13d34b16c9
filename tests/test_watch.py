"""Watching from the command line: ``asyncq inspect``, ``status [--wait]`` and ``events``,
run as real commands against real workers and a real Redis."""

from __future__ import annotations

import io
import json
import re
import signal
import time

import pytest
from click import unstyle

from asyncq.cli.localredis import free_port
from asyncq.cli.watch import ProgressDisplay, progress_of
from asyncq.monitor import Monitor
from tests.conftest import (
    DEAD_LETTERS,
    Process,
    asyncq_command,
    run_asyncq,
    wait_for_progress_pid,
    wait_until,
)
from tests.taskapp import add, block, fail, progress, report


def asyncq(redis_url: str, *args: str, app: str = "tests.taskapp"):
    """``asyncq -A app ARGS`` run to completion; the CompletedProcess."""
    return run_asyncq("-A", app, *args, broker_url=redis_url)


def follow_in_background(redis_url: str, *args: str) -> Process:
    """``asyncq -A tests.taskapp ARGS`` left running, its output read line by line."""
    return Process(asyncq_command("-A", "tests.taskapp", *args),
                   env={"ASYNCQ_BROKER_URL": redis_url})


def explain(done) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def event_types(app, task_id: str) -> list[str]:
    return [event["type"] for event in Monitor(app).events("-", 10_000) if event["id"] == task_id]


def wait_for_event(app, task_id: str, kind: str) -> list[str]:
    """Wait until the stream holds a ``kind`` event for the task; its event types so far."""
    seen: list[list[str]] = [[]]

    def arrived() -> bool:
        seen[0] = event_types(app, task_id)
        return kind in seen[0]

    wait_until(arrived, f"a {kind!r} event for task {task_id} (events so far: {seen[0]})")
    return seen[0]


# -- inspect ----------------------------------------------------------------------
def test_inspect_shows_the_worker_its_running_task_and_queue_depths(
        app, client, gate, start_worker, redis_url):
    # Given a worker running a task that waits, messages parked in a queue no worker
    # consumes, one task scheduled for later and one dead letter
    worker = start_worker(concurrency=1)
    running = block.delay(gate.key)
    wait_for_progress_pid(running)
    for _ in range(3):
        add.apply_async((1, 1), queue="parked")
    add.apply_async((1, 1), countdown=3600)
    client.lpush(DEAD_LETTERS, b"not a message")

    # When inspect --json is asked
    done = asyncq(redis_url, "inspect", "--json")
    assert done.returncode == 0, explain(done)
    snapshot = json.loads(done.stdout)

    # Then it names the worker, the task it runs (with a runtime) and the counts
    [seen] = snapshot["workers"]
    assert (seen["alive"], seen["pid"], seen["concurrency"], seen["queues"]) == \
        (True, worker.pid, 1, ["celery"])
    assert seen["heartbeat_age"] < 5
    [active] = seen["active"]
    assert (active["id"], active["name"], active["state"]) == \
        (running.id, "tests.block", "PROGRESS")
    assert active["runtime"] > 0
    assert snapshot["queues"]["parked"] == 3 and snapshot["queues"]["celery"] == 0
    assert (snapshot["scheduled"], snapshot["dead_letters"]) == (1, 1)

    # And the readable tables say the same
    text = asyncq(redis_url, "inspect")
    assert text.returncode == 0, explain(text)
    out = text.stdout
    assert re.search(rf"^{re.escape(seen['id'])}\s+alive\s+\S+\s+{worker.pid}\s+1\s+celery\s",
                     out, re.M), out
    assert re.search(rf"^{re.escape(seen['id'])}\s+{running.id}\s+tests\.block\s+PROGRESS\s+"
                     r"[\d.]+m?s$", out, re.M), out
    assert re.search(r"^parked\s+3$", out, re.M), out
    assert "Scheduled (countdown, ETA, retries, rate limits): 1" in out
    assert "Dead letters: 1 " in out


def test_each_command_names_the_redis_it_reads_and_says_when_it_holds_no_asyncq_data(
        app, redis_url, start_worker):
    commands = (["inspect"], ["status", "no-such-id"], ["events", "--no-follow"],
                ["dead", "list"], ["purge", "--yes"])
    # Given a Redis that no asyncq process has ever written to
    for args in commands:
        done = asyncq(redis_url, *args)
        # Then each command names it, and says plainly that it holds no asyncq data
        assert f"Redis: {redis_url} (from $ASYNCQ_BROKER_URL)" in done.stderr, explain(done)
        assert "holds no asyncq data at all" in done.stderr, explain(done)
    # Given a worker that has registered there
    start_worker()
    for args in commands:
        done = asyncq(redis_url, *args)
        # Then the Redis is still named, and the warning is gone
        assert f"Redis: {redis_url} (from $ASYNCQ_BROKER_URL)" in done.stderr, explain(done)
        assert "holds no asyncq data" not in done.stderr, explain(done)


def test_watch_commands_exit_3_when_redis_is_unreachable():
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["inspect"], ["status", "some-id", "--wait"], ["events", "--no-follow"]):
        done = asyncq(nowhere, *args)
        assert done.returncode == 3, explain(done)
        assert "is unreachable" in done.stderr and "Traceback" not in done.stderr, explain(done)


# -- status -----------------------------------------------------------------------
PROGRESS_LINE = r"^PROGRESS\s+\[.{30}\]\s+3/10\s+30%$"


def test_status_wait_draws_the_progress_then_prints_the_result(
        app, gate, start_worker, redis_url):
    # Given a running task that reports 3 of 10 done, then waits for the gate
    start_worker()
    task = report.delay(gate.key, {"current": 3, "total": 10})

    # When status --wait follows it (not on a terminal: one line per change)
    watcher = follow_in_background(redis_url, "status", task.id, "--wait", "--timeout", "20")
    try:
        watcher.wait_for(PROGRESS_LINE)
        gate.open()
        # Then, once the task ends, the result is printed and the exit status is 0
        assert watcher.wait() == 0, watcher.output
    finally:
        watcher.stop()
    assert watcher.count(PROGRESS_LINE) == 1, watcher.output  # not redrawn line after line
    assert re.search(r"^state\s+SUCCESS$", watcher.output, re.M), watcher.output
    assert re.search(r'^result\s+"released"$', watcher.output, re.M), watcher.output


def test_status_wait_follows_tests_progress_from_the_queue_to_its_end(
        app, start_worker, redis_url):
    # Given a progress task queued before any worker runs, and status --wait following it
    task = progress.delay(300)
    watcher = follow_in_background(redis_url, "status", task.id, "--wait", "--timeout", "30")
    try:
        watcher.wait_for(r"^PENDING\s+waiting in queue celery$")
        # When a worker starts and runs it
        start_worker()
        # Then status --wait ends with the result, exit status 0
        assert watcher.wait() == 0, watcher.output
    finally:
        watcher.stop()
    result = re.search(r"^result\s+(.*)$", watcher.output, re.M)
    assert result and json.loads(result.group(1))["done"] == 300, watcher.output
    # and any progress it saw on the way only went forward
    seen = [int(n) for n in re.findall(r"^PROGRESS .* (\d+)/300 ", watcher.output, re.M)]
    assert seen == sorted(seen), watcher.output

    # And status --json shows the same final view, as the REST API does
    done = asyncq(redis_url, "status", task.id, "--json")
    assert done.returncode == 0, explain(done)
    view = json.loads(done.stdout)
    assert (view["state"], view["result"]["done"], view["args"]) == ("SUCCESS", 300, [300])


def test_status_of_a_failed_task_exits_1_and_shows_the_error(app, start_worker, redis_url):
    start_worker()
    task = fail.delay("broken on purpose")

    done = asyncq(redis_url, "status", task.id, "--wait", "--timeout", "20")
    assert done.returncode == 1, explain(done)
    assert re.search(r"^state\s+FAILURE$", done.stdout, re.M), explain(done)
    assert re.search(r"^error\s+ValueError: broken on purpose$", done.stdout, re.M), explain(done)

    as_json = asyncq(redis_url, "status", task.id, "--json")
    assert as_json.returncode == 1, explain(as_json)
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "ValueError" and "raise ValueError" in error["traceback"]


def test_status_of_an_unknown_task_exits_4(redis_url):
    done = asyncq(redis_url, "status", "no-such-task", "--wait")
    assert done.returncode == 4, explain(done)
    assert "No task 'no-such-task'" in done.stderr, explain(done)

    as_json = asyncq(redis_url, "status", "no-such-task", "--json")
    assert as_json.returncode == 4, explain(as_json)
    assert json.loads(as_json.stdout) == {"task_id": "no-such-task", "state": "UNKNOWN"}


def test_status_of_a_revoked_task_exits_5(app, redis_url):
    task = add.delay(1, 2)  # no worker: it stays queued
    assert task.revoke() is True

    done = asyncq(redis_url, "status", task.id, "--wait")
    assert done.returncode == 5, explain(done)
    assert re.search(r"^state\s+REVOKED$", done.stdout, re.M), explain(done)
    assert re.search(r"^error\s+asyncq\.exceptions\.TaskRevokedError: revoked$", done.stdout,
                     re.M), explain(done)


def test_status_of_a_task_not_final_exits_6_also_when_wait_times_out(app, redis_url):
    task = add.delay(1, 2)  # no worker: it stays PENDING

    done = asyncq(redis_url, "status", task.id)
    assert done.returncode == 6, explain(done)
    assert re.search(r"^state\s+PENDING$", done.stdout, re.M), explain(done)

    began = time.monotonic()
    waited = asyncq(redis_url, "status", task.id, "--wait", "--timeout", "0.5")
    assert waited.returncode == 6, explain(waited)
    assert time.monotonic() - began >= 0.5
    assert f"Task {task.id} is still PENDING after 0.5s." in waited.stderr, explain(waited)

    misuse = asyncq(redis_url, "status", task.id, "--timeout", "1")
    assert misuse.returncode == 2 and "--timeout goes with --wait" in misuse.stderr


# -- events -----------------------------------------------------------------------
def test_events_tell_the_life_of_each_task_in_order(app, start_worker, redis_url):
    # Given a task that succeeds, one that fails, and a queued one revoked before it ran
    start_worker()
    ok = add.delay(2, 3)
    assert ok.get(timeout=10) == 5
    bad = fail.delay("no luck")
    bad.get(timeout=10, propagate=False)
    parked = add.apply_async((1, 1), queue="parked")
    assert parked.revoke() is True
    wait_for_event(app, bad.id, "failed")
    wait_for_event(app, ok.id, "succeeded")
    [worker] = Monitor(app).workers()

    # Then the stream, read by Monitor.events, holds each task's life in order
    expected = {ok.id: ["received", "started", "succeeded"],
                bad.id: ["received", "started", "failed"], parked.id: ["revoked"]}
    events = Monitor(app).events("-", 10_000)
    assert {task_id: [e["type"] for e in events if e["id"] == task_id]
            for task_id in expected} == expected
    by_type = {(e["id"], e["type"]): e for e in events}
    succeeded = by_type[ok.id, "succeeded"]
    assert (succeeded["result"], succeeded["worker"]) == ("5", worker["id"])
    assert float(succeeded["runtime"]) >= 0
    assert by_type[bad.id, "failed"]["exception"] == "ValueError: no luck"
    assert by_type[parked.id, "revoked"]["reason"] == "revoked"

    # And asyncq events --no-follow --json prints the same, one object per line
    done = asyncq(redis_url, "events", "--no-follow", "--json")
    assert done.returncode == 0, explain(done)
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert printed == events

    # And the readable form says what happened to each
    text = asyncq(redis_url, "events", "--no-follow")
    assert re.search(rf"succeeded\s+tests\.add\[{ok.id}\]\s+{re.escape(worker['id'])}\s+"
                     r"in [\d.]+m?s\s+-> 5$", text.stdout, re.M), explain(text)
    assert re.search(rf"failed\s+tests\.fail\[{bad.id}\].*ValueError: no luck$", text.stdout,
                     re.M), explain(text)
    assert re.search(rf"revoked\s+tests\.add\[{parked.id}\]\s+-\s+\(revoked\)$", text.stdout,
                     re.M), explain(text)

    # And --count stops after that many
    two = asyncq(redis_url, "events", "--no-follow", "--count", "2", "--json")
    assert [json.loads(line) for line in two.stdout.splitlines()] == events[:2]


def test_events_show_a_retry_and_the_next_try(redis_url, start_worker):
    from tests import featureapp

    featureapp.app.reset_connection()
    start_worker(app="tests.featureapp")
    task = featureapp.flaky.delay(f"test:tries:{time.monotonic_ns()}", 2)
    assert task.get(timeout=10) == 2
    wait_for_event(featureapp.app, task.id, "succeeded")

    done = asyncq(redis_url, "events", "--no-follow", "--json", app="tests.featureapp")
    assert done.returncode == 0, explain(done)
    mine = [e for e in map(json.loads, done.stdout.splitlines()) if e["id"] == task.id]
    assert [e["type"] for e in mine] == ["received", "started", "retried",
                                         "received", "started", "succeeded"]
    retried, again = mine[2], mine[3]
    assert retried["exception"] == "tests.featureapp.Flaky: try 1 failed"
    assert float(retried["eta"]) > float(retried["time"])
    assert again["retries"] == "1"
    featureapp.app.reset_connection()


def test_events_follows_new_events_and_ctrl_c_exits_0(app, start_worker, redis_url):
    # Given a task that ended before anyone tails the stream
    start_worker()
    earlier = add.delay(1, 1)
    assert earlier.get(timeout=10) == 2
    wait_for_event(app, earlier.id, "succeeded")

    tail = follow_in_background(redis_url, "events")
    try:
        tail.wait_for(r"^Following \{asyncq\}:events")
        # When a new task runs, its events are printed as they come
        task = add.delay(4, 5)
        tail.wait_for(rf"succeeded\s+tests\.add\[{task.id}\].*-> 9$")
        # And Ctrl-C stops the tail quietly, exit status 0
        tail.signal(signal.SIGINT)
        assert tail.wait() == 0, tail.output
    finally:
        tail.stop()
    assert earlier.id not in tail.output  # it shows events from now on
    assert "Traceback" not in tail.output and "Aborted" not in tail.output, tail.output


# -- the progress display itself ------------------------------------------------------
def test_progress_display_redraws_on_a_terminal_and_prints_changes_elsewhere():
    record = {"status": "PROGRESS", "meta": json.dumps({"current": 5, "total": 20})}

    terminal = io.StringIO()
    drawn = ProgressDisplay(terminal, redraw=True)
    drawn.show(record)
    drawn.show(record)
    drawn.close()
    assert terminal.getvalue().count("\r\x1b[K") == 2  # the same line, drawn over
    assert re.search(r"PROGRESS\s+\[#{8}-{22}\]\s+5/20\s+25%", unstyle(terminal.getvalue()))
    assert terminal.getvalue().endswith("\n")

    log = io.StringIO()
    printed = ProgressDisplay(log, redraw=False)
    for meta in ({"current": 5, "total": 20}, {"current": 5, "total": 20},
                 {"current": 6, "total": 20}):
        printed.show({"status": "PROGRESS", "meta": json.dumps(meta)})
    assert [line.split()[-2] for line in log.getvalue().splitlines()] == ["5/20", "6/20"]


@pytest.mark.parametrize("meta", [None, {"current": 1}, {"current": True, "total": 2},
                                  {"current": 1, "total": 0}, {"current": 1, "total": "2"},
                                  {"current": float("nan"), "total": 2}])
def test_only_numeric_current_and_total_make_a_progress_bar(meta):
    assert progress_of(meta) is None
    assert progress_of({"current": 1, "total": 4}) == (1.0, 4.0)


def test_inspect_json_lists_each_of_several_workers_with_its_own_details(
        app, redis_url, start_worker):
    # given three workers registered in an order unlike their sorted order
    for name, concurrency in (("zeta@test", 1), ("alpha@test", 2), ("mid@test", 3)):
        start_worker(f"--hostname={name}", concurrency=concurrency)

    # when inspect --json runs
    done = asyncq(redis_url, "inspect", "--json")

    # then each worker is shown with its own concurrency and queues, in id order
    assert done.returncode == 0, explain(done)
    workers = json.loads(done.stdout)["workers"]
    assert [(w["id"], w["concurrency"], w["alive"]) for w in workers] == [
        ("alpha@test", 2, True), ("mid@test", 3, True), ("zeta@test", 1, True)]


def test_a_worker_started_without_task_events_still_keeps_the_counters(
        app, redis_url, start_worker):
    # given a worker told not to send task events (Celery's -E turns them on; here
    # they are on by default)
    worker = start_worker("--no-task-events")

    # when a task runs
    result = add.delay(4, 5)
    assert result.get(timeout=10) == 9

    # then it is counted, but the stream holds no event
    def counted() -> int:
        return Monitor(app).counters().tasks.get(("tests.add", "SUCCESS"), 0)

    wait_until(counted, "tests.add counted SUCCESS")
    assert Monitor(app).events("-", 100) == []
    worker.wait_for(r"Task tests\.add\[.*\] succeeded")


def test_a_batch_of_events_is_one_stream_entry_read_back_event_by_event(app, client):
    # given three events noted by one process, and an older entry of one event's fields
    older = client.xadd("{asyncq}:events", {"type": "received", "id": "old", "name": "t",
                                            "time": "1.0"}).decode()
    events = app.broker.events
    for kind in ("received", "started", "succeeded"):
        events.note(kind, "new", "tests.add", "w@test", count="SUCCESS" if kind ==
                    "succeeded" else None)

    # when they are sent
    events.flush(app.broker.client)

    # then Redis holds them in one entry, beside the older one
    assert client.xlen("{asyncq}:events") == 2
    # and a reader sees four events, each with a stream_id it can go on from
    monitor = Monitor(app)
    seen = monitor.events("-", count=2)
    assert [(e["id"], e["type"]) for e in seen] == [("old", "received"), ("new", "received")]
    assert seen[0]["stream_id"] == older
    batch = seen[1]["stream_id"]
    assert batch.endswith(".0")
    rest = monitor.events(batch, count=10)
    assert [e["type"] for e in rest] == ["started", "succeeded"]
    assert [e["stream_id"] for e in rest] == [batch[:-1] + "1", batch[:-1] + "2"]
    assert monitor.events(rest[-1]["stream_id"]) == []
    assert monitor.follow(batch, block_ms=10) == rest  # the rest of its entry, at once
    assert [t["id"] for t in monitor.recent_tasks()] == ["new", "old"]


def test_a_batch_entry_that_asyncq_did_not_write_is_skipped_and_named(app, client):
    # given an entry whose 'events' field is not a JSON array of objects, between two good ones
    key = "{asyncq}:events"
    client.xadd(key, {"type": "received", "id": "a", "name": "t", "time": "1.0"})
    bad = client.xadd(key, {"events": "[1, 2"}).decode()
    client.xadd(key, {"events": json.dumps([{"type": "started", "id": "a", "name": "t",
                                              "time": "2.0"}])})

    # when a reader reads the stream
    monitor = Monitor(app)
    seen = monitor.events()

    # then it gets the good events and names the damaged entry
    assert [e["type"] for e in seen] == ["received", "started"]
    assert any(skipped["entry"] == bad for skipped in monitor.skipped_entries()), \
        monitor.skipped_entries()

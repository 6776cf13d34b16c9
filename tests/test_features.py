"""Celery-style task features, used as a user would: retries and backoff, countdown and
ETA, expiry, revocation, routing, priorities, result options, chains, groups and chords,
and the REST API's options for them. Real redis-server, real worker processes."""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import asyncq.current
from asyncq import Celery, chain, chord, group
from asyncq.canvas import GroupResult
from asyncq.exceptions import TaskRevokedError, UnknownTaskError
from asyncq.task import Task
from tests.conftest import (
    QUEUE,
    asyncq_keys,
    http,
    is_gone,
    parent_pid,
    queue_key,
    read_record,
    task_key,
    wait_for_progress_pid,
    wait_for_state,
    wait_until,
)
from tests.featureapp import (
    Boom,
    Flaky,
    add,
    backing_off,
    block,
    boom,
    flaky,
    getpid,
    mark,
    mul,
    quiet,
    resize,
    stamp,
    total,
    where,
)

APP = "tests.featureapp"
SCHEDULED = "{asyncq:celery}:scheduled"
TICK_SLACK = 1.0  # due messages are moved on the supervisor's 0.5 s tick, then fetched


@pytest.fixture
def worker(fapp, start_worker):
    """Start a worker of the features app (single child unless told otherwise)."""

    def start(*extra: str, concurrency: int = 1, **options):
        return start_worker(*extra, app=APP, concurrency=concurrency, **options)

    return start


def key(name: str) -> str:
    """A fresh Redis key for one test's traces."""
    return f"test:{name}:{uuid.uuid4().hex}"


def run_times(client, stamps: str) -> list[float]:
    """The times features.stamp recorded in ``stamps``: one per run."""
    return [float(raw) for raw in client.lrange(stamps, 0, -1)]


def wait_past(when: float) -> None:
    """Let the clock pass ``when`` (Unix seconds): the awaited thing is time itself."""
    time.sleep(max(0.0, when - time.time()) + 0.05)


def received(worker_process, task_name: str, task_id: str) -> int:
    return worker_process.count(rf"Task {task_name}\[{task_id}\] received")


# -- retries -------------------------------------------------------------------

def test_a_task_that_asks_for_retries_succeeds_on_its_third_try(fapp, client, worker):
    # given a worker, and a task that asks for a retry (countdown 0.1 s) until its third try
    w = worker()
    tries = key("tries")

    # when it is queued
    result = flaky.delay(tries, 3)

    # then it ends SUCCESS on the third try, having been retried twice
    assert result.get(timeout=15) == 3
    assert client.get(tries) == b"3"
    assert read_record(client, result.id)["retries"] == "2"
    assert w.count(rf"Task features\.flaky\[{result.id}\] retry \d in") == 2


def test_a_retrying_task_shows_retry_with_its_reason_while_it_waits(fapp, client, worker):
    # given a worker, and a task whose first try asks for a retry in 2 s
    worker()
    tries = key("tries")
    result = flaky.apply_async((tries, 2), {"countdown": 2})

    # when its first try has ended
    wait_for_state(result, "RETRY", timeout=10)
    asked_at = time.time()

    # then it shows RETRY, with the reason as its info, one retry and when it is due
    assert result.state == "RETRY"
    assert not result.ready()
    info = result.info
    assert isinstance(info, Flaky), f"info is {info!r}"
    assert str(info) == "try 1 failed"
    record = read_record(client, result.id)
    assert record["retries"] == "1"
    assert record["exc_type"] == "tests.featureapp.Flaky"
    due = float(record["eta"])
    assert 0 < due - asked_at <= 2.0, f"next try due {due - asked_at:.3f}s from now"
    # and the second try, no sooner than that, succeeds
    assert result.get(timeout=15) == 2
    assert client.get(tries) == b"2"


def test_a_task_out_of_retries_fails_with_its_original_exception(fapp, client, worker):
    # given a worker, and a task (max_retries=2) that asks for a retry on every try
    w = worker()
    tries = key("tries")

    # when it is queued
    result = flaky.delay(tries, 99)

    # then its third try (the last allowed) ends FAILURE with the task's own exception
    with pytest.raises(Flaky, match=r"^try 3 failed$"):
        result.get(timeout=15)
    assert result.state == "FAILURE"
    assert client.get(tries) == b"3"
    assert read_record(client, result.id)["exc_type"] == "tests.featureapp.Flaky"
    assert w.count(rf"Task features\.flaky\[{result.id}\] retry \d in") == 2


def test_autoretry_waits_exponential_capped_jittered_delays(fapp, client, worker):
    # given a worker, and a task that raises KeyError (autoretry_for) on its first 5 tries,
    # with retry_backoff=0.05, retry_backoff_max=0.4 and jitter
    worker()
    trace = key("backoff")

    # when it is queued
    result = backing_off.delay(trace, 6)

    # then it succeeds on the sixth try
    assert result.get(timeout=20) == 6
    tries = [json.loads(raw) for raw in client.lrange(trace, 0, -1)]
    assert [t["retries"] for t in tries] == [0, 1, 2, 3, 4, 5]
    # and each try was due within [0, min(0.4, 0.05 * 2**n)] after the previous one,
    # and ran once due (not before), within the scheduler's tick
    for n, (before, after) in enumerate(itertools.pairwise(tries)):
        cap = min(0.4, 0.05 * 2 ** n)
        delay = after["eta"] - before["at"]
        assert 0 <= delay <= cap + 0.05, f"retry {n + 1}: delay {delay:.3f}s, cap {cap}s"
        late = after["at"] - after["eta"]
        assert 0 <= late <= TICK_SLACK, f"retry {n + 1} ran {late:.3f}s after it was due"


def test_backoff_is_bounded_by_base_times_two_to_the_n_and_the_cap():
    # given tasks with exponential backoff: jittered, and not
    jittered = Task(backing_off.app, lambda: None, name="t.jittered", retry_backoff=0.05,
                    retry_backoff_max=0.4, retry_jitter=True)
    exact = Task(backing_off.app, lambda: None, name="t.exact", retry_backoff=2,
                 retry_backoff_max=30, retry_jitter=False)
    fixed = Task(backing_off.app, lambda: None, name="t.fixed", default_retry_delay=7)

    # then without jitter the delays are base * 2**n, capped
    assert [exact.backoff(n) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    # and with jitter every delay is drawn in [0, min(max, base * 2**n)], not always the cap
    for n in range(8):
        cap = min(0.4, 0.05 * 2 ** n)
        draws = [jittered.backoff(n) for _ in range(200)]
        assert all(0 <= d <= cap for d in draws), (n, min(draws), max(draws))
        assert min(draws) < cap / 2, f"retry {n}: draws not spread over [0, {cap}]"
    # and without retry_backoff the delay is default_retry_delay
    assert fixed.backoff(0) == fixed.backoff(5) == 7
    # and the task's own settings match what the worker test above relies on
    assert backing_off.backoff(10) <= 0.4
    # and next_try gives up once max_retries tries were made
    assert exact.next_try(3, max_retries=3) is None
    assert exact.next_try(2, max_retries=3) is not None


# -- countdown, ETA, expires -----------------------------------------------------

def test_countdown_runs_once_among_three_workers_and_not_before_it_is_due(
        fapp, client, worker):
    # given three workers
    workers = [worker(f"--hostname=w{i}@test") for i in range(3)]
    stamps = key("stamps")

    # when a task is queued with countdown=2
    submitted = time.time()
    result = stamp.apply_async((stamps,), countdown=2)
    due = float(read_record(client, result.id)["eta"])
    assert 2 <= due - submitted < 2.5

    # then it stays PENDING until due ...
    seen: list[tuple[float, str]] = []

    def done() -> bool:
        state = result.state
        seen.append((time.time(), state))  # time taken after the read: the read came first
        return state == "SUCCESS"

    wait_until(done, f"task {result.id} SUCCESS (states seen {sorted({s for _, s in seen})})",
               timeout=15)
    assert {state for at, state in seen if at < due} == {"PENDING"}
    # ... and ran exactly once, no sooner than 2 s after submission
    [ran_at] = run_times(client, stamps)
    assert ran_at >= submitted + 2, f"ran {ran_at - submitted:.3f}s after submission"
    assert ran_at - due <= TICK_SLACK
    assert sum(received(w, "features.stamp", result.id) for w in workers) == 1
    assert client.zcard(SCHEDULED) == 0
    assert client.llen(QUEUE) == 0


def test_an_eta_survives_a_worker_restart(fapp, client, worker):
    # given the only worker, and a task due 3 s from now
    first = worker()
    stamps = key("stamps")
    eta = datetime.now() + timedelta(seconds=3)
    result = stamp.apply_async((stamps,), eta=eta)

    # when that worker stops (warm, exit 0) before the task is due
    first.signal(signal.SIGTERM)
    assert first.wait(15) == 0
    assert time.time() < eta.timestamp(), "the worker took too long to stop: no test"
    assert result.state == "PENDING"
    assert client.zcard(SCHEDULED) == 1
    assert not client.exists(stamps)
    # and a new worker starts
    second = worker()

    # then the new worker runs it once, after its ETA
    result.get(timeout=15)
    [ran_at] = run_times(client, stamps)
    assert ran_at >= eta.timestamp()
    assert received(first, "features.stamp", result.id) == 0
    # (the log line may reach us after the result: wait for it rather than count at once)
    second.wait_for(rf"Task features\.stamp\[{result.id}\] received")
    assert received(second, "features.stamp", result.id) == 1


def test_a_task_expiring_in_the_queue_ends_revoked_and_never_runs(fapp, client, worker, gate):
    # given a single-child worker kept busy
    w = worker()
    blocker = block.delay(gate.key)
    wait_for_progress_pid(blocker)
    stamps = key("stamps")

    # when a task with expires=0.5 waits in the queue past its expiry
    result = stamp.apply_async((stamps,), expires=0.5)
    wait_past(time.time() + 0.5)
    gate.open()
    assert blocker.get(timeout=10) == "released"

    # then it ends REVOKED, 'expired', without having run
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=10)
    assert result.state == "REVOKED"
    assert read_record(client, result.id)["exc_message"] == "expired"
    assert not client.exists(stamps)
    w.wait_for(rf"Task features\.stamp\[{result.id}\] expired before it started")
    assert received(w, "features.stamp", result.id) == 0


# -- revoke ----------------------------------------------------------------------

def test_revoking_a_queued_task_means_it_never_runs(fapp, client, worker):
    # given a task queued while no worker runs
    stamps = key("stamps")
    result = stamp.delay(stamps)

    # when it is revoked, then a worker starts
    assert result.revoke() is True
    assert result.state == "REVOKED"
    w = worker()

    # then the worker drops its message without running it
    w.wait_for(rf"Task features\.stamp\[{result.id}\] already REVOKED: not run again")
    assert not client.exists(stamps)
    assert client.llen(QUEUE) == 0
    with pytest.raises(TaskRevokedError, match="revoked"):
        result.get(timeout=5)


def test_revoking_a_scheduled_task_before_it_is_due_means_it_never_runs(fapp, client, worker):
    # given a worker, and a task scheduled 2 s ahead
    w = worker()
    stamps = key("stamps")
    result = stamp.apply_async((stamps,), countdown=2)

    # when it is revoked before it is due
    assert result.revoke() is True

    # then, once due, the worker drops it without running it; it stays REVOKED
    w.wait_for(rf"Task features\.stamp\[{result.id}\] already REVOKED: not run again",
               timeout=15)
    assert not client.exists(stamps)
    assert result.state == "REVOKED"
    assert client.zcard(SCHEDULED) == 0


def test_revoke_terminate_kills_the_running_child_which_is_replaced(
        fapp, client, worker, gate):
    # given a single-child worker running a long task
    w = worker()
    running = block.delay(gate.key)
    pid = wait_for_progress_pid(running)

    # when it is revoked with terminate=True
    assert running.revoke(terminate=True) is True

    # then its child is killed, the task ends REVOKED ...
    w.wait_for(rf"child 0 \(pid {pid}\) stopped for a revoked task")
    wait_until(lambda: is_gone(pid), f"child {pid} gone")
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=5)
    assert running.state == "REVOKED"
    # ... and a new child runs the next task
    new_pid = getpid.delay().get(timeout=10)
    assert new_pid != pid
    assert parent_pid(new_pid) == w.pid


def test_revoking_a_finished_task_changes_nothing(fapp, worker):
    # given a task that succeeded
    worker()
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5

    # when it is revoked
    revoked = result.revoke()

    # then revoke says no, and the task keeps its SUCCESS and result
    assert revoked is False
    assert result.state == "SUCCESS"
    assert result.get(timeout=5) == 5


# -- routing ---------------------------------------------------------------------

def test_task_routes_send_a_task_to_its_queue_and_only_its_workers_run_it(
        fapp, client, worker):
    # given the app routes features.img.* to the queue "images", and no worker runs
    result = resize.delay(64)

    # then the message waits in {asyncq:images}:queue, not in the default queue
    assert client.llen(queue_key("images")) == 1
    assert client.llen(QUEUE) == 0

    # when a worker of the default queue runs (and serves a task of its own)
    default = worker("--hostname=default@test")
    assert add.delay(1, 1).get(timeout=10) == 2
    # then it leaves the routed task alone
    assert client.llen(queue_key("images")) == 1
    assert result.state == "PENDING"

    # when a worker of "images" starts, then it runs the task
    worker("-Q", "images", "--hostname=images@test")
    assert result.get(timeout=10) == {"size": 64, "worker": "images@test", "queue": "images"}
    assert received(default, "features.img.resize", result.id) == 0


def test_apply_async_queue_overrides_the_route(fapp, client, worker):
    # given the route features.img.* -> images; when a task names another queue
    result = resize.apply_async((32,), queue="thumbs")

    # then it lands there, not in the routed queue
    assert client.llen(queue_key("thumbs")) == 1
    assert client.llen(queue_key("images")) == 0
    # and a worker of that queue runs it
    worker("-Q", "thumbs", "--hostname=thumbs@test")
    assert result.get(timeout=10) == {"size": 32, "worker": "thumbs@test", "queue": "thumbs"}


def test_a_worker_of_two_queues_takes_from_both(fapp, worker):
    # given tasks queued in "a" and in "b"
    in_a = where.apply_async(queue="a")
    in_b = where.apply_async(queue="b")

    # when a worker consumes -Q a,b
    worker("-Q", "a,b", "--hostname=ab@test")

    # then it runs both
    assert in_a.get(timeout=10) == {"worker": "ab@test", "queue": "a"}
    assert in_b.get(timeout=10) == {"worker": "ab@test", "queue": "b"}


# -- priorities ------------------------------------------------------------------

def test_higher_priorities_run_first_and_fifo_within_a_level(fapp, client, worker, gate):
    # given a single-child worker kept busy
    worker()
    blocker = block.delay(gate.key)
    wait_for_progress_pid(blocker)
    order = key("order")

    # when tasks with priorities 0, 5, 9, None, 5, 1 are queued behind it, and it ends
    tags = ["p0", "p5-first", "p9", "none", "p5-second", "p1"]
    results = [mark.apply_async((tag, order), priority=priority)
               for tag, priority in zip(tags, [0, 5, 9, None, 5, 1], strict=True)]
    gate.open()

    # then they ran highest first; equal levels (None is 0) in the order they were queued
    assert [r.get(timeout=15) for r in results] == tags
    ran = [raw.decode() for raw in client.lrange(order, 0, -1)]
    assert ran == ["p9", "p5-first", "p5-second", "p1", "p0", "none"], (
        f"run order {ran}: priorities ignored for the first fetches after the blocker")


def test_a_scheduled_task_with_a_priority_runs_once_due(fapp, client, worker):
    # given a worker of a queue that has had no prioritized task yet
    worker()

    # when a task is queued with a countdown and a priority
    result = add.apply_async((1, 2), countdown=0.5, priority=5)

    # then it runs once due, like any scheduled task
    assert result.get(timeout=8) == 3, f"Redis keys: {asyncq_keys(client)}"


def test_a_chain_step_with_a_priority_runs(fapp, client, worker):
    # given a worker of a queue that has had no prioritized task yet
    worker()

    # when a chain's second step carries a priority
    result = chain(add.s(1, 2), mul.signature((10,), priority=5)).apply_async()

    # then the step runs when the first one is done
    assert result.get(timeout=8) == 30, f"Redis keys: {asyncq_keys(client)}"


@pytest.mark.parametrize("priority", [10, -1, 2.5, "9"])
def test_a_priority_outside_0_to_9_is_refused_at_submit(fapp, client, priority):
    # when a task is queued with a priority that is not a whole number from 0 to 9
    with pytest.raises(ValueError, match="priority"):
        add.apply_async((1, 2), priority=priority)
    # then nothing was queued or recorded
    assert asyncq_keys(client) == []


# -- result options ----------------------------------------------------------------

def test_an_ignore_result_task_leaves_no_record_after_it_runs(fapp, client, worker):
    # given a task with ignore_result=True, queued (so recorded PENDING)
    runs = key("runs")
    result = quiet.delay(runs)
    assert result.state == "PENDING"

    # when a worker runs it
    worker()
    wait_until(lambda: client.get(runs) == b"1", "the task ran")
    wait_until(lambda: not client.exists(task_key(result.id)), "its record deleted")

    # then its state is UNKNOWN, and there is nothing to wait for
    assert result.state == "UNKNOWN"
    with pytest.raises(UnknownTaskError):
        result.get(timeout=2)


@pytest.fixture
def quiet_app():
    """A second app with task_ignore_result=True; it is not left as the current app."""
    other = Celery("quiet", task_ignore_result=True)
    yield other
    asyncq.current._apps.remove(other)


def test_app_wide_task_ignore_result_applies_unless_a_task_says_otherwise(quiet_app):
    # given an app with task_ignore_result=True
    @quiet_app.task
    def silent():
        return 1

    @quiet_app.task(ignore_result=False)
    def loud():
        return 2

    # then its tasks ignore their results unless they opt out; others' do not
    assert silent.ignore_result is True
    assert loud.ignore_result is False
    assert add.ignore_result is False
    assert quiet.ignore_result is True


def test_a_final_result_expires_after_result_expires(fapp, client, worker):
    # given the features app keeps results result_expires=60 s
    assert fapp.conf.result_expires == 60
    worker()

    # when a task succeeds
    result = add.delay(20, 22)
    assert result.get(timeout=10) == 42

    # then its record expires within 60 s
    ttl = client.ttl(task_key(result.id))
    assert 0 < ttl <= 60, f"TTL {ttl}"


def test_forget_deletes_a_result(fapp, client, worker):
    # given a task that succeeded
    worker()
    result = add.delay(1, 2)
    assert result.get(timeout=10) == 3

    # when it is forgotten
    result.forget()

    # then its record is gone: UNKNOWN
    assert result.state == "UNKNOWN"
    assert not client.exists(task_key(result.id))


# -- chains, groups, chords ----------------------------------------------------------

def test_a_chain_passes_each_result_on_and_keeps_every_steps_own(fapp, worker):
    # given a worker; when a chain (1 + 2) * 10 + 5 is queued
    worker()
    result = chain(add.s(1, 2), mul.s(10), add.s(5)).apply_async()

    # then its result is the last step's, and each step has its own id, state and result
    assert result.get(timeout=15) == 35
    middle, first = result.parent, result.parent.parent
    assert first.parent is None
    assert len({result.id, middle.id, first.id}) == 3
    assert [(r.state, r.result) for r in (first, middle, result)] == [
        ("SUCCESS", 3), ("SUCCESS", 30), ("SUCCESS", 35)]


def test_the_pipe_builds_a_chain_and_si_ignores_the_previous_result(fapp, worker):
    # given a worker
    worker()

    # when chains are built with | (and one step immutable with .si)
    piped = (add.s(1, 2) | mul.s(10) | add.s(5)).delay()
    immutable = (add.s(1, 2) | mul.si(4, 5)).delay()

    # then | chains as chain() does, and the .si step took only its own arguments
    assert piped.get(timeout=15) == 35
    assert immutable.get(timeout=15) == 20
    assert immutable.parent.get(timeout=5) == 3


def test_a_group_of_fifty_gives_all_results_in_order(fapp, worker):
    # given two children; when a group of 50 additions is queued
    worker(concurrency=2)
    results = group(add.s(i, i) for i in range(50)).apply_async()

    # then the GroupResult holds all 50 results in the group's order
    assert isinstance(results, GroupResult)
    assert results.get(timeout=30) == [2 * i for i in range(50)]
    assert results.completed_count() == 50
    assert results.ready()
    assert results.successful()


def test_a_chord_body_gets_the_members_results(fapp, worker):
    # given a worker; when a chord sums ten additions
    worker(concurrency=2)
    result = chord(group(add.s(i, i) for i in range(10)), total.s()).apply_async()

    # then the body's result is the sum of the members' results
    assert result.get(timeout=20) == sum(2 * i for i in range(10))
    assert result.parent.completed_count() == 10


def test_a_chord_whose_member_fails_raises_that_members_error(fapp, client, worker):
    # given a worker; when a chord has a member that raises Boom
    worker()
    result = chord([add.s(1, 1), boom.s("member"), add.s(2, 2)], total.s()).apply_async()

    # then the chord's result raises Boom, and the body never ran
    with pytest.raises(Boom, match="member"):
        result.get(timeout=15)
    assert result.state == "FAILURE"
    assert "started_at" not in read_record(client, result.id)
    result.parent.get(timeout=15, propagate=False)  # the other members may still be running
    assert [r.state for r in result.parent] == ["SUCCESS", "FAILURE", "SUCCESS"]


def test_a_chain_stops_at_a_failing_step(fapp, client, worker):
    # given a worker; when a chain's middle step raises Boom
    w = worker()
    marks = key("marks")
    result = chain(add.s(1, 2), boom.s("middle"), mark.s(marks)).apply_async()

    # then the last step's result raises Boom, and the last step never ran
    with pytest.raises(Boom, match="middle"):
        result.get(timeout=15)
    assert not client.exists(marks)
    assert received(w, "features.mark", result.id) == 0
    assert result.parent.state == "FAILURE"
    assert isinstance(result.parent.result, Boom)
    assert result.parent.parent.get(timeout=5) == 3


# -- the REST API's options ----------------------------------------------------------

@pytest.fixture
def api(fapp, start_gunicorn) -> str:
    return start_gunicorn("asyncq.api:from_env()", env={"ASYNCQ_APP": APP})


def post(api: str, task: str, **body) -> tuple[int, dict]:
    status, _, answer = http("POST", f"{api}/tasks/{task}", json.dumps(body),
                             {"Content-Type": "application/json"})
    return status, answer


def only_message(client, list_key: str) -> dict:
    [raw] = client.lrange(list_key, 0, -1)
    return json.loads(raw)


def test_rest_countdown_and_eta_schedule_the_task(api, client):
    # when tasks are posted with a countdown, an ISO 8601 eta and a Unix-seconds eta
    before = time.time()
    status, body = post(api, "features.add", args=[1, 2], countdown=30)
    assert status == 202, body
    by_countdown = body["task_id"]
    iso = datetime.now(timezone.utc) + timedelta(seconds=60)
    status, body = post(api, "features.add", args=[1, 2], eta=iso.isoformat())
    assert status == 202, body
    by_iso = body["task_id"]
    unix = time.time() + 90
    status, body = post(api, "features.add", args=[1, 2], eta=unix)
    assert status == 202, body
    by_unix = body["task_id"]

    # then all three wait in the schedule, due when asked, and none is queued yet
    due = {json.loads(raw)["id"]: score
           for raw, score in client.zrange(SCHEDULED, 0, -1, withscores=True)}
    assert set(due) == {by_countdown, by_iso, by_unix}
    assert before + 30 <= due[by_countdown] <= time.time() + 30
    assert due[by_iso] == pytest.approx(iso.timestamp(), abs=0.01)
    assert due[by_unix] == pytest.approx(unix, abs=0.01)
    assert client.llen(QUEUE) == 0


def test_rest_expires_queue_and_priority_reach_the_message(api, client):
    # when tasks are posted with expires, with a queue, and with a priority
    before = time.time()
    status, body = post(api, "features.add", args=[1, 2], expires=30)
    assert status == 202, body
    expiring = only_message(client, QUEUE)
    client.delete(QUEUE)
    status, queued = post(api, "features.add", args=[1, 2], queue="images")  # a known one
    assert status == 202, queued
    status, prioritized = post(api, "features.add", args=[1, 2], priority=7)
    assert status == 202, prioritized

    # then the message expires 30 s after submission ...
    assert expiring["id"] == body["task_id"]
    assert before + 30 <= expiring["expires"] <= time.time() + 30
    # ... lands in the queue named ...
    assert only_message(client, queue_key("images"))["id"] == queued["task_id"]
    # ... and in the list of its priority
    assert only_message(client, queue_key("celery", 7))["id"] == prioritized["task_id"]


BAD_OPTIONS = [
    ("countdown", -1), ("countdown", "soon"), ("countdown", True),
    ("eta", "tomorrow"), ("eta", "2024-13-45T99:00:00"), ("eta", [1]), ("eta", True),
    ("expires", "later"), ("expires", {"s": 1}), ("expires", True),
    ("queue", 5), ("queue", ""), ("queue", ["a"]),
    ("priority", 10), ("priority", -1), ("priority", 2.5), ("priority", "high"),
    ("priority", True),
]


def test_rest_bad_option_values_are_422(api, client):
    # when tasks are posted with bad values for the options (one server for all the cases)
    answers = {(field, json.dumps(value)): post(api, "features.add", args=[1, 2],
                                                 **{field: value})
               for field, value in BAD_OPTIONS}

    # then each gets 422 with a JSON error naming the field, and nothing is queued
    wrong = {case: answer for case, answer in answers.items()
             if answer[0] != 422 or case[0] not in str(answer[1])}
    assert not wrong, f"not a 422 naming the field: {wrong}"
    assert asyncq_keys(client) == []


def test_rest_delete_revokes_a_queued_task_and_409_once_final(api, fapp, client):
    # given a task posted while no worker runs
    stamps = key("stamps")
    task_id = post(api, "features.stamp", args=[stamps])[1]["task_id"]

    # when it is deleted
    status, _, body = http("DELETE", f"{api}/results/{task_id}")

    # then 200, REVOKED, and so it is for the queue too
    assert status == 200, body
    assert body["state"] == "REVOKED"
    assert fapp.AsyncResult(task_id).state == "REVOKED"
    # and deleting it again is 409: it is already final
    status, _, body = http("DELETE", f"{api}/results/{task_id}")
    assert status == 409, body
    assert "error" in body


def test_rest_delete_of_an_unknown_id_is_404(api):
    status, _, body = http("DELETE", f"{api}/results/no-such-id")
    assert status == 404, body
    assert "error" in body


def test_rest_delete_of_a_finished_task_is_409_and_keeps_its_result(api, fapp, worker):
    # given a task that succeeded
    worker()
    result = add.delay(2, 2)
    assert result.get(timeout=10) == 4

    # when it is deleted
    status, _, body = http("DELETE", f"{api}/results/{result.id}")

    # then 409, and it keeps SUCCESS
    assert status == 409, body
    assert result.state == "SUCCESS"
    assert result.get(timeout=5) == 4


def test_rest_delete_with_terminate_kills_a_running_task(api, fapp, worker, gate):
    # given a single-child worker running a long task
    w = worker()
    running = block.delay(gate.key)
    pid = wait_for_progress_pid(running)

    # when it is deleted with terminate=true
    status, _, body = http("DELETE", f"{api}/results/{running.id}?terminate=true")

    # then 200 REVOKED, and the child running it is killed and replaced
    assert status == 200, body
    assert body["state"] == "REVOKED"
    w.wait_for(rf"child 0 \(pid {pid}\) stopped for a revoked task")
    with pytest.raises(TaskRevokedError):
        running.get(timeout=5)
    assert getpid.delay().get(timeout=10) != pid


def test_rest_shows_a_retrying_task_as_retry_with_its_reason(api, fapp, worker):
    # given a worker, and a task posted whose first try asks for a retry in 2 s
    worker()
    tries = key("tries")
    status, body = post(api, "features.flaky", args=[tries, 2], kwargs={"countdown": 2})
    assert status == 202, body
    result = fapp.AsyncResult(body["task_id"])

    # when its first try has ended
    wait_for_state(result, "RETRY", timeout=10)

    # then GET /results/<id> shows RETRY and the reason under "error"
    status, _, view = http("GET", f"{api}/results/{result.id}")
    assert status == 200, view
    assert view["state"] == "RETRY"
    assert view["error"]["type"] == "tests.featureapp.Flaky"
    assert view["error"]["message"] == "try 1 failed"
    assert result.get(timeout=15) == 2



def test_a_chain_step_revoked_while_it_runs_sets_nothing_in_motion(fapp, client, worker):
    # given a chain whose first step blocks until released
    w = worker()
    gate, marks = key("gate"), key("marks")
    result = chain(block.si(gate), mark.s(marks)).apply_async()
    first = result.parent
    w.wait_for(rf"Task features\.block\[{first.id}\] received")

    # when that step is revoked (without terminate) while it runs, then released
    assert first.revoke() is True
    client.set(gate, 1)
    w.wait_for(rf"Task features\.block\[{first.id}\] succeeded")

    # then it stays REVOKED and the next step is never queued, let alone run
    assert first.state == "REVOKED"
    assert mark.delay("after", marks).get(timeout=15) == "after"  # the worker went on
    assert client.lrange(marks, 0, -1) == [b"after"]
    assert received(w, "features.mark", result.id) == 0
    assert result.state == "REVOKED"  # the revoke passed on down the chain

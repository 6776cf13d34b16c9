"""Periodic tasks: schedules as Celery writes them, sent exactly once by any number of
schedulers that keep their state in Redis (real processes, a real redis-server)."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone
from itertools import pairwise

from asyncq import Celery
from asyncq.beat import Beat
from asyncq.monitor import Monitor
from asyncq.schedules import crontab
from tests.conftest import Process, asyncq_command, run_asyncq, wait_until


class Clock:
    """The scheduler's time source, turned by the test."""

    def __init__(self, when: datetime):
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def runs(client) -> list[tuple[str, float]]:
    return [(line.split()[0], float(line.split()[1]))
            for line in (raw.decode() for raw in client.lrange("beats:ticks", 0, -1))]


def test_three_schedulers_send_every_run_exactly_once_even_when_one_is_killed(
        redis_url, client, start_worker):
    env = {"ASYNCQ_BROKER_URL": redis_url}
    # Given two workers, two `asyncq beat` and one `asyncq worker -B`
    start_worker(app="tests.beatapp", concurrency=2)
    start_worker("-B", app="tests.beatapp", concurrency=2)
    beats = [Process(asyncq_command("-A", "tests.beatapp", "beat"), env=env) for _ in range(2)]
    try:
        # When a 1-second entry runs for 12 intervals, one scheduler SIGKILLed half-way
        wait_until(lambda: len(runs(client)) >= 6, "six runs", timeout=15)
        beats[0].signal(signal.SIGKILL)
        wait_until(lambda: len(runs(client)) >= 12, "twelve runs", timeout=15)
    finally:
        for beat in beats:
            beat.stop()
    # Then every run was sent and run once: distinct ids, one a second
    seen = runs(client)[:12]
    ids = [run_id for run_id, _ in seen]
    assert len(set(ids)) == len(ids), "a run was sent twice"
    times = sorted(when for _, when in seen)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert all(0.6 < gap < 1.6 for gap in gaps), gaps


def test_a_crontab_entry_fires_when_its_minute_comes_and_the_worker_runs_it(
        redis_url, client, start_worker):
    # Given an app whose entry runs at 07:30 on weekdays in New York
    app = Celery("cron", broker=redis_url, timezone="America/New_York")
    app.conf.beat_schedule = {"morning": {"task": "beats.tick", "schedule": crontab(
        hour=7, minute=30, day_of_week="mon-fri")}}
    # and a scheduler whose clock the test turns: Friday 2026-03-06, 07:29 New York
    clock = Clock(datetime(2026, 3, 6, 12, 29, tzinfo=timezone.utc))
    scheduler = Beat(app, clock=clock)
    scheduler.tick()  # learns the entry: next run 07:30
    [row] = scheduler.listing()
    assert row["next_run"] == datetime(2026, 3, 6, 12, 30, tzinfo=timezone.utc).timestamp()
    scheduler.tick()
    assert client.llen("{asyncq:celery}:queue") == 0  # not yet
    # When the clock passes 07:30, the run is sent, once however often it ticks
    clock.now += 61
    scheduler.tick()
    scheduler.tick()
    assert client.llen("{asyncq:celery}:queue") == 1
    # and the sent run is a task event, under the run's own id
    [message] = [json.loads(raw) for raw in client.lrange("{asyncq:celery}:queue", 0, -1)]
    sent = [event for event in Monitor(app).events("-", 100) if event["type"] == "sent"]
    assert [(event["id"], event["name"]) for event in sent] == [(message["id"], "beats.tick")]
    [row] = scheduler.listing()
    assert row["last_run"] == datetime(2026, 3, 6, 12, 30, tzinfo=timezone.utc).timestamp()
    # the next run skips the weekend: Monday 07:30 New York
    assert row["next_run"] == datetime(2026, 3, 9, 11, 30, tzinfo=timezone.utc).timestamp()
    # and a real worker runs it
    start_worker(app="tests.beatapp")
    wait_until(lambda: runs(client), "the crontab run to be run by a worker")


def test_interval_entries_options_and_a_run_missed_while_no_scheduler_ran(redis_url, client):
    app = Celery("opts", broker=redis_url)
    app.conf.beat_schedule = {"report": {
        "task": "opts.report", "schedule": timedelta(minutes=5), "args": [1],
        "kwargs": {"full": True},
        "options": {"queue": "periodic", "priority": 5, "expires": 30}}}
    clock = Clock(datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc))
    scheduler = Beat(app, clock=clock)
    scheduler.tick()
    # When no scheduler runs for an hour, one run is sent when one comes back, not twelve
    clock.now += 3600
    another = Beat(app, clock=clock)
    another.tick()
    scheduler.tick()
    [raw] = client.lrange("{asyncq:periodic}:queue:p5", 0, -1)
    message = json.loads(raw)
    assert (message["task"], message["args"], message["kwargs"], message["priority"]) == \
        ("opts.report", [1], {"full": True}, 5)
    assert message["expires"] == clock.now + 30
    assert app.AsyncResult(message["id"]).state == "PENDING"
    [row] = another.listing()
    assert row["next_run"] == clock.now + 300


def test_beat_list_shows_entries_from_the_setting_and_from_add_periodic_task(
        redis_url, start_worker):
    start_worker("-B", app="tests.beatapp")
    done = run_asyncq("-A", "tests.beatapp", "beat", "--list", broker_url=redis_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "SCHEDULE", "QUEUE", "LAST", "RUN", "NEXT",
                                "RUN"]
    names = {line.split()[0] for line in lines[1:]}
    assert names == {"tick-every-second", "weekday-mornings", "hourly"}
    listed = json.loads(run_asyncq("-A", "tests.beatapp", "beat", "--list", "--json",
                                   broker_url=redis_url).stdout)
    assert {row["name"]: row["task"] for row in listed}["hourly"] == "beats.tick"


def test_inspect_shows_each_periodic_task_with_its_last_and_next_run(
        redis_url, start_worker, start_gunicorn):
    from tests.conftest import http

    # Given a worker with an embedded scheduler that has sent the 1-second entry
    start_worker("-B", app="tests.beatapp")
    api = start_gunicorn("asyncq.api:from_env()", env={"ASYNCQ_APP": "tests.beatapp"})

    def sent() -> list[dict]:
        entries = http("GET", f"{api}/inspect")[2]["periodic"]
        return [e for e in entries if e["name"] == "tick-every-second" and e["last_run"]]

    [entry] = wait_until(sent, "the 1-second entry's first run in GET /inspect")
    assert entry["task"] == "beats.tick" and entry["next_run"] > entry["last_run"]
    # and the command line shows the same section
    text = run_asyncq("-A", "tests.beatapp", "inspect", broker_url=redis_url).stdout
    assert "Periodic tasks (times in UTC):" in text and "weekday-mornings" in text

"""GET /metrics through a real gunicorn, after real tasks ran in a real worker, read back
with prometheus_client's own parser: the counts are the tasks that ran."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEAD_LETTERS, QUEUE, http, stream_events, wait_until

APP = "tests.featureapp"
EVENTS = "{asyncq}:events"
ENDINGS = {"succeeded", "failed", "retried"}  # the events counted with a runtime
PARKED = 'parked "q"\\x'  # a queue no worker reads; its name needs escaping in a label


@pytest.fixture
def api(start_gunicorn) -> str:
    return start_gunicorn("asyncq.api:from_env()", env={"ASYNCQ_APP": APP})


def scrape(api: str) -> tuple[dict[str, object], str]:
    """The metric families of GET /metrics by name, and the response's content type."""
    status, headers, text = http("GET", f"{api}/metrics")
    assert status == 200, text
    assert isinstance(text, str)
    return {family.name: family for family in text_string_to_metric_families(text)}, \
        headers["Content-Type"]


def samples(family, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """A family's samples (only those called ``name``, when given), keyed by their labels."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples
            if name is None or s.name == name}


def ended_events(client) -> int:
    return sum(1 for event in stream_events(client, EVENTS) if event.get("type") in ENDINGS)


def test_metrics_count_the_tasks_that_ran(api, fapp, start_worker, client):
    from tests.featureapp import add, boom, flaky

    # Given a worker that runs three additions, two failures and one task retried once
    worker = start_worker(app=APP)
    results = [add.delay(i, i) for i in range(3)] + [boom.delay(i) for i in range(2)]
    results.append(flaky.delay("test:flaky", 2, countdown=0.05))
    # and messages it never takes: three in a queue it does not read, one due in an hour,
    # one it cannot read at all (set aside as a dead letter)
    for i in range(3):
        add.apply_async((i, 0), queue=PARKED)
    add.apply_async((0, 0), countdown=3600)
    client.lpush(QUEUE, b"not a message")
    for result in results:
        result.get(timeout=15, propagate=False)
    # When every run has been counted (the counters and events are written together, so
    # once 7 endings are in the stream the counters hold them too)
    wait_until(lambda: ended_events(client) >= 7, "7 task endings in the event stream")
    wait_until(lambda: client.llen(DEAD_LETTERS) == 1, "the garbled message set aside")
    families, content_type = scrape(api)

    # Then it is Prometheus's text format 0.0.4
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    # and tasks are counted per name and final state (and the retry), nothing else
    tasks = families["asyncq_tasks"]
    assert tasks.type == "counter"
    assert samples(tasks, "asyncq_tasks_total") == {
        (("state", "SUCCESS"), ("task", "features.add")): 3,
        (("state", "FAILURE"), ("task", "features.boom")): 2,
        (("state", "RETRY"), ("task", "features.flaky")): 1,
        (("state", "SUCCESS"), ("task", "features.flaky")): 1,
    }
    # and the runtime histogram has one observation per run, in cumulative buckets
    runtime = families["asyncq_task_runtime_seconds"]
    assert runtime.type == "histogram"
    counts = {dict(labels)["task"]: value
              for labels, value in samples(runtime, "asyncq_task_runtime_seconds_count").items()}
    assert counts == {"features.add": 3, "features.boom": 2, "features.flaky": 2}
    for task, count in counts.items():
        assert_cumulative(runtime, task, count)
    # and the queue lengths are the waiting messages
    queues = {dict(labels)["queue"]: value
              for labels, value in samples(families["asyncq_queue_length"]).items()}
    assert queues[PARKED] == 3 and queues["celery"] == 0
    assert families["asyncq_queue_length"].type == "gauge"
    assert only_value(families["asyncq_scheduled_tasks"]) == 1
    assert only_value(families["asyncq_dead_letters"]) == 1
    # and the running worker is alive, running nothing now
    assert only_value(families["asyncq_workers_alive"]) == 1
    worker_id = http("GET", f"{api}/inspect")[2]["workers"][0]["id"]
    assert samples(families["asyncq_tasks_active"]) == {(("worker", worker_id),): 0}

    # When the worker stops, it is alive no more
    worker.stop()
    families, _ = scrape(api)
    assert only_value(families["asyncq_workers_alive"]) == 0
    assert samples(families["asyncq_tasks_active"]) == {}
    # while the counts stay
    assert sum(samples(families["asyncq_tasks"], "asyncq_tasks_total").values()) == 7


def assert_cumulative(runtime, task: str, count: float) -> None:
    """Buckets by ascending bound never decrease and end, at +Inf, with the count."""
    buckets = sorted((float(s.labels["le"]), s.value) for s in runtime.samples
                     if s.name.endswith("_bucket") and s.labels["task"] == task)
    values = [value for _, value in buckets]
    assert values == sorted(values), f"{task}: buckets not cumulative: {buckets}"
    assert buckets[-1] == (float("inf"), count)
    assert len(buckets) == 15  # asyncq.events.RUNTIME_BUCKETS
    total = [s.value for s in runtime.samples
             if s.name.endswith("_sum") and s.labels["task"] == task]
    assert len(total) == 1 and total[0] > 0


def only_value(family) -> float:
    [(labels, value)] = samples(family).items()
    assert labels == ()
    return value


def test_metrics_before_any_task(api, fapp):
    # Given no worker and no task yet
    families, _ = scrape(api)
    # Then every metric is there, with nothing counted
    assert set(families) == {"asyncq_tasks", "asyncq_task_runtime_seconds",
                             "asyncq_queue_length", "asyncq_workers_alive",
                             "asyncq_tasks_active", "asyncq_scheduled_tasks",
                             "asyncq_dead_letters", "asyncq_damaged_entries"}
    assert samples(families["asyncq_tasks"]) == {}
    assert samples(families["asyncq_task_runtime_seconds"]) == {}
    assert only_value(families["asyncq_workers_alive"]) == 0
    assert samples(families["asyncq_queue_length"]) == {(("queue", "celery"),): 0,
                                                        (("queue", "images"),): 0}


def test_metrics_need_the_token_when_there_is_one(start_gunicorn, fapp):
    api = start_gunicorn("asyncq.api:from_env()",
                         env={"ASYNCQ_APP": APP, "ASYNCQ_API_TOKEN": "scrape-me"})
    assert http("GET", f"{api}/metrics")[0] == 401
    status, _, text = http("GET", f"{api}/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert status == 200 and "asyncq_workers_alive 0" in text

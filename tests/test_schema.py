"""The REST API against its own OpenAPI description, property-based, with schemathesis.

A real gunicorn serves the tutorial's example app and a real worker runs its
tasks. For every operation in /openapi.json, schemathesis generates requests,
valid ones and invalid ones, and checks every answer: never a 5xx, a documented
status code and content type, a body and headers matching the schema, a 4xx
for invalid input, a 405 with Allow for an undocumented method and, with a
token, a 401 without it.

Random task names and ids almost never exist, so some generated requests are
pointed at real ones: submissions at ``async_tasks.add`` (so bodies are
checked, not just 404'd) and task ids, now and then, at tasks in every state.
"""

from __future__ import annotations

import json
import time
import zlib
from datetime import datetime, timedelta, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from asyncq import Celery
from asyncq.api.openapi import PUBLIC_PATHS
from asyncq.api.routes import parse_eta
from asyncq.message import MAX_DELAY
from tests.conftest import http, wait_until

EXAMPLE = "examples.tutorial.server"
ENV = {"TASK_SECONDS": "0.05"}
TOKEN = "schema-test-token"
FINAL = ("SUCCESS", "FAILURE", "REVOKED")
# Bounded, so the file runs in well under a minute on two cores.
BOUNDED = settings(max_examples=50, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
# Tasks in every kind of state (see ``seeded``), by the id operations they are tried on.
TASK_ID_OPERATIONS = ("GET /results/{task_id}", "DELETE /results/{task_id}",
                      "GET /async_long_running_task/{task_id}",
                      "GET /async_long_running_task/{task_id}/result")
KNOWN_IDS: dict[str, str] = {}  # kind of task -> id, set by the fixtures below



def submit(api: str, name: str, headers: dict[str, str], **body: object) -> str:
    status, _, answer = http("POST", f"{api}/tasks/{name}", json.dumps(body),
                             {"Content-Type": "application/json", **headers})
    assert status == 202, answer
    return answer["task_id"]


def parked() -> str:
    """A task in a queue no worker reads, sent from Python (trusted code): REST clients
    may name only the queues the app knows."""
    sender = Celery("seeder")  # its broker: $ASYNCQ_BROKER_URL, the test's Redis
    try:
        return sender.send_task("async_tasks.add", [1, 1], queue="nobody-reads-it").id
    finally:
        sender.broker.client.close()


def seeded(api: str, headers: dict[str, str]) -> dict[str, str]:
    """Tasks that ran, failed, reported progress, were revoked, wait for an ETA, wait in a
    queue no worker reads; so /inspect, /events and /results have something to show."""
    ids = {
        "succeeded": submit(api, "async_tasks.add", headers, args=[2, 3]),
        "failed": submit(api, "async_tasks.add", headers, args=[1, "x"]),
        "progress": submit(api, "async_tasks.count_to", headers, args=[2], kwargs={"delay": 0}),
        "tutorial": http("POST", f"{api}/async_long_running_task", headers=headers)[2]["task_id"],
        "scheduled": submit(api, "async_tasks.add", headers, args=[1, 1], countdown=3600),
        "parked": parked(),
        "revoked": submit(api, "async_tasks.add", headers, args=[0, 0], countdown=3600),
    }
    assert http("DELETE", f"{api}/results/{ids['revoked']}", headers=headers)[0] == 200

    def ended(task_id: str) -> bool:
        return http("GET", f"{api}/results/{task_id}", headers=headers)[2]["state"] in FINAL

    for kind in ("succeeded", "failed", "progress", "tutorial"):
        wait_until(lambda kind=kind: ended(ids[kind]), f"the {kind} task ended", 15)
    return ids


def serve(start_gunicorn, start_worker, env: dict[str, str], headers: dict[str, str]):
    """The example API and a worker; its tasks seeded; its description loaded."""
    start_worker(app=EXAMPLE, env={**ENV, **env})
    api = start_gunicorn(f"{EXAMPLE}:app", env={**ENV, **env})
    KNOWN_IDS.clear()
    KNOWN_IDS.update(seeded(api, headers))
    # With a token, schemathesis sends it as the description's bearer scheme, and also
    # checks that a request without it, or with another, gets 401.
    token = {"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}} if headers else {}
    return schemathesis.openapi.from_url(f"{api}/openapi.json", headers=headers,
                                         config=schemathesis.Config.from_dict(token))


@pytest.fixture
def api_schema(start_gunicorn, start_worker):
    return serve(start_gunicorn, start_worker, {}, {})


@pytest.fixture
def token_api_schema(start_gunicorn, start_worker):
    return serve(start_gunicorn, start_worker, {"ASYNCQ_API_TOKEN": TOKEN},
                 {"Authorization": f"Bearer {TOKEN}"})


def pointed(case) -> None:
    """Point a generated submission at a real task, and (when the request is otherwise
    valid) a generated task id at a real task one time in two."""
    if case.operation.label == "POST /tasks/{name}":
        case.path_parameters = {**(case.path_parameters or {}), "name": "async_tasks.add"}
        printable(case.body)
        within_the_cap(case.body)
    elif case.operation.label in TASK_ID_OPERATIONS and case.meta is not None \
            and case.meta.generation.mode.is_positive:
        ids = sorted(KNOWN_IDS.values())
        pick = zlib.crc32(str(case.path_parameters["task_id"]).encode()) % (2 * len(ids))
        if pick < len(ids):
            case.path_parameters = {**case.path_parameters, "task_id": ids[pick]}


def printable(body: object) -> None:
    """A queue name is printable text (format "printable": str.isprintable()), which no
    JSON Schema keyword says and schemathesis does not know: replace what is not."""
    queue = body.get("queue") if isinstance(body, dict) else None
    if isinstance(queue, str) and not queue.isprintable():
        body["queue"] = "".join(c if c.isprintable() else "_" for c in queue)


def within_the_cap(body: object) -> None:
    """An eta is at most MAX_DELAY (10 years) from now, which no JSON Schema keyword can
    say (it moves with the clock): a later one is brought to an hour from now."""
    eta = body.get("eta") if isinstance(body, dict) else None
    when = parse_eta(eta) if eta is not None else None
    if when is not None and when > time.time() + MAX_DELAY - 86400:
        soon = datetime.now(timezone.utc) + timedelta(hours=1)
        body["eta"] = soon.isoformat() if isinstance(eta, str) else soon.timestamp()


schema = schemathesis.pytest.from_fixture("api_schema")
token_schema = schemathesis.pytest.from_fixture("token_api_schema")


@schema.parametrize()
@BOUNDED
def test_every_operation_answers_as_described(case):
    pointed(case)
    case.call_and_validate()


@token_schema.parametrize()
@settings(BOUNDED, max_examples=10)
def test_with_a_token_every_operation_answers_as_described(case):
    pointed(case)
    # GET and HEAD are all a public route lets through without a token: any other method
    # gets 401 before routing (tests/test_security.py), not the 405 this check wants.
    public = case.path in PUBLIC_PATHS
    case.call_and_validate(excluded_checks=[schemathesis.checks.unsupported_method] * public)


def test_tasks_in_every_state_are_described(api_schema):
    # Given tasks that succeeded, failed, reported progress, were revoked, or wait
    for kind, task_id in KNOWN_IDS.items():
        # Then what every task-id route says of each conforms to the description
        for label in TASK_ID_OPERATIONS:
            method, path = label.split(" ")
            case = api_schema[path][method].Case(path_parameters={"task_id": task_id})
            response = case.call()
            if path.startswith("/async_long_running_task") and kind != "tutorial":
                expected = {404}  # the tutorial's routes know their own task only
            elif method == "DELETE":
                expected = {200, 409}  # 409 once final
            else:
                expected = {200}
            assert response.status_code in expected, (kind, label, response.text)
            case.validate_response(response)



# What schemathesis found, pinned down: each was a 500, or a 405 without its Allow header.
FOUND = [
    ("/events?after=99999999999999999999-0", 400),  # past Redis's 64 bits
    ("/events?after=46863038255609930855125-97519617797", 400),
    ("/events?after=%C2%B2", 400),  # a superscript two: str.isdigit() said yes
    ("/events?after=123-", 400),
    ("/events?after=1700000000000-0", 200),
    ("/events?after=9999999999999999999-9999999999999999999", 200),  # the most it takes
    ("/inspect/tasks?limit=%D9%A5", 400),  # an Arabic-Indic five: int() took it
    ("/inspect/tasks?limit=+5", 400),
    ("/inspect/throughput?seconds=1_0", 400),
    ("/dashboard/static/..%2Fapi.py", 404),
]


def test_what_schemathesis_found_stays_fixed(start_gunicorn):
    api = start_gunicorn(f"{EXAMPLE}:app")
    for path, expected in FOUND:
        status, headers, body = http("GET", api + path)
        assert status == expected, (path, body)
        if status != 200:
            assert headers["Content-Type"] == "application/json" and body["status"] == status
    status, headers, body = http("PUT", f"{api}/results/some-id")
    assert (status, body["status"]) == (405, 405)
    assert set(headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "DELETE"}

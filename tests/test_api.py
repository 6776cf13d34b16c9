"""The REST API through a real gunicorn: the tutorial's routes and the generic ones."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import http

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EXAMPLE = "examples.tutorial.server"


@pytest.fixture
def api(start_gunicorn) -> str:
    return start_gunicorn(f"{EXAMPLE}:app", env={"TASK_SECONDS": "0.3"})


@pytest.fixture
def example_app(redis_url):
    from examples.tutorial import server

    server.celery.reset_connection()
    server.celery.conf.broker_url = redis_url
    return server.celery


def test_tutorial_routes_answer_with_the_tutorials_json(api, start_worker, example_app):
    # Given a worker for the example app
    start_worker(app=EXAMPLE, env={"TASK_SECONDS": "0.3"})
    # When the long task is submitted
    status, _, body = http("POST", f"{api}/async_long_running_task")
    # Then 202 and only a task id, as in the tutorial
    assert status == 202
    assert list(body) == ["task_id"] and UUID.match(body["task_id"])
    task_id = body["task_id"]
    # And once it ran, its status and result read as in the tutorial
    example_app.AsyncResult(task_id).get(timeout=15)
    status, _, body = http("GET", f"{api}/async_long_running_task/{task_id}")
    assert (status, body) == (200, {"task_status": "SUCCESS"})
    status, _, body = http("GET", f"{api}/async_long_running_task/{task_id}/result")
    assert status == 200
    assert body == {"task_result": f"done long-running task {task_id}"}


def test_tutorial_result_route_before_the_task_ran(api):
    # Given a task queued with no worker running
    task_id = http("POST", f"{api}/async_long_running_task")[2]["task_id"]
    # Then its status is PENDING and its result is "not finished yet"
    assert http("GET", f"{api}/async_long_running_task/{task_id}")[2] == {"task_status": "PENDING"}
    status, _, body = http("GET", f"{api}/async_long_running_task/{task_id}/result")
    assert (status, body) == (200, {"message": "Task not finished yet !"})


def test_unknown_ids_are_404_with_a_json_error(api):
    for path in ("/async_long_running_task/no-such-id",
                 "/async_long_running_task/no-such-id/result", "/results/no-such-id"):
        status, headers, body = http("GET", api + path)
        assert status == 404, path
        assert headers["Content-Type"] == "application/json"
        assert "no-such-id" in body["error"]


def test_generic_submit_status_and_result(api, start_worker, example_app):
    start_worker(app=EXAMPLE)
    # When a registered task is submitted with JSON args
    status, headers, body = http("POST", f"{api}/tasks/async_tasks.add",
                                 json.dumps({"args": [2, 3]}),
                                 {"Content-Type": "application/json"})
    # Then 202, with a Location pointing at its status
    assert status == 202
    assert headers["Location"] == f"/results/{body['task_id']}" == body["status_url"]
    # And the status route ends with the result
    example_app.AsyncResult(body["task_id"]).get(timeout=15)
    status, _, view = http("GET", api + headers["Location"])
    assert status == 200
    assert view["state"] == "SUCCESS" and view["result"] == 5
    assert view["task"] == "async_tasks.add" and view["worker"].startswith("asyncq@")


def test_status_route_shows_progress_meta_and_failure(api, start_worker, example_app):
    start_worker(app=EXAMPLE)
    # A task reporting PROGRESS keeps its meta beside the final result
    task_id = http("POST", f"{api}/tasks/async_tasks.count_to",
                   json.dumps({"args": [2], "kwargs": {"delay": 0}}))[2]["task_id"]
    example_app.AsyncResult(task_id).get(timeout=15)
    view = http("GET", f"{api}/results/{task_id}")[2]
    assert view["meta"] == {"current": 2, "total": 2} and view["result"] == 2
    # A failing task's error is given back
    task_id = http("POST", f"{api}/tasks/async_tasks.add", json.dumps({"args": [1, "x"]}))[2]
    example_app.AsyncResult(task_id["task_id"]).get(timeout=15, propagate=False)
    view = http("GET", f"{api}/results/{task_id['task_id']}")[2]
    assert view["state"] == "FAILURE"
    assert view["error"]["type"] == "TypeError" and "str" in view["error"]["message"]


def test_health_and_task_list(api):
    status, _, body = http("GET", f"{api}/health")
    assert (status, body) == (200, {"status": "ok", "redis": "ok", "warnings": []})
    assert "async_tasks.add" in http("GET", f"{api}/tasks")[2]["tasks"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ('{"args": [1, 2', 400, "not valid JSON"),
    ("[1, 2]", 400, "JSON object"),
    ('{"args": {"a": 1}}', 422, "'args' must be a JSON array"),
    ('{"kwargs": [1]}', 422, "'kwargs' must be a JSON object"),
    ('{"args": [], "colour": "x"}', 422, "unknown fields"),
    ('{"args": [1, 2], "priority": 10}', 422, "'priority'"),
    ('{"args": [1, 2], "countdown": -1}', 422, "'countdown'"),
    ('{"args": [1, 2], "eta": "next tuesday"}', 422, "'eta'"),
    ('{"args": [1, 2], "countdown": 1, "eta": 5}', 422, "not both"),
    ('{"args": [1, 2], "queue": ""}', 422, "'queue'"),
    ('{"args": [1, 2], "expires": 0}', 422, "'expires'"),
    ('{"args": [NaN, 1]}', 422, "JSON"),
    ("[" * 100_000, 400, "more than 100 levels"),  # too deep: refused before parsing
])
def test_bad_input_gets_a_clear_4xx(api, client, body, status, says):
    got, headers, answer = http("POST", f"{api}/tasks/async_tasks.add", body)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert says in answer["error"]
    assert client.llen("{asyncq:celery}:queue") == 0  # nothing was queued


def test_unknown_task_is_404_and_oversize_body_is_413(api, client):
    assert http("POST", f"{api}/tasks/no.such.task", "{}")[0] == 404
    status, _, body = http("POST", f"{api}/tasks/async_tasks.add", "x" * (2 * 1024 * 1024))
    assert status == 413 and body["status"] == 413
    assert client.llen("{asyncq:celery}:queue") == 0


def test_redis_unreachable_gives_503_json(start_gunicorn):
    from asyncq.cli.localredis import free_port

    api = start_gunicorn(f"{EXAMPLE}:app",
                         env={"ASYNCQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    for method, path in (("GET", "/health"), ("POST", "/async_long_running_task"),
                         ("GET", "/results/some-id")):
        status, _, body = http(method, api + path)
        assert status == 503, path
        assert "unreachable" in body["error"]


def test_openapi_describes_every_route_and_submit_field(api):
    from openapi_spec_validator import validate

    from asyncq.api.routes import SUBMIT_FIELDS
    from examples.tutorial.server import app as flask_app

    # Given the description the running API serves
    status, _, spec = http("GET", f"{api}/openapi.json")
    assert status == 200
    # Then it is valid OpenAPI 3.0
    validate(spec)
    # And it names every route Flask serves, with its methods
    served = {}
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint != "static":
            path = rule.rule.replace("<", "{").replace(">", "}")
            served[path] = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
    described = {path: set(ops) for path, ops in spec["paths"].items()}
    for path, methods in served.items():
        assert methods <= described.get(path, set()), f"{path} {methods} not described"
    # And every field a submission may carry
    submission = spec["components"]["schemas"]["Submission"]["properties"]
    assert set(submission) == set(SUBMIT_FIELDS)

"""Credentials: the REST API's optional bearer token, and Redis with a password.

The token is checked through a real gunicorn started with $ASYNCQ_API_TOKEN in
its environment; the password against a redis-server of the test's own
started with ``--requirepass``, used by a real worker and a real client.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from asyncq import Celery
from asyncq.cli.localredis import find_redis_server, free_port
from asyncq.exceptions import ConfigurationError
from tests.conftest import QUEUE, Process, http, run_asyncq

EXAMPLE = "examples.tutorial.server"
TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- the API token ---------------------------------------------------------------
@pytest.fixture
def guarded_api(start_gunicorn) -> str:
    return start_gunicorn(f"{EXAMPLE}:app", env={"ASYNCQ_API_TOKEN": TOKEN})


# Every route the example app serves (and one it does not), each with a body that
# would be accepted: only the missing token can be why it is refused.
ROUTES = [
    ("GET", "/tasks", None),
    ("POST", "/tasks/async_tasks.add", '{"args": [2, 3]}'),
    ("GET", "/results/some-id", None),
    ("POST", "/async_long_running_task", None),
    ("GET", "/async_long_running_task/some-id", None),
    ("GET", "/async_long_running_task/some-id/result", None),
    ("GET", "/no/such/route", None),
    ("POST", "/health", None),
]


def assert_401(answer: tuple[int, dict[str, str], object], challenge: str) -> None:
    status, headers, body = answer
    assert status == 401
    assert headers["Content-Type"] == "application/json"
    assert headers["WWW-Authenticate"] == challenge
    assert isinstance(body, dict) and body["status"] == 401 and body["error"]


def test_without_a_token_every_route_but_health_is_401(guarded_api, client):
    # when each route is called without an Authorization header
    for method, path, body in ROUTES:
        answer = http(method, guarded_api + path, body)
        # then 401 with a JSON error and a Bearer challenge
        assert_401(answer, 'Bearer realm="asyncq"')
    # and nothing was queued by the refused submissions
    assert client.llen(QUEUE) == 0
    # while GET /health stays open, for load balancers
    status, _, body = http("GET", f"{guarded_api}/health")
    assert (status, body) == (200, {"status": "ok", "redis": "ok", "warnings": []})


@pytest.mark.parametrize("header", [
    "Bearer wrong",
    f"Bearer {TOKEN[:-1]}",  # one character short
    f"Bearer {TOKEN}x",  # one character long
    f"Bearer {TOKEN.swapcase()}",
    f"Basic {TOKEN}",  # the right secret under another scheme
    "Bearer ",
    TOKEN,  # no scheme at all
])
def test_a_wrong_token_is_401(guarded_api, client, header):
    # when a task is submitted with a wrong Authorization header
    answer = http("POST", f"{guarded_api}/tasks/async_tasks.add", '{"args": [2, 3]}',
                  {"Authorization": header})
    # then 401, and nothing is queued
    expected = ('Bearer realm="asyncq", error="invalid_token"' if header.startswith("Bearer ")
                and header.strip() != "Bearer" else 'Bearer realm="asyncq"')
    assert_401(answer, expected)
    assert client.llen(QUEUE) == 0


def test_the_right_token_is_served(guarded_api, redis_url, start_worker):
    start_worker(app=EXAMPLE, env={"TASK_SECONDS": "0.1"})
    # when a task is submitted with the token
    status, headers, body = http("POST", f"{guarded_api}/tasks/async_tasks.add",
                                 '{"args": [2, 3]}', AUTH)
    # then it is accepted, runs, and its result can be read with the token
    assert status == 202, body
    assert Celery("probe", broker=redis_url).AsyncResult(body["task_id"]).get(timeout=10) == 5
    status, _, view = http("GET", guarded_api + headers["Location"], headers=AUTH)
    assert (status, view["state"], view["result"]) == (200, "SUCCESS", 5)
    # and the other routes answer as without a token configured
    status, _, body = http("GET", f"{guarded_api}/tasks", headers=AUTH)
    assert status == 200 and "async_tasks.add" in body["tasks"]
    status, _, body = http("POST", f"{guarded_api}/async_long_running_task", headers=AUTH)
    assert status == 202 and list(body) == ["task_id"]
    status, _, body = http("GET", f"{guarded_api}/results/no-such-id", headers=AUTH)
    assert status == 404
    # the scheme is case-insensitive (RFC 7235)
    status, _, _ = http("GET", f"{guarded_api}/tasks", headers={"Authorization": f"bearer {TOKEN}"})
    assert status == 200


@pytest.mark.parametrize("value", ["", "   ", "two words", "t\u00f6ken"])
def test_an_unusable_token_is_refused_at_start_not_ignored(monkeypatch, value):
    # given a token variable that is set but could never be sent, or would match anything
    monkeypatch.setenv("ASYNCQ_API_TOKEN", value)
    from asyncq.api import create_app

    # when the API is created, then it refuses to start rather than serve without a token
    with pytest.raises(ConfigurationError, match="ASYNCQ_API_TOKEN"):
        create_app(Celery("x"))


# -- Redis with a password ---------------------------------------------------------
PASSWORD = "s3cret/with:odd@chars"  # percent-encoded in the URL


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own that requires PASSWORD; yields its port."""
    port = free_port()
    server = Process([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                      "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                      "--requirepass", PASSWORD])
    try:
        server.wait_for("Ready to accept connections")
        yield port
    finally:
        server.stop()


def url(port: int, password: str | None) -> str:
    secret = f":{quote(password, safe='')}@" if password is not None else ""
    return f"redis://{secret}127.0.0.1:{port}/0"


def test_a_password_in_the_url_works_for_submit_worker_and_result(password_redis,
                                                                 start_worker):
    # given a Redis that answers nobody without the password
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url(password_redis, None)).ping()
    good = url(password_redis, PASSWORD)

    # when a worker and a client both use the URL with the password
    worker = start_worker(env={"ASYNCQ_BROKER_URL": good})
    result = Celery("client", broker=good).send_task("tests.add", (2, 3))

    # then the task runs and its result comes back
    assert result.get(timeout=10) == 5
    worker.wait_for(rf"Task tests\.add\[{result.id}\] succeeded")
    # and the worker's banner shows the URL without the password, nor does any other line
    worker.wait_for(rf"transport: +redis://:\*\*@127\.0\.0\.1:{password_redis}/0$")
    assert PASSWORD not in worker.output and quote(PASSWORD, safe="") not in worker.output


@pytest.mark.parametrize(("given", "shown"), [
    ("redis://:s3cret%2Fx%40y@h:6379/0", "redis://:**@h:6379/0"),
    ("rediss://worker:s3cret@h:6380/0", "rediss://worker:**@h:6380/0"),
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=**"),
    ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=**&db=1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_the_password_is_hidden_wherever_the_url_carries_it(given, shown):
    # the banner and every error message print URLs through describe_url
    from asyncq.connection import describe_url

    assert describe_url(given) == shown


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_wrong_or_missing_password_is_a_clear_error_not_a_hang(
        password_redis, start_worker, start_gunicorn, password):
    bad = url(password_redis, password)
    # Redis's own words; without a password they depend on the first command sent
    says = ("(Authentication required|HELLO must be called with the client already "
            "authenticated)" if password is None else "invalid username-password pair")

    # a client submitting a task is told at once
    began = time.monotonic()
    with pytest.raises(redis.AuthenticationError, match=says):
        Celery("client", broker=bad).send_task("tests.add", (2, 3))
    assert time.monotonic() - began < 5

    # a worker stops at start with exit status 3 and says so, instead of waiting forever
    # as it does for a Redis that is down
    worker = start_worker(env={"ASYNCQ_BROKER_URL": bad}, wait_ready=False)
    assert worker.wait(20) == 3
    worker.wait_for(rf"Error: Redis at redis://(:\*\*@)?127\.0\.0\.1:{password_redis}/0 "
                    rf"refused the credentials \({says}")
    assert "Traceback" not in worker.output

    # the dead-letter commands likewise (exit status 3, one line)
    done = run_asyncq("-A", "tests.taskapp", "dead", "list", broker_url=bad)
    assert done.returncode == 3
    assert "refused the credentials" in done.stderr and "Traceback" not in done.stderr

    # and the API answers 503 naming the credentials, not "unreachable"
    api = start_gunicorn(f"{EXAMPLE}:app", env={"ASYNCQ_BROKER_URL": bad})
    for method, path in (("GET", "/health"), ("POST", "/tasks/async_tasks.add")):
        status, _, body = http(method, api + path)
        assert status == 503, path
        assert "refused this server's credentials" in json.dumps(body)

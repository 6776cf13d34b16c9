"""Bad input, from REST clients and from Python callers: nothing breaks, nothing is
half stored, every answer says what is wrong.

Real gunicorn (with asyncq's gunicorn settings), real redis-servers (a full one, a
read-only one, a cluster whose queue's master is full), real workers.

- args and kwargs nest at most MAX_NESTING (100) levels: checked before anything is
  stored, by the REST API (400), by every Python producer (EncodeError), and by the
  worker when it decodes (a dead letter), at any depth, never a RecursionError;
- REST clients name only queues the app knows (api_allow_any_queue opens that up);
  Python callers any, unless task_create_missing_queues is off (QueueNotFound);
- countdown, eta and expires reach at most MAX_DELAY (10 years) ahead;
- a body over api_max_content_length is 413 on every route, chunked or not; gunicorn's
  own errors (a URL over its limit, a garbled request) are JSON;
- a Redis that refuses a write (full, read-only, a key of the wrong type) gets 503,
  and a submission it refuses leaves no record and no message behind.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from asyncq import Celery, chain, chord, group
from asyncq.cli.devserver import gunicorn_command
from asyncq.cli.localredis import LocalRedis
from asyncq.connection import refusal
from asyncq.exceptions import EncodeError, QueueNotFound
from asyncq.message import MAX_DELAY, MAX_NESTING
from tests.conftest import (
    DEAD_LETTERS,
    QUEUE,
    asyncq_keys,
    http,
    queue_key,
    read_record,
    scheduled_key,
    task_key,
    wait_until,
)
from tests.topologies import RedisCluster3

JSON = {"Content-Type": "application/json"}
GUNICORN_CONF = ("-c", "python:asyncq.api.gunicorn_conf")
CAP = str(MAX_DELAY)  # every error about a time names the cap: 315360000 s, 10 years


def nested(levels: int) -> str:
    """JSON text of lists nested ``levels`` deep: ``[[]]`` is 2."""
    return "[" * levels + "]" * levels


def deep(levels: int) -> list[Any]:
    """The same as a Python value."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def submit(api: str, body: str | bytes, path: str = "/tasks/badinput.add"):
    return http("POST", api + path, body, JSON)


def assert_json_error(status: int, headers: dict[str, str], body: Any, expected: int,
                      *words: str) -> None:
    assert status == expected, body
    assert headers["Content-Type"] == "application/json", body
    assert isinstance(body, dict) and body["status"] == expected, body
    for word in words:
        assert word in body["error"], (word, body)


def raw_request(url: str, head: str, body: bytes = b"", chunked: bool = False
                ) -> tuple[int, dict[str, str], Any]:
    """One request written by hand (a request line of any length, a chunked body); the
    answer as (status, headers, JSON or text). A server may answer before it has read
    all of a large body and close: the answer is read all the same."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    data = head.encode("latin-1") + b"\r\nHost: test\r\nConnection: close\r\n"
    if chunked:
        data += b"Transfer-Encoding: chunked\r\n\r\n"
        for start in range(0, len(body), 65536):
            part = body[start:start + 65536]
            data += b"%x\r\n%s\r\n" % (len(part), part)
        data += b"0\r\n\r\n"
    else:
        data += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection((host, port), timeout=10) as sock:
        with suppress(OSError):  # the answer came first and the server closed: read it
            sock.sendall(data)
        answer = b""
        with suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    try:
        parsed: Any = json.loads(payload)
    except ValueError:
        parsed = payload.decode(errors="replace")
    return int(lines[0].split()[1]), headers, parsed


@pytest.fixture
def app(redis_url: str):
    from tests import badinputapp

    badinputapp.app.reset_connection()
    yield badinputapp.app
    badinputapp.app.reset_connection()


@pytest.fixture
def api(start_gunicorn) -> str:
    return start_gunicorn("tests.badinputapp:api", args=GUNICORN_CONF)


# -- how deep args and kwargs nest ------------------------------------------------

def test_args_nested_past_the_limit_get_400_at_any_depth_and_nothing_is_stored(api, client):
    # Given the deepest arguments a worker reads: accepted
    status, _, body = submit(api, '{"args": [' + nested(MAX_NESTING) + ", 1]}")
    assert status == 202, body
    client.flushall()
    # When args or kwargs nest one level more, or as deep as used to break the API
    # (500 at about 970 levels: a RecursionError), or far deeper
    for levels in (MAX_NESTING + 1, 500, 969, 976, 977, 980, 5000, 100_000):
        for body in ('{"args": [' + nested(levels) + ", 1]}",
                     '{"kwargs": {"a": ' + nested(levels) + "}}"):
            # Then 400, in JSON, naming the limit
            assert_json_error(*submit(api, body), 400, f"more than {MAX_NESTING} levels",
                              "MAX_NESTING")
    # And nothing was stored: no record, no message
    assert asyncq_keys(client) == []


def test_a_worker_runs_arguments_as_deep_as_producers_may_send(api, app, start_worker):
    # Given a worker of the app
    start_worker(app="tests.badinputapp")
    # When arguments at the limit are sent over REST and from Python
    over_rest = submit(api, '{"args": [' + nested(MAX_NESTING) + "]}", "/tasks/badinput.depth")
    from_python = app.tasks["badinput.depth"].delay(deep(MAX_NESTING))
    # Then the worker decodes and runs both
    assert app.AsyncResult(over_rest[2]["task_id"]).get(timeout=10) == MAX_NESTING
    assert from_python.get(timeout=10) == MAX_NESTING


def test_python_producers_refuse_arguments_nested_past_the_limit(app, client):
    depth, add = app.tasks["badinput.depth"], app.tasks["badinput.add"]
    too_deep = deep(MAX_NESTING + 1)
    # Every way Python code sends a task: refused before anything is stored
    sends = {
        "apply_async": lambda: depth.apply_async((too_deep,)),
        "delay, kwargs": lambda: depth.delay(value=too_deep),
        "send_task": lambda: app.send_task("badinput.depth", [too_deep]),
        "a signature": lambda: depth.s(too_deep).delay(),
        "a chain's later step": lambda: chain(add.s(1, 1), depth.si(too_deep)).delay(),
        "a group member": lambda: group(add.s(1, 1), depth.s(too_deep)).delay(),
        "a chord's body": lambda: chord([add.s(1, 1)], depth.si(too_deep)).delay(),
        "a link_error callback": lambda: add.apply_async(
            (1, 1), link_error=depth.si(too_deep)),
        "as deep as the encoder recurses": lambda: depth.delay(deep(5000)),
        "a canvas, as deep as copying recurses": lambda: chain(
            add.s(1, 1), depth.si(deep(990))).delay(),
    }
    for how, send in sends.items():
        with pytest.raises(EncodeError, match=f"more than {MAX_NESTING} levels"):
            send()
        assert asyncq_keys(client) == [], how


def test_a_message_nested_past_the_limit_is_a_dead_letter_and_its_task_fails(
        app, client, start_worker):
    # Given a message no asyncq producer writes (another producer's): args one level
    # too deep, with its PENDING record, and a good message after it
    raw = json.dumps({"id": "too-deep", "task": "badinput.depth",
                      "args": [deep(MAX_NESTING + 1)], "kwargs": {}, "queue": "celery"})
    app.broker.enqueue("too-deep", "badinput.depth", "celery", raw.encode())
    # and one far deeper than Python's parser goes (no id can be read from it)
    abyss = ('{"id": "abyss", "task": "badinput.depth", "args": [' + nested(5000)
             + '], "kwargs": {}, "queue": "celery"}').encode()
    client.lpush(QUEUE, abyss)
    good = app.tasks["badinput.add"].delay(2, 3)
    # When a worker takes them
    worker = start_worker(app="tests.badinputapp")
    # Then the deep ones are set aside, the first one's task FAILURE naming the limit;
    # the next task runs, in the same child
    assert good.get(timeout=10) == 5
    record = wait_until(lambda: read_record(client, "too-deep").get("status") == "FAILURE"
                        and read_record(client, "too-deep"), "the deep task failed")
    assert "MAX_NESTING" in record["exc_message"]
    assert client.lrange(DEAD_LETTERS, 0, -1) == [abyss, raw.encode()]
    assert worker.count("died") == 0, worker.output


# -- which queues -------------------------------------------------------------------

KNOWN_QUEUES = {"celery": "task_default_queue", "routed-queue": "task_routes",
                "glob-queue": "task_routes, as {'queue': name}",
                "declared-queue": "task_queues, a Queue object",
                "named-queue": "task_queues, a name", "beat-queue": "beat_schedule options",
                "own-queue": "@app.task(queue=...)"}


def test_clients_may_name_only_the_queues_the_app_knows(api, client, start_worker):
    # When clients name 50 queues the app does not know
    for number in range(50):
        status, headers, body = submit(api, json.dumps({"args": [1, 2],
                                                        "queue": f"fresh-{number}"}))
        # Then each gets 422 saying which queues there are and what would allow others
        assert_json_error(status, headers, body, 422, f"'fresh-{number}'", "celery",
                          "api_allow_any_queue")
    # And nothing was made: no list, no name in the set of queues, no record
    assert asyncq_keys(client) == []
    # While every queue the app knows, in each way it can know one, is accepted
    for queue, how in KNOWN_QUEUES.items():
        status, _, body = submit(api, json.dumps({"args": [1, 2], "queue": queue}))
        assert status == 202, (how, body)
        assert client.llen(queue_key(queue)) == 1, how
    # And so is a queue a running worker consumes (worker -Q), once it runs
    body = json.dumps({"args": [1, 2], "queue": "worker-queue"})
    assert submit(api, body)[0] == 422
    start_worker("-Q", "worker-queue", app="tests.badinputapp")
    assert submit(api, body)[0] == 202


def test_api_allow_any_queue_lets_clients_name_any(start_gunicorn, client):
    api = start_gunicorn("tests.badinputapp:open_api", args=GUNICORN_CONF)
    status, _, body = submit(api, '{"args": [1, 2], "queue": "made-up"}')
    assert status == 202, body
    assert client.llen(queue_key("made-up")) == 1
    # Unless the app refuses unknown queues to every caller (task_create_missing_queues)
    strict = start_gunicorn("tests.badinputapp:strict_api", args=GUNICORN_CONF)
    assert_json_error(*submit(strict, '{"args": [1, 2], "queue": "other"}'), 422,
                      "'other' is not one of this app's queues", "task_queues")
    assert not client.exists(queue_key("other"))


def test_python_callers_name_any_queue_unless_task_create_missing_queues_is_off(
        redis_url, client):
    from tests.badinputapp import make_app

    # Python code is trusted as in Celery: by default any queue goes
    trusting = make_app("trusting", broker=redis_url)
    trusting.send_task("badinput.add", [1, 2], queue="made-up")
    assert client.llen(queue_key("made-up")) == 1
    # With task_create_missing_queues off, as in Celery: QueueNotFound for another
    strict = make_app("strict", broker=redis_url, task_create_missing_queues=False)
    add = strict.tasks["badinput.add"]
    for send in (lambda: add.apply_async((1, 2), queue="unknown"),
                 lambda: strict.send_task("badinput.add", [1, 2], queue="unknown"),
                 lambda: group(add.s(1, 2), add.s(3, 4).set(queue="unknown")).delay()):
        with pytest.raises(QueueNotFound, match="'unknown' is not one of this app's queues"):
            send()
    assert not client.exists(queue_key("unknown"))
    # While the queues it knows are fine
    for queue in KNOWN_QUEUES:
        add.apply_async((1, 2), queue=queue)


# -- how far ahead --------------------------------------------------------------

def test_countdown_eta_and_expires_share_one_ten_year_cap_over_rest(api, client):
    too_far = [{"countdown": MAX_DELAY + 1}, {"countdown": 1e12},
               {"eta": "9999-12-31T00:00:00"}, {"eta": 1e300},
               {"eta": time.time() + MAX_DELAY + 60}, {"expires": MAX_DELAY + 1},
               {"expires": 1e300}]
    for options in too_far:
        # Then 422, saying the cap
        assert_json_error(*submit(api, json.dumps({"args": [1, 2], **options})), 422,
                          next(iter(options)), CAP, "10 years")
    assert asyncq_keys(client) == []
    # While a task due in 9 years is accepted, its record kept until then (and after)
    nine_years = 9 * 365 * 86400
    status, _, body = submit(api, json.dumps({"args": [1, 2], "countdown": nine_years}))
    assert status == 202, body
    assert client.ttl(task_key(body["task_id"])) > nine_years
    assert client.zcard(scheduled_key()) == 1


def test_countdown_eta_and_expires_share_one_ten_year_cap_in_python(app, client):
    add = app.tasks["badinput.add"]
    year_9999 = datetime(9999, 12, 31, tzinfo=timezone.utc)
    sends = [lambda: add.apply_async((1, 2), countdown=1e12),
             lambda: add.apply_async((1, 2), countdown=float("inf")),
             lambda: add.apply_async((1, 2), eta=year_9999),
             lambda: add.apply_async((1, 2), eta=1e300),
             lambda: add.apply_async((1, 2), expires=1e300),
             lambda: add.apply_async((1, 2), expires=year_9999),
             lambda: app.send_task("badinput.add", [1, 2], countdown=MAX_DELAY + 1),
             lambda: add.s(1, 2).set(countdown=1e12).delay(),
             lambda: chain(add.s(1, 2), add.s(3).set(eta=year_9999)).delay(),
             lambda: chain(add.s(1, 2), add.s(3).set(expires=1e300)).delay()]
    for send in sends:
        with pytest.raises(ValueError, match=f"{CAP} seconds from now|finite"):
            send()
    assert asyncq_keys(client) == []
    # A task due in 9 years keeps its record until then
    result = add.apply_async((1, 2), eta=datetime.now(timezone.utc) + timedelta(days=9 * 365))
    assert client.ttl(task_key(result.id)) > 9 * 365 * 86400
    assert result.state == "PENDING"


# -- how large a request --------------------------------------------------------

def test_an_oversize_body_gets_413_json_on_every_route_chunked_or_not(api, client):
    big = b'{"args": [1, 2]}' + b" " * (5 * 1024 * 1024)  # valid JSON for its first 1 MiB
    routes = ["POST /tasks/badinput.add", "POST /tutorial_route", "DELETE /results/some-id",
              "GET /health", "POST /no/such/route"]
    for route in routes:
        for chunked in (False, True):
            status, headers, body = raw_request(api, f"{route} HTTP/1.1", big, chunked)
            assert_json_error(status, headers, body, 413, "1048576 bytes",
                              "api_max_content_length")
    assert asyncq_keys(client) == []
    # While a chunked body within the limit is read whole
    status, _, body = raw_request(api, "POST /tasks/badinput.add HTTP/1.1",
                                  b'{"args": [2, 3]}', chunked=True)
    assert status == 202, body
    assert json.loads(client.lindex(QUEUE, 0))["args"] == [2, 3]


def test_gunicorns_own_errors_are_json_with_asyncqs_gunicorn_settings(api):
    # A URL past gunicorn's request-line limit (4094 bytes), by far or not
    for length in (5_000, 10_000, 100_000):
        assert_json_error(*raw_request(api, f"GET /results/{'x' * length} HTTP/1.1"), 414,
                          "Request Line is too large")
    # A garbled request line; a header past gunicorn's field limit
    assert_json_error(*raw_request(api, "GET /a b c HTTP/1.1"), 400, "Invalid HTTP Version")
    assert_json_error(*raw_request(api, f"GET /health HTTP/1.1\r\nX-Big: {'y' * 9000}"), 431)
    # And `asyncq dev` starts gunicorn with those settings
    assert "python:asyncq.api.gunicorn_conf" in gunicorn_command("127.0.0.1:5000", "m:app")


# -- a Redis that refuses writes ------------------------------------------------

@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of this test's own, to be made full or read-only."""
    server = LocalRedis(tmp_path / "own").start()
    yield server
    server.stop()


def test_a_full_redis_gets_503_json_and_keeps_nothing(own_redis, start_gunicorn):
    # Given a Redis at its maxmemory, with noeviction (as asyncq wants it)
    control = redis.Redis.from_url(own_redis.url)
    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", 1)
    api = start_gunicorn("tests.badinputapp:api", args=GUNICORN_CONF,
                         env={"ASYNCQ_BROKER_URL": own_redis.url})
    # When a task is submitted over REST, on either route
    for path in ("/tasks/badinput.add", "/tutorial_route"):
        # Then 503 in JSON, never 500
        assert_json_error(*submit(api, '{"args": [1, 2]}', path), 503, "full")
    # And from Python: Redis's refusal, raised
    python = Celery("full", broker=own_redis.url)
    with pytest.raises(redis.ResponseError) as refused:  # OOM, or a script's error over it
        python.send_task("badinput.add", [1, 2])
    assert refusal(refused.value) == "full", refused.value
    # And nothing was kept: no PENDING record without its message
    assert control.keys("*") == []
    # While reading still works
    assert_json_error(*http("GET", f"{api}/results/some-id"), 404)
    control.close()


def test_a_refused_push_takes_its_record_back(app, client, api):
    # Given a queue key that Redis refuses to push to (it holds a string)
    client.set(queue_key("routed-queue"), "not a list")
    before = asyncq_keys(client)
    # When a task is submitted to it over REST: the record is written, the push refused
    status, headers, body = submit(api, '{"args": [], "queue": "routed-queue"}',
                                   "/tasks/badinput.routed")
    # Then 503, in JSON, and the record is gone again
    assert_json_error(status, headers, body, 503, "WRONGTYPE")
    # And from Python, a canvas whose second task goes to that queue: no record of any
    # of its tasks stays, and the message that was queued is taken back
    add, routed = app.tasks["badinput.add"], app.tasks["badinput.routed"]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        group(add.s(1, 2), routed.si(), add.s(3, 4)).delay()
    # (The set of queue names, for the monitor, went in the same round trip: it names
    # the queues all the same.)
    assert set(asyncq_keys(client)) - set(before) == {b"{asyncq}:queues"}


def test_a_read_only_redis_gets_503_json(own_redis, start_gunicorn):
    # Given a replica (of nothing: it answers reads and refuses writes)
    control = redis.Redis.from_url(own_redis.url)
    control.replicaof("127.0.0.1", 1)
    api = start_gunicorn("tests.badinputapp:api", args=GUNICORN_CONF,
                         env={"ASYNCQ_BROKER_URL": own_redis.url})
    try:
        assert_json_error(*submit(api, '{"args": [1, 2]}'), 503, "read-only")
        assert control.dbsize() == 0
    finally:
        control.replicaof("NO", "ONE")
        control.close()


def test_a_redis_that_may_evict_gets_503_json(own_redis, start_gunicorn):
    control = redis.Redis.from_url(own_redis.url)
    control.config_set("maxmemory", 100 * 1024 * 1024)
    control.config_set("maxmemory-policy", "allkeys-lru")
    api = start_gunicorn("tests.badinputapp:api", args=GUNICORN_CONF,
                         env={"ASYNCQ_BROKER_URL": own_redis.url})
    assert_json_error(*submit(api, '{"args": [1, 2]}'), 503, "noeviction")
    assert control.dbsize() == 0
    control.close()


def test_on_a_cluster_a_push_refused_by_a_full_master_takes_its_record_back(tmp_path):
    # Given a cluster whose master holding queue "celery" is full, while the master
    # holding the task's record is not: the record is written, the push refused
    with RedisCluster3(tmp_path / "cluster") as cluster:
        app = Celery("cluster", broker=cluster.url)
        client = app.broker.client
        queue_node = client.get_node_from_key(QUEUE)
        task_id = next(f"task-{n}" for n in range(1000)
                       if client.get_node_from_key(task_key(f"task-{n}")) != queue_node)
        full = redis.Redis(queue_node.host, queue_node.port)
        full.config_set("maxmemory-policy", "noeviction")
        full.config_set("maxmemory", 1)
        # When a task is sent
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            app.send_task("badinput.add", [1, 2], task_id=task_id)
        # Then its record is gone again: no PENDING record without its message
        assert not client.exists(task_key(task_id))
        full.config_set("maxmemory", 0)
        full.close()
        client.close()

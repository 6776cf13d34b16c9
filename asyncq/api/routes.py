"""The REST API: a Flask app factory, served by gunicorn.

Two sets of routes:

* the tutorial's, for any task you name: ``POST /<route>`` queues it (202 and
  ``{"task_id"}``), ``GET /<route>/<id>`` gives ``{"task_status"}``, and
  ``GET /<route>/<id>/result`` gives ``{"task_result"}`` once it succeeded;
* generic ones for every registered task: ``GET /tasks``,
  ``POST /tasks/<name>`` with JSON ``{"args": [...], "kwargs": {...}}``,
  ``GET /results/<id>`` and ``GET /health``;
* for watching (``asyncq.dashboard``): ``/dashboard``, ``/inspect``, ``/events``
  and ``/metrics``.

Bad input gets a JSON error and a 4xx status, never a 500: a body over
``api_max_content_length`` gets 413 on every route (sent with a length or
chunked), args and kwargs nesting deeper than ``MAX_NESTING`` 400, a time more
than ``MAX_DELAY`` ahead or a queue the app does not know 422. A Redis that is
unreachable, full or read-only gets 503. (gunicorn answers some errors itself,
before Flask: ``asyncq.api.gunicorn_conf`` makes those JSON too.)

When $ASYNCQ_API_TOKEN is set, every route but ``GET /health`` (which load
balancers probe) needs ``Authorization: Bearer <token>``; otherwise 401.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from asyncq import states
from asyncq.api.dashboard import PUBLIC_ENDPOINTS, monitor_routes
from asyncq.api.errors import error
from asyncq.api.openapi import describe_api
from asyncq.app import AsyncQ
from asyncq.connection import refusal
from asyncq.exceptions import ConfigurationError, EncodeError, EvictingRedis, QueueNotFound
from asyncq.keys import check_priority
from asyncq.loader import find_app
from asyncq.message import MAX_DELAY, MESSAGE_NESTING, check_ahead, too_deep
from asyncq.monitor import describe
from asyncq.outage import REDIS_DOWN
from asyncq.serialization import loads, nests_deeper


def create_app(celery: AsyncQ, routes: Mapping[str, str] | None = None) -> Flask:
    """A Flask app for ``celery``; ``routes`` maps URL names to task names served
    the tutorial's way, e.g. ``{"async_long_running_task": "async_tasks.long_running_task"}``."""
    app = Flask(__name__, static_folder=None)  # the dashboard serves its own files
    app.config["MAX_CONTENT_LENGTH"] = celery.conf.api_max_content_length
    app.extensions["asyncq"] = celery
    token = api_token()
    app.extensions["asyncq_openapi"] = describe_api(
        celery.main, routes or {}, token is not None,
        None if celery.conf.api_allow_any_queue else celery.known_queues())
    if token is not None:
        require_token(app, token)
    app.before_request(read_body_within_limit)
    app.register_blueprint(generic_routes())
    app.register_blueprint(monitor_routes())
    for route, task_name in (routes or {}).items():
        app.register_blueprint(tutorial_routes(route, task_name))
    install_error_handlers(app)
    return app


def from_env() -> Flask:
    """For ``gunicorn 'asyncq.api:from_env()'``: the app named by $ASYNCQ_APP (as in ``-A``)."""
    return create_app(find_app(os.environ["ASYNCQ_APP"]))


# -- the optional bearer token ------------------------------------------------
TOKEN_VARIABLE = "ASYNCQ_API_TOKEN"
# RFC 6750's b64token: what may follow "Bearer " in a header, so any accepted
# token can also be sent (openssl rand -hex 32 gives one).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def api_token() -> str | None:
    """The token from $ASYNCQ_API_TOKEN, None when it is not set.

    An empty or unsendable value is refused rather than ignored: a typo in a
    deployment must not serve the API open when a token was meant.
    """
    token = os.environ.get(TOKEN_VARIABLE)
    if token is None:
        return None
    if not _B64TOKEN.fullmatch(token):
        raise ConfigurationError(
            f"${TOKEN_VARIABLE} is set but is not a usable bearer token (empty, or characters "
            "other than letters, digits and -._~+/=); unset it to serve the API without one")
    return token


def require_token(app: Flask, token: str) -> None:
    """Answer 401 to any request without ``Authorization: Bearer <token>``, except
    ``GET /health``. Runs before routing, so unknown paths get 401 too, not 404."""
    expected = token.encode()

    @app.before_request
    def check_token() -> tuple[Response, int] | None:
        if request.endpoint in ("asyncq.health", *PUBLIC_ENDPOINTS) \
                and request.method in ("GET", "HEAD"):
            return None
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return unauthorized("this API needs a token: send 'Authorization: Bearer <token>'",
                                'Bearer realm="asyncq"')
        # compare_digest takes as long for a near miss as for a wild guess.
        if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
            return unauthorized("the bearer token is not valid",
                                'Bearer realm="asyncq", error="invalid_token"')
        return None


def unauthorized(message: str, challenge: str) -> tuple[Response, int]:
    response, status = error(401, message)
    response.headers["WWW-Authenticate"] = challenge
    return response, status


def read_body_within_limit() -> None:
    """Read the request's body before any route runs, so that a body over
    ``api_max_content_length`` gets 413 on every route, including those that take no
    body, whether its size was sent (Content-Length) or not (chunked: Werkzeug would
    otherwise hand a route its first ``limit`` bytes as if they were all)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    too_large = RequestEntityTooLarge(
        f"the body is larger than {limit} bytes (the server's api_max_content_length)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = request.get_data(cache=True)  # chunked: at most limit bytes are read
    if request.content_length is None and len(data) >= limit \
            and request.environ["wsgi.input"].read(1):
        raise too_large


def queue_app() -> AsyncQ:
    """The asyncq app this Flask app serves (set by create_app)."""
    app: AsyncQ = current_app.extensions["asyncq"]
    return app


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        response, status = error(exc.code or 500, exc.description or exc.name)
        # Keep the headers the error carries, such as a 405's Allow (RFC 9110 wants it).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    def redis_down(exc: Exception) -> tuple[Response, int]:
        current_app.logger.error("Redis unreachable: %s", exc)
        return error(503, "the queue's Redis server is unreachable; try again shortly")

    for kind in REDIS_DOWN:
        app.register_error_handler(kind, redis_down)

    # Redis answered, and refused: full (maxmemory with noeviction), a read-only
    # replica, a key of the wrong type. A submission it refused left nothing behind
    # (Broker.enqueue is all or nothing).
    @app.errorhandler(redis.RedisError)
    def redis_refused_command(exc: Exception) -> tuple[Response, int]:
        current_app.logger.error("Redis refused a command: %s: %s", type(exc).__name__, exc)
        kind = refusal(exc)  # also when met inside one of asyncq's scripts
        if kind == "full":
            why = "is full (maxmemory reached) and refuses new data"
        elif kind == "read-only":
            why = "is a read-only replica"
        else:
            why = f"refused the command ({str(exc).split(' ', 1)[0]})"
        return error(503, f"the queue's Redis server {why}; try again later")

    app.register_error_handler(redis.ReadOnlyError, redis_refused_command)

    @app.errorhandler(EvictingRedis)
    def evicting_redis(exc: Exception) -> tuple[Response, int]:
        current_app.logger.error("%s", exc)
        return error(503, "the queue's Redis server may evict queued tasks when full "
                          "(maxmemory-policy); the operator must set it to noeviction")

    # A subclass of ConnectionError to redis-py, but waiting will not fix it.
    @app.errorhandler(redis.AuthenticationError)
    def redis_refused(exc: Exception) -> tuple[Response, int]:
        current_app.logger.error("Redis refused the credentials in the broker URL: %s", exc)
        return error(503, "the queue's Redis server refused this server's credentials; "
                          "the operator must fix the password in the broker URL")


# -- generic routes ---------------------------------------------------------
def generic_routes() -> Blueprint:
    bp = Blueprint("asyncq", __name__)

    @bp.get("/tasks")
    def list_tasks() -> Response:
        return jsonify({"tasks": queue_app().task_names()})

    @bp.post("/tasks/<name>")
    def submit(name: str) -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
        task = queue_app().tasks.get(name)
        if task is None:
            return error(404, f"no task named {name!r}; GET /tasks lists them")
        body = read_json_object()
        if isinstance(body, tuple):
            return body
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        problem = check_call_shape(body, args, kwargs)
        options = submission_options(body) if not problem else {}
        if problem or isinstance(options, str):
            return error(422, problem or str(options))
        if "queue" in options and not allowed_queue(options["queue"]):
            return error(422, f"queue {options['queue']!r} is not one of this app's queues "
                              f"({', '.join(sorted(queue_app().known_queues()))}); the "
                              "server's api_allow_any_queue setting lets clients name others")
        try:  # by name, as Celery's send_task: a call run() cannot take fails when it runs
            result = queue_app().send_task(task.name, args, kwargs, **options)
        except EncodeError as exc:
            return error(422, str(exc))
        except QueueNotFound as exc:  # api_allow_any_queue, task_create_missing_queues off
            return error(422, str(exc.args[0]))
        location = url_for("asyncq.result", task_id=result.id)
        return (jsonify({"task_id": result.id, "state": states.PENDING, "status_url": location}),
                202, {"Location": location})

    @bp.get("/results/<task_id>")
    def result(task_id: str) -> Response | tuple[Response, int]:
        record = queue_app().broker.record(task_id)
        if not record:
            return error(404, f"no task with id {task_id!r} (never submitted, or expired)",
                         task_id=task_id, state=states.UNKNOWN)
        return jsonify(describe(task_id, record))

    bp.delete("/results/<task_id>")(revoke)
    bp.get("/openapi.json")(lambda: jsonify(current_app.extensions["asyncq_openapi"]))

    @bp.get("/health")
    def health() -> Response | tuple[Response, int]:
        broker = queue_app().broker
        broker.client.ping()
        risk = broker.eviction_warning()  # allowed (else submissions get 503), but a risk
        return jsonify({"status": "ok", "redis": "ok",
                        "warnings": [f"{risk}: tasks and results may be lost"] if risk else []})

    return bp


def revoke(task_id: str) -> Response | tuple[Response, int]:
    """Revoke: a queued or scheduled task never runs; ?terminate=true kills a running one."""
    record = queue_app().broker.record(task_id)
    if not record:
        return error(404, f"no task with id {task_id!r} (never submitted, or expired)",
                     task_id=task_id, state=states.UNKNOWN)
    terminate = request.args.get("terminate", "").lower() in ("1", "true", "yes")
    if not queue_app().AsyncResult(task_id).revoke(terminate=terminate):
        state = queue_app().broker.status(task_id)
        return error(409, f"task {task_id!r} is already {state}", task_id=task_id,
                     state=state)
    return jsonify({"task_id": task_id, "state": states.REVOKED, "terminate": terminate})


def read_json_object() -> dict[str, Any] | tuple[Response, int]:
    """The request body as a JSON object ({} when empty), or a 400 error response."""
    data = request.get_data(cache=True)
    if not data.strip():
        return {}
    # Checked before parsing: Python's parser recurses once per level. A body nests
    # as a message does (it, then args), so the workers' limit applies as it is.
    if nests_deeper(data, MESSAGE_NESTING):
        return error(400, too_deep("args and kwargs"))
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return error(400, f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object such as {\"args\": [], \"kwargs\": {}}")
    return body


SUBMIT_FIELDS = ("args", "kwargs", "countdown", "eta", "expires", "queue", "priority")


def check_call_shape(body: Mapping[str, Any], args: Any, kwargs: Any) -> str | None:
    extra = set(body) - set(SUBMIT_FIELDS)
    if extra:
        return f"unknown fields {sorted(extra)}; a submission may have {list(SUBMIT_FIELDS)}"
    if not isinstance(args, list):
        return "'args' must be a JSON array"
    if not isinstance(kwargs, dict):
        return "'kwargs' must be a JSON object"
    return None


def allowed_queue(name: str) -> bool:
    """Whether a client may send to this queue: one the app knows (``known_queues``, or
    one a worker consumes), or any when ``api_allow_any_queue`` is set. Otherwise any
    client could make lists that no worker reads and nothing expires."""
    app = queue_app()
    return app.conf.api_allow_any_queue or app.queue_known(name)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def submission_options(body: Mapping[str, Any]) -> dict[str, Any] | str:
    """The scheduling options of a submission, or what is wrong with them."""
    options: dict[str, Any] = {}
    cap = f"{MAX_DELAY} (10 years, asyncq's cap)"
    if "countdown" in body:
        if not _number(body["countdown"]) or not 0 <= body["countdown"] <= MAX_DELAY:
            return f"'countdown' must be a number of seconds from 0 to {cap}"
        options["countdown"] = body["countdown"]
    if "eta" in body:
        if "countdown" in options:
            return "give 'countdown' or 'eta', not both"
        eta = eta_option(body["eta"])
        if isinstance(eta, str):
            return eta
        options["eta"] = eta
    if "expires" in body:
        if not _number(body["expires"]) or not 0 < body["expires"] <= MAX_DELAY:
            return f"'expires' must be a number of seconds, more than 0 and at most {cap}"
        options["expires"] = body["expires"]
    if "queue" in body:
        queue = body["queue"]
        if not isinstance(queue, str) or not queue.isprintable() or not 0 < len(queue) <= 200:
            return "'queue' must be a queue name (printable text, 1-200 characters)"
        options["queue"] = queue
    if "priority" in body:
        priority = body["priority"]
        with suppress(ValueError):
            check_priority(priority)
            options["priority"] = priority
        if options.get("priority") is None:  # out of range, or null
            return "'priority' must be a whole number from 0 to 9"
    return options


def eta_option(value: Any) -> float | str:
    """A submission's ``eta`` as Unix seconds, or what is wrong with it."""
    eta = parse_eta(value)
    if eta is None:
        return "'eta' must be an ISO 8601 time (UTC when no offset) or Unix seconds"
    try:
        return check_ahead(eta, "'eta'")
    except ValueError as exc:
        return str(exc)


def parse_eta(value: Any) -> float | None:
    if _number(value):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


# -- the tutorial's routes ---------------------------------------------------
def tutorial_routes(route: str, task_name: str) -> Blueprint:
    """The three routes of the tutorial, with the same paths, methods and JSON keys."""
    bp = Blueprint(f"tutorial_{route}", __name__)

    def record_of(task_id: str) -> dict[str, str] | None:
        record = queue_app().broker.record(task_id)
        return record if record.get("task") == task_name else None

    @bp.post(f"/{route}")
    def submit() -> tuple[Response, int]:
        task = queue_app().send_task(task_name)
        return jsonify({"task_id": task.id}), 202

    @bp.get(f"/{route}/<task_id>")
    def status(task_id: str) -> Response | tuple[Response, int]:
        record = record_of(task_id)
        if record is None:
            return error(404, f"no {route} task with id {task_id!r}", task_status=states.UNKNOWN)
        return jsonify({"task_status": record["status"]})

    @bp.get(f"/{route}/<task_id>/result")
    def result(task_id: str) -> Response | tuple[Response, int]:
        record = record_of(task_id)
        if record is None:
            return error(404, f"no {route} task with id {task_id!r}", task_status=states.UNKNOWN)
        if record["status"] == states.SUCCESS:
            return jsonify({"task_result": loads(record.get("result"))})
        if record["status"] == states.FAILURE:
            failure = describe(task_id, record).get("error", {})
            return jsonify({"task_status": states.FAILURE, "error": failure})
        return jsonify({"message": "Task not finished yet !"})

    return bp

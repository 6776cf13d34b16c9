"""The OpenAPI 3.0 description of the REST API, served at ``GET /openapi.json``.

Every route ``asyncq.api`` and ``asyncq.dashboard`` serve is here, with the
JSON each answers and every error it can give: 400 for a bad query argument or
body, 404, 413, 414 and 431 (on every route: the last two from gunicorn itself,
for a request line or headers over its limits), 422, 503 when Redis is unreachable or refuses
a write and, when the API has a token, 401 (except on ``/health``,
``/dashboard`` and its static files, which are public). ``tests/test_schema.py``
checks the running API against it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from asyncq import __version__
from asyncq.message import MAX_DELAY, MAX_NESTING

STATE = {"type": "string", "description": "PENDING, STARTED, RETRY, SUCCESS, FAILURE, "
                                          "REVOKED, UNKNOWN or a custom state such as PROGRESS"}
ANY: dict[str, Any] = {"description": "Any JSON value"}
TEXT_NUMBER = {"type": "string", "description": "A number as text (times: Unix seconds)"}
SECONDS = {"type": "number", "description": "Unix seconds"}
COUNT = {"type": "integer", "minimum": 0}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any], why: str) -> dict[str, Any]:
    return {**schema, "nullable": True, "description": why}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object schema; ``required`` lists the properties always present."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


WARNINGS = {"type": "array", "items": {"type": "string"},
            "description": "What puts tasks at risk though work goes on (a Redis that may "
                           "evict keys, allowed by broker_allow_eviction)"}
SKIPPED = {"type": "array", "items": ref("Skipped"),
           "description": "Damaged entries in Redis that this answer left out"}


# -- the REST API's own shapes -------------------------------------------------
CORE_SCHEMAS: dict[str, Any] = {
    "Error": {
        **obj(["error", "status"], error={"type": "string"}, status={"type": "integer"},
              task_id={"type": "string"}, state=STATE, task_status=STATE),
        "description": "Every error: a message and the HTTP status; on an unknown task id, "
                       "also the id and its state UNKNOWN",
    },
    "Submission": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "args": {"type": "array", "items": ANY, "default": []},
            "kwargs": {"type": "object", "additionalProperties": ANY, "default": {}},
            "countdown": {"type": "number", "minimum": 0, "maximum": MAX_DELAY,
                          "description": "Seconds to wait before running (10 years at most)"},
            "eta": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                    "description": "When to run: ISO 8601 (UTC without offset) or Unix seconds;"
                                   f" at most {MAX_DELAY} seconds (10 years) from now; not "
                                   "with countdown"},
            "expires": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                        "maximum": MAX_DELAY,
                        "description": "Seconds after which, not yet started, it is REVOKED"},
            "queue": {"type": "string", "minLength": 1, "maxLength": 200, "format": "printable",
                      "description": "Printable text: Python's str.isprintable(), so no "
                                     "control, format, separator (but space), private-use, "
                                     "surrogate or unassigned characters"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9,
                         "description": "Higher runs first within its queue"},
        },
        "not": {"required": ["countdown", "eta"], "description": "countdown or eta, not both"},
    },
    "Submitted": obj(["task_id", "state", "status_url"], task_id={"type": "string"},
                     state=STATE, status_url={"type": "string"}),
    "TaskError": obj(["type", "message", "traceback"], type={"type": "string"},
                     message={"type": "string"}, traceback={"type": "string"}),
    "TaskView": {
        **obj(["task_id", "task", "state"],
              task_id={"type": "string"},
              task=nullable({"type": "string"}, "The task's name; null when unknown"),
              state=STATE, result=ANY, error=ref("TaskError"), meta=ANY,
              queue={"type": "string"}, worker={"type": "string"},
              submitted_at=TEXT_NUMBER, started_at=TEXT_NUMBER, finished_at=TEXT_NUMBER,
              runtime=TEXT_NUMBER, redeliveries=TEXT_NUMBER, retries=TEXT_NUMBER,
              args={"type": "array", "items": ANY},
              kwargs={"type": "object", "additionalProperties": ANY}, skipped=SKIPPED),
        "description": "result once SUCCESS; error once FAILURE (or RETRY: the last error); "
                       "meta when the task reported progress; args and kwargs when the app "
                       "keeps them (result_extended); skipped when a field of the record is "
                       "damaged (such as a result that is not JSON) and was left out",
    },
    "Revoked": obj(["task_id", "state", "terminate"], task_id={"type": "string"},
                   state=STATE, terminate={"type": "boolean"}),
    "Health": obj(["status", "redis", "warnings"], status={"type": "string", "enum": ["ok"]},
                  redis={"type": "string", "enum": ["ok"]},
                  warnings=WARNINGS),
}

# -- what asyncq.monitor reads (GET /inspect, /inspect/*, /events) -------------
HELD_TASK = obj(["id", "name", "queue", "state"],
                id={"type": "string"}, name={"type": "string"}, queue={"type": "string"},
                state=STATE, started_at=SECONDS,
                runtime={"type": "number", "description": "Seconds it has run so far"})
MONITOR_SCHEMAS: dict[str, Any] = {
    "Skipped": {
        **obj(["key", "entry", "reason"], key={"type": "string"},
              entry={"type": "string", "description": "The hash field or stream entry id; "
                                                      "empty when the whole key is of the "
                                                      "wrong type"},
              reason={"type": "string"}),
        "description": "A damaged entry (one no asyncq wrote, such as a counter that is not "
                       "a number) or a key of the wrong type, left out and logged once",
    },
    "HeldTask": {**HELD_TASK, "description": "A task a worker holds: active ones (running) "
                                             "also have started_at and runtime"},
    "Worker": obj(
        ["id", "alive", "hostname", "pid", "concurrency", "queues", "heartbeat",
         "heartbeat_age", "done", "active", "reserved"],
        id={"type": "string"},
        alive={"type": "boolean", "description": "Its heartbeat has not expired"},
        hostname={"type": "string"},
        pid=nullable({"type": "integer"}, "null once its heartbeat expired"),
        concurrency={"type": "integer", "minimum": 0},
        queues={"type": "array", "items": {"type": "string"}},
        heartbeat=nullable(SECONDS, "Unix seconds of its last beat; null once expired"),
        heartbeat_age=nullable({"type": "number"}, "Seconds since; null once expired"),
        done={**COUNT, "description": "Tasks it ended (since the counters began)"},
        active={"type": "array", "items": ref("HeldTask")},
        reserved={"type": "array", "items": ref("HeldTask")}),
    "Snapshot": obj(
        ["time", "workers", "queues", "scheduled", "dead_letters", "tasks_by_state",
         "warnings", "skipped"],
        time=SECONDS,
        warnings=WARNINGS,
        workers={"type": "array", "items": ref("Worker")},
        queues={"type": "object", "additionalProperties": COUNT,
                "description": "Messages waiting, per queue"},
        scheduled={**COUNT, "description": "Messages waiting for their ETA (countdown, "
                                           "retries, and rate-limited messages' turn)"},
        periodic={"type": "array", "items": ref("PeriodicTask"),
                  "description": "Periodic tasks (beat_schedule) with their last and next run"},
        dead_letters={**COUNT, "description": "Messages set aside as unrunnable"},
        tasks_by_state={"type": "object", "additionalProperties": COUNT,
                        "description": "Tasks counted per state reached"},
        skipped=SKIPPED),
    "PeriodicTask": obj(
        ["name", "task", "schedule", "queue", "last_run", "next_run"],
        name={"type": "string"}, task={"type": "string"}, schedule={"type": "string"},
        queue={"type": "string"},
        last_run=nullable(SECONDS, "Unix seconds of the last run sent; null before the first"),
        next_run=nullable(SECONDS, "Unix seconds the next run is due; null until a scheduler "
                                   "has seen the entry")),
    "RecentTask": obj(
        ["id", "name", "last_event", "time", "worker", "state", "runtime"],
        id={"type": "string"}, name={"type": "string"},
        last_event={"type": "string", "description": "received, started, succeeded, ..."},
        time=SECONDS, worker={"type": "string"}, state=STATE,
        runtime=nullable({"type": "number"}, "Seconds it ran; null until it ended")),
    "RecentTasks": obj(["tasks", "skipped"], tasks={"type": "array", "items": ref("RecentTask")},
                       skipped=SKIPPED),
    "Throughput": obj(
        ["slice", "series", "skipped"], skipped=SKIPPED,
        slice={"type": "integer", "description": "Seconds per slice"},
        series={"type": "array", "items": obj(
            ["time", "succeeded", "failed", "retried"],
            time={"type": "integer", "description": "Unix seconds the slice starts"},
            succeeded={"type": "number", "minimum": 0, "description": "Per second"},
            failed={"type": "number", "minimum": 0, "description": "Per second"},
            retried={"type": "number", "minimum": 0, "description": "Per second"})}),
    "Event": {
        **obj(["stream_id"], stream_id={"type": "string"}, type={"type": "string"},
              id={"type": "string"}, name={"type": "string"}, worker={"type": "string"},
              time=TEXT_NUMBER, runtime=TEXT_NUMBER),
        "additionalProperties": {"type": "string"},
        "description": "One task event; every value is text. type is one of received, "
                       "started, succeeded, failed, retried, revoked, rejected, requeued",
    },
    "Events": obj(["events", "skipped"], events={"type": "array", "items": ref("Event")},
                  skipped=SKIPPED),
}
SCHEMAS: dict[str, Any] = {**CORE_SCHEMAS, **MONITOR_SCHEMAS}


def answer(description: str, schema: dict[str, Any] | None = None,
           media_type: str = "application/json") -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media_type: {"schema": schema}}}


ERRORS = {
    "400": answer("Malformed JSON, a body that is not an object, or args and kwargs "
                  f"nesting lists and objects more than {MAX_NESTING} levels deep",
                  ref("Error")),
    "404": answer("Unknown task name or id", ref("Error")),
    "413": answer("Body larger than api_max_content_length (sent with a length or chunked)",
                  ref("Error")),
    "414": answer("Request line (the URL) longer than gunicorn's limit_request_line (4094 "
                  "bytes by default); answered by gunicorn before the app sees it",
                  ref("Error")),
    "431": answer("Request headers over gunicorn's limits; answered by gunicorn before the "
                  "app sees them", ref("Error")),
    "422": answer("Well-formed JSON of the wrong shape, a time more than 10 years ahead, or "
                  "a queue the app does not know", ref("Error")),
    "503": answer("Redis unreachable, or refusing a write (full, read-only)", ref("Error")),
}
BAD_QUERY = answer("A query argument out of range or not a whole number", ref("Error"))
UNAUTHORIZED = {
    **answer("No token, or not the API's token (only when $ASYNCQ_API_TOKEN is set)",
             ref("Error")),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
}
NOT_MODIFIED = answer("Not modified since the copy the client has (a conditional request)")
TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}


def whole(name: str, low: int, high: int, default: int, description: str) -> dict[str, Any]:
    """A whole-number query argument within [low, high]."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default}}


def generic_paths() -> dict[str, Any]:
    return {
        "/tasks": {"get": {
            "summary": "Names of the registered tasks", "operationId": "listTasks",
            "responses": {"200": answer("The names", obj(
                ["tasks"], tasks={"type": "array", "items": {"type": "string"}})),
                "503": ERRORS["503"]}}},
        "/tasks/{name}": {"post": {
            "summary": "Queue a registered task", "operationId": "submitTask",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": ref("Submission")}}},
            "responses": {"202": {**answer("Queued (PENDING)", ref("Submitted")),
                                  "headers": {"Location": {"schema": {"type": "string"},
                                                           "required": True}}},
                          **ERRORS}}},
        "/results/{task_id}": {
            "get": {"summary": "A task's state, and its result, error or progress meta",
                    "operationId": "getResult", "parameters": [TASK_ID],
                    "responses": {"200": answer("The task", ref("TaskView")),
                                  "404": ERRORS["404"], "503": ERRORS["503"]}},
            "delete": {"summary": "Revoke a task (terminate=true also kills it if running)",
                       "operationId": "revokeTask",
                       "parameters": [TASK_ID, {
                           "name": "terminate", "in": "query", "schema": {"type": "boolean"},
                           "description": "true, 1 or yes (any case): also end the process "
                                          "running it; any other value means false"}],
                       "responses": {"200": answer("Revoked", ref("Revoked")),
                                     "404": ERRORS["404"],
                                     "409": answer("Already final", ref("Error")),
                                     "503": ERRORS["503"]}}},
        "/health": {"get": {
            "summary": "Is Redis reachable? (public even with a token)", "operationId": "health",
            "responses": {"200": answer("Healthy", ref("Health")), "503": ERRORS["503"]}}},
        "/openapi.json": {"get": {
            "summary": "This description", "operationId": "openapi",
            "responses": {"200": answer("OpenAPI 3.0", {"type": "object"})}}},
    }


def monitor_paths() -> dict[str, Any]:
    """The routes of ``asyncq.dashboard``."""
    return {
        "/dashboard": {"get": {
            "summary": "The dashboard page (public: it holds no data, its script asks for the "
                       "token)", "operationId": "dashboard",
            "responses": {"200": answer("The page", {"type": "string"}, "text/html"),
                          "304": NOT_MODIFIED}}},
        "/dashboard/static/{filename}": {"get": {
            "summary": "The dashboard's script and style sheet (public)",
            "operationId": "dashboardStatic",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": answer("The file, with the media type of its name",
                                        {"type": "string", "format": "binary"}, "*/*"),
                          "304": NOT_MODIFIED, "404": answer("No such file", ref("Error"))}}},
        "/inspect": {"get": {
            "summary": "Workers (with the tasks they hold), queue lengths, scheduled and "
                       "dead-lettered messages, tasks counted per state",
            "operationId": "inspect",
            "responses": {"200": answer("What is going on", ref("Snapshot")),
                          "503": ERRORS["503"]}}},
        "/inspect/tasks": {"get": {
            "summary": "The tasks named by the newest events, newest first",
            "operationId": "recentTasks",
            "parameters": [whole("limit", 1, 500, 30, "How many tasks at most")],
            "responses": {"200": answer("The tasks", ref("RecentTasks")), "400": BAD_QUERY,
                          "503": ERRORS["503"]}}},
        "/inspect/throughput": {"get": {
            "summary": "Tasks ended per second, by outcome, in 5-second slices",
            "operationId": "throughput",
            "parameters": [whole("seconds", 5, 3600, 600, "How far back to look")],
            "responses": {"200": answer("The slices, oldest first", ref("Throughput")),
                          "400": BAD_QUERY, "503": ERRORS["503"]}}},
        "/events": {"get": {
            "summary": "Task events after a stream id, oldest first",
            "operationId": "events",
            "parameters": [
                {"name": "after", "in": "query", "required": False,
                 "description": "Give the stream_id of the last event seen to get only newer "
                                "ones; - (the default) for the oldest kept",
                 "schema": {"type": "string", "default": "-",
                            "pattern": "^(-|[0-9]{1,19}(-[0-9]{1,19})?(\\.[0-9]{1,9})?)$"}},
                whole("count", 1, 1000, 100, "How many events at most")],
            "responses": {"200": answer("The events", ref("Events")), "400": BAD_QUERY,
                          "503": ERRORS["503"]}}},
        "/metrics": {"get": {
            "summary": "Counters and gauges in Prometheus's text format (docs/metrics.md)",
            "operationId": "metrics",
            "responses": {"200": answer("Prometheus text exposition format 0.0.4",
                                        {"type": "string"}, "text/plain"),
                          "503": ERRORS["503"]}}},
    }


def tutorial_paths(route: str, task_name: str) -> dict[str, Any]:
    status = obj(["task_status"], task_status=STATE)
    result = obj([], task_result=ANY, message={"type": "string"}, task_status=STATE,
                 error={"type": "object"})
    return {
        f"/{route}": {"post": {
            "summary": f"Queue {task_name} (the tutorial's route)",
            "operationId": f"{route}_submit",
            "responses": {"202": answer("Queued", obj(["task_id"], task_id={"type": "string"})),
                          "503": ERRORS["503"]}}},
        f"/{route}/{{task_id}}": {"get": {
            "summary": "Its status", "operationId": f"{route}_status", "parameters": [TASK_ID],
            "responses": {"200": answer("Status", status), "404": ERRORS["404"],
                          "503": ERRORS["503"]}}},
        f"/{route}/{{task_id}}/result": {"get": {
            "summary": "Its result once SUCCESS; its error once FAILURE",
            "operationId": f"{route}_result", "parameters": [TASK_ID],
            "responses": {"200": answer("Result, error, or 'Task not finished yet !'", result),
                          "404": ERRORS["404"], "503": ERRORS["503"]}}},
    }


PUBLIC_PATHS = ("/health", "/dashboard", "/dashboard/static/{filename}")


def describe_api(title: str, routes: Mapping[str, str], token: bool,
                 queues: Iterable[str] | None = None) -> dict[str, Any]:
    """The description of an app's API; ``queues``: those clients may name (None: any)."""
    paths = {**generic_paths(), **monitor_paths()}
    for route, task_name in routes.items():
        paths.update(tutorial_paths(route, task_name))
    paths = copy.deepcopy(paths)  # each app gets its own, free to be changed below
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": f"asyncq API: {title}", "version": __version__},
        "paths": paths,
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }
    if queues is not None:
        queue = spec["components"]["schemas"]["Submission"]["properties"]["queue"]
        queue["enum"] = sorted(queues)
        queue["description"] = ("One of the app's queues (or one a running worker consumes, "
                                "worker -Q); the server setting api_allow_any_queue lifts this")
    for operations in paths.values():  # any request's body is read, and refused past the limit
        for operation in operations.values():  # and gunicorn refuses any over-long request
            for status in ("413", "414", "431"):
                operation["responses"].setdefault(status, ERRORS[status])
    if token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
        for path, operations in paths.items():
            for operation in operations.values():
                if path in PUBLIC_PATHS:
                    operation["security"] = []
                else:
                    operation["responses"]["401"] = UNAUTHORIZED
    return spec

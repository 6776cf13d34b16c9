"""The OpenAPI 3.0 description of the REST API, served at ``GET /openapi.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncq import __version__

STATE = {"type": "string", "description": "PENDING, STARTED, RETRY, SUCCESS, FAILURE, "
                                          "REVOKED, UNKNOWN or a custom state such as PROGRESS"}
ANY = {"description": "Any JSON value"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                       "task_id": {"type": "string"}, "state": STATE, "task_status": STATE},
    },
    "Submission": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "args": {"type": "array", "items": ANY, "default": []},
            "kwargs": {"type": "object", "additionalProperties": ANY, "default": {}},
            "countdown": {"type": "number", "minimum": 0,
                          "description": "Seconds to wait before running"},
            "eta": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                    "description": "When to run: ISO 8601 (UTC without offset) or Unix seconds;"
                                   " not with countdown"},
            "expires": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                        "description": "Seconds after which, not yet started, it is REVOKED"},
            "queue": {"type": "string", "minLength": 1, "maxLength": 200},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9,
                         "description": "Higher runs first within its queue"},
        },
    },
    "Submitted": {
        "type": "object", "required": ["task_id", "state", "status_url"],
        "properties": {"task_id": {"type": "string"}, "state": STATE,
                       "status_url": {"type": "string"}},
    },
    "TaskView": {
        "type": "object", "required": ["task_id", "state"],
        "properties": {
            "task_id": {"type": "string"}, "task": {"type": "string", "nullable": True},
            "state": STATE, "result": ANY,
            "error": {"type": "object", "properties": {
                "type": {"type": "string"}, "message": {"type": "string"},
                "traceback": {"type": "string"}}},
            "meta": ANY, "worker": {"type": "string"}, "submitted_at": {"type": "string"},
            "started_at": {"type": "string"}, "finished_at": {"type": "string"},
            "redeliveries": {"type": "string"},
        },
    },
    "Revoked": {
        "type": "object", "required": ["task_id", "state", "terminate"],
        "properties": {"task_id": {"type": "string"}, "state": STATE,
                       "terminate": {"type": "boolean"}},
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": answer("Malformed JSON, or a body that is not an object", ref("Error")),
    "404": answer("Unknown task name or id", ref("Error")),
    "413": answer("Body larger than api_max_content_length", ref("Error")),
    "422": answer("Well-formed JSON of the wrong shape", ref("Error")),
    "503": answer("Redis unreachable", ref("Error")),
}
TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}


def generic_paths() -> dict[str, Any]:
    return {
        "/tasks": {"get": {
            "summary": "Names of the registered tasks", "operationId": "listTasks",
            "responses": {"200": answer("The names", {
                "type": "object", "required": ["tasks"],
                "properties": {"tasks": {"type": "array", "items": {"type": "string"}}}}),
                "503": ERRORS["503"]}}},
        "/tasks/{name}": {"post": {
            "summary": "Queue a registered task", "operationId": "submitTask",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": ref("Submission")}}},
            "responses": {"202": {**answer("Queued (PENDING)", ref("Submitted")),
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **ERRORS}}},
        "/results/{task_id}": {
            "get": {"summary": "A task's state, and its result, error or progress meta",
                    "operationId": "getResult", "parameters": [TASK_ID],
                    "responses": {"200": answer("The task", ref("TaskView")),
                                  "404": ERRORS["404"], "503": ERRORS["503"]}},
            "delete": {"summary": "Revoke a task (terminate=true also kills it if running)",
                       "operationId": "revokeTask",
                       "parameters": [TASK_ID, {"name": "terminate", "in": "query",
                                                "schema": {"type": "boolean"}}],
                       "responses": {"200": answer("Revoked", ref("Revoked")),
                                     "404": ERRORS["404"],
                                     "409": answer("Already final", ref("Error")),
                                     "503": ERRORS["503"]}}},
        "/health": {"get": {
            "summary": "Is Redis reachable?", "operationId": "health",
            "responses": {"200": answer("Healthy", {
                "type": "object", "properties": {"status": {"type": "string"},
                                                 "redis": {"type": "string"}}}),
                "503": ERRORS["503"]}}},
        "/openapi.json": {"get": {
            "summary": "This description", "operationId": "openapi",
            "responses": {"200": answer("OpenAPI 3.0", {"type": "object"})}}},
    }


def tutorial_paths(route: str, task_name: str) -> dict[str, Any]:
    status = {"type": "object", "required": ["task_status"],
              "properties": {"task_status": STATE}}
    result = {"type": "object", "properties": {
        "task_result": ANY, "message": {"type": "string"}, "task_status": STATE,
        "error": {"type": "object"}}}
    return {
        f"/{route}": {"post": {
            "summary": f"Queue {task_name} (the tutorial's route)",
            "operationId": f"{route}_submit",
            "responses": {"202": answer("Queued", {
                "type": "object", "required": ["task_id"],
                "properties": {"task_id": {"type": "string"}}}), "503": ERRORS["503"]}}},
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


def describe_api(title: str, routes: Mapping[str, str], token: bool) -> dict[str, Any]:
    paths = generic_paths()
    for route, task_name in routes.items():
        paths.update(tutorial_paths(route, task_name))
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": f"asyncq API: {title}", "version": __version__},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
        spec["paths"]["/health"]["get"]["security"] = []
    return spec

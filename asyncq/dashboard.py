"""Routes for watching: the dashboard page, the JSON it polls, events and /metrics.

``/dashboard`` is a static page (``asyncq/static``): plain HTML, CSS and a small
script, no build step. Its script polls ``/inspect``, ``/inspect/throughput``
and ``/inspect/tasks`` every two seconds and opens ``/results/<id>`` for a
task's detail. The page itself needs no token (it holds no data); when the API
has one, the script asks for it once and sends it with every request.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from asyncq import metrics
from asyncq.monitor import Monitor

PUBLIC_ENDPOINTS = ("monitor.dashboard", "monitor.static")


def monitor() -> Monitor:
    return Monitor(current_app.extensions["asyncq"])


def _int_arg(name: str, default: int, low: int, high: int) -> int | None:
    """A whole-number query argument within bounds; None when it is not one."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


def _bad_arg(name: str, low: int, high: int) -> tuple[Response, int]:
    from asyncq.api import error

    return error(400, f"{name!r} must be a whole number from {low} to {high}")


def monitor_routes() -> Blueprint:
    bp = Blueprint("monitor", __name__, static_folder="static",
                   static_url_path="/dashboard/static")

    @bp.get("/dashboard")
    def dashboard() -> Response:
        return bp.send_static_file("dashboard.html")

    @bp.get("/inspect")
    def inspect() -> Response:
        return jsonify(monitor().snapshot())

    @bp.get("/inspect/tasks")
    def recent_tasks() -> Response | tuple[Response, int]:
        limit = _int_arg("limit", 30, 1, 500)
        if limit is None:
            return _bad_arg("limit", 1, 500)
        return jsonify({"tasks": monitor().recent_tasks(limit)})

    @bp.get("/inspect/throughput")
    def throughput() -> Response | tuple[Response, int]:
        seconds = _int_arg("seconds", 600, 5, 3600)
        if seconds is None:
            return _bad_arg("seconds", 5, 3600)
        return jsonify({"slice": 5, "series": monitor().throughput(seconds)})

    @bp.get("/events")
    def events() -> Response | tuple[Response, int]:
        count = _int_arg("count", 100, 1, 1000)
        if count is None:
            return _bad_arg("count", 1, 1000)
        after = request.args.get("after", "-")
        if after != "-" and not _stream_id(after):
            from asyncq.api import error

            return error(400, "'after' must be a stream id such as 1700000000000-0, or -")
        return jsonify({"events": monitor().events(after, count)})

    @bp.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(monitor()), content_type=metrics.CONTENT_TYPE)

    return bp


def _stream_id(text: str) -> bool:
    millis, _, seq = text.partition("-")
    return millis.isdigit() and (seq == "" or seq.isdigit()) and len(text) <= 40

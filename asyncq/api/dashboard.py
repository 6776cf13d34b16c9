"""Routes for watching: the dashboard page, the JSON it polls, events and /metrics.

``/dashboard`` is a static page (``asyncq/static``): plain HTML, CSS and a small
script, no build step. Its script polls ``/inspect``, ``/inspect/throughput``
and ``/inspect/tasks`` every two seconds and opens ``/results/<id>`` for a
task's detail. The page itself needs no token (it holds no data); when the API
has one, the script asks for it once and sends it with every request.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory

from asyncq.api import metrics
from asyncq.api.errors import error
from asyncq.monitor import Monitor

PUBLIC_ENDPOINTS = ("monitor.dashboard", "monitor.static")
STATIC = Path(__file__).parent / "static"


def monitor() -> Monitor:
    return Monitor(current_app.extensions["asyncq"])


def _int_arg(name: str, default: int, low: int, high: int) -> int | None:
    """A whole-number query argument within bounds; None when it is not one."""
    raw = request.args.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def _bad_arg(name: str, low: int, high: int) -> tuple[Response, int]:
    return error(400, f"{name!r} must be a whole number from {low} to {high}")


def monitor_routes() -> Blueprint:
    bp = Blueprint("monitor", __name__)

    @bp.get("/dashboard")
    def dashboard() -> Response:
        return send_from_directory(STATIC, "dashboard.html")

    # <filename>, not the <path:filename> of a blueprint's static_folder: the files sit side
    # by side, and the route is /dashboard/static/{filename} in the OpenAPI description.
    @bp.get("/dashboard/static/<filename>")
    def static(filename: str) -> Response:
        return send_from_directory(STATIC, filename)

    @bp.get("/inspect")
    def inspect() -> Response:
        return jsonify(monitor().snapshot())

    @bp.get("/inspect/tasks")
    def recent_tasks() -> Response | tuple[Response, int]:
        limit = _int_arg("limit", 30, 1, 500)
        if limit is None:
            return _bad_arg("limit", 1, 500)
        reader = monitor()
        return jsonify({"tasks": reader.recent_tasks(limit), "skipped": reader.skipped_entries()})

    @bp.get("/inspect/throughput")
    def throughput() -> Response | tuple[Response, int]:
        seconds = _int_arg("seconds", 600, 5, 3600)
        if seconds is None:
            return _bad_arg("seconds", 5, 3600)
        reader = monitor()
        return jsonify({"slice": 5, "series": reader.throughput(seconds),
                        "skipped": reader.skipped_entries()})

    @bp.get("/events")
    def events() -> Response | tuple[Response, int]:
        count = _int_arg("count", 100, 1, 1000)
        if count is None:
            return _bad_arg("count", 1, 1000)
        after = request.args.get("after", "-")
        if after != "-" and not _stream_id(after):
            return error(400, "'after' must be an event's stream_id such as 1700000000000-0.3, "
                              "a stream id such as 1700000000000-0, or -")
        reader = monitor()
        return jsonify({"events": reader.events(after, count), "skipped": reader.skipped_entries()})

    @bp.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(monitor()), content_type=metrics.CONTENT_TYPE)

    return bp


# <ms> or <ms>-<seq> in ASCII digits; 19 digits at most, so both fit Redis's 64 bits (longer
# ones, or other scripts' digits, made XRANGE fail: a 500); an event's adds .<index>.
_STREAM_ID = re.compile(r"[0-9]{1,19}(-[0-9]{1,19})?(\.[0-9]{1,9})?")


def _stream_id(text: str) -> bool:
    return _STREAM_ID.fullmatch(text) is not None

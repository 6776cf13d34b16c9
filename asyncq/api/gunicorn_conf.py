"""gunicorn settings for asyncq's REST API:
``gunicorn -c python:asyncq.api.gunicorn_conf --bind 127.0.0.1:5000 proj:app``.

gunicorn answers some requests itself, before the Flask app sees them, with an
HTML page: a request line over ``limit_request_line`` (414, 4094 bytes by
default, so a URL of about 4 KB), a malformed request line or header (400),
headers over their limits (431), a transfer coding it does not know (501).
With this file those answers are JSON, ``{"error": "...", "status": N}``, as
every other error of the API is. gunicorn's limits themselves are unchanged, and
command-line options still apply on top of this file.

gunicorn has no setting for the format of its error pages: each worker replaces
the one function that writes them, ``gunicorn.util.write_error(sock, status,
reason, message)`` (the same since gunicorn 0.x), after it is forked. Should a
gunicorn release change that function's arguments, it is left alone and the
pages stay HTML (logged once per worker). A project with its own gunicorn
configuration file can take this in with ``from asyncq.api.gunicorn_conf import *``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from gunicorn import util

__all__ = ["post_fork"]

_EXPECTED = ["sock", "status_int", "reason", "mesg"]  # write_error's arguments


def json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answer (``util.write_error``), as the API's JSON errors."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason,
                       "status": status_int}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook, in each worker as it starts: its error pages become JSON."""
    if list(inspect.signature(util.write_error).parameters) == _EXPECTED:
        util.write_error = json_error
    else:
        worker.log.warning("asyncq.api.gunicorn_conf: gunicorn.util.write_error takes other "
                           "arguments in this gunicorn; its error pages stay HTML")

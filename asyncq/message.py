"""The wire format of a task message: compact JSON, never pickle.

A message is ``{"id", "task", "args", "kwargs", "queue"}`` and, when set,
``retries`` (tries so far), ``eta`` and ``expires`` (Unix seconds) and
``priority`` (0-9). Producers build it with ``encode_message``; a worker reads
it back with ``Message.decode``, which says why when the bytes are not one of ours
(the message is then dead-lettered).

Two limits hold on both sides, so that a producer never queues what no worker
could read: args and kwargs nest at most ``MAX_NESTING`` levels, and a task is
due (``countdown``, ``eta``) or expires (``expires``) at most ``MAX_DELAY`` ahead.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from asyncq.exceptions import EncodeError
from asyncq.keys import PRIORITIES
from asyncq.serialization import TooDeep, dumps, loads, nests_deeper

MAX_ID_BYTES = 64  # task ids up to this size (a uuid4 is 36); workers share them in memory
# How deep lists and dicts may nest in a task's args and kwargs (``[[1]]`` is 2), far
# below Python's recursion limit (1000), which its JSON parser and encoder run into.
# A constant, not a setting: a producer and a worker must never disagree on it.
MAX_NESTING = 100
# A message nests two levels more than the values in it: the message, its args list.
MESSAGE_NESTING = MAX_NESTING + 2
MAX_DELAY = 10 * 365 * 24 * 3600  # seconds: the furthest ahead countdown, eta, expires go

_REQUIRED = {"id": str, "task": str, "args": list, "kwargs": dict, "queue": str}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "retries": int, "eta": (int, float), "expires": (int, float), "priority": int}


@dataclass(frozen=True)
class Message:
    """A decoded queue message: JSON ``{"id", "task", "args", "kwargs", "queue"}``, and
    when set, ``retries`` (tries so far), ``eta`` and ``expires`` (Unix seconds)."""

    raw: bytes
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    body: dict[str, Any]

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        """Parse a message, raising ValueError with the reason if it is not one of ours."""
        if nests_deeper(raw, MESSAGE_NESTING):
            raise ValueError(too_deep("its args or kwargs"))
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        for field, kind in _REQUIRED.items():
            if not isinstance(body.get(field), kind):
                raise ValueError(f"field {field!r} missing or not a {kind.__name__}")
        for field in ("id", "task", "queue"):  # they become Redis keys: valid UTF-8 only
            if not body[field] or not _encodable(body[field]):
                raise ValueError(f"field {field!r} is empty or not valid text")
        if len(body["id"].encode()) > MAX_ID_BYTES:
            raise ValueError(f"field 'id' is longer than {MAX_ID_BYTES} bytes")
        if body.get("priority") is not None and body["priority"] not in PRIORITIES:
            raise ValueError("field 'priority' is not one of 0-9")
        for field, kinds in _OPTIONAL.items():
            if body.get(field) is not None and not isinstance(body[field], kinds):
                raise ValueError(f"field {field!r} has the wrong type")
        return cls(raw, body["id"], body["task"], body["args"], body["kwargs"], body["queue"],
                   body)

    @property
    def retries(self) -> int:
        return int(self.body.get("retries") or 0)

    @property
    def priority(self) -> int:
        return int(self.body.get("priority") or 0)

    @property
    def expires(self) -> float | None:
        expires = self.body.get("expires")
        return None if expires is None else float(expires)

    def expired(self) -> bool:
        """Whether its ``expires`` time has passed (it is then revoked, not run)."""
        return self.expires is not None and time.time() > self.expires

    def retried(self) -> bytes:
        """The message for the next try: the same, with ``retries`` one higher."""
        return encode_body({**self.body, "retries": self.retries + 1})


def parse_json(raw: bytes) -> Any:
    """JSON (with Celery's tagged datetimes, Decimals, UUIDs), with every way it can fail
    (bad UTF-8, deep nesting, a bad tagged value) as ValueError."""
    try:
        return loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError includes UnicodeDecodeError
        raise ValueError(f"not JSON: {type(exc).__name__}: {exc}"[:300]) from None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_message(task_id: str, task: str, args: list[Any], kwargs: dict[str, Any], queue: str,
                   **options: Any) -> bytes:
    """The wire format: compact JSON, never pickle. Options that are None are left out."""
    body = {"id": task_id, "task": task, "args": args, "kwargs": kwargs, "queue": queue}
    body.update((k, v) for k, v in options.items() if v is not None)
    return encode_body(body)


def encode_body(body: dict[str, Any]) -> bytes:
    """A message as JSON; EncodeError when its arguments are not JSON or nest deeper
    than a worker reads (``MAX_NESTING``)."""
    what = f"the arguments of task {body['task']!r}"
    try:
        raw = dumps(body, what).encode()
    except TooDeep:  # hundreds of levels deep: far past the limit
        raise EncodeError(too_deep(what)) from None
    if nests_deeper(raw, MESSAGE_NESTING):
        raise EncodeError(too_deep(what))
    return raw


def too_deep(what: str) -> str:
    return (f"{what} nest lists and dicts more than {MAX_NESTING} levels deep "
            f"(asyncq's limit, MAX_NESTING)")


def new_task_id() -> str:
    """A fresh task id, a uuid4 as Celery makes them."""
    return str(uuid.uuid4())


def check_ahead(when: float, what: str, now: float | None = None) -> float:
    """``when`` (Unix seconds), if it is no more than ``MAX_DELAY`` ahead; else ValueError
    naming the cap. A time in the past is fine: the task is due (or expired) at once."""
    if not math.isfinite(when):
        raise ValueError(f"{what} must be a finite number, not {when!r}")
    if when - (time.time() if now is None else now) > MAX_DELAY:
        raise ValueError(f"{what} is more than 10 years ahead: countdown, eta and expires "
                         f"may be at most {MAX_DELAY} seconds from now (asyncq's cap, "
                         "MAX_DELAY)")
    return when


def as_timestamp(when: datetime | float) -> float:
    """A datetime (naive ones are UTC, as in Celery) or Unix seconds, as Unix seconds."""
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    value = float(when)
    if not math.isfinite(value):
        raise ValueError(f"a time must be a finite number, not {when!r}")
    return value

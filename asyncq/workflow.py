"""What a task's end sets off in its workflow: the canvas at run time.

Each task of a canvas keeps, in its record's field ``then``, what follows it
(written when the canvas is sent, see ``canvas.py``; never changed after)::

    {"ok":   [actions to take when it succeeds],
     "next": [ids of the tasks that wait for it],
     "err":  [messages of its link_error callbacks],
     "body": 1 when it starts a chord's body,
     "in":   [ids of the bodies of the chords whose header it is in]}

An action is ``{"push": message}`` (queue the message with the result as its
first argument, unless immutable; ``"in"``/``"at"`` delay it) or ``{"count":
chord}`` (count this task in the chord's set; the member that completes the set
queues the chord's body, whose messages wait beside the set). When the task
ends any other way (an error, a time limit, a revoke, a lost worker, expiry),
every task that waited for it, and every task that waited for those, ends with
its error, and the errbacks run.

The broker calls ``Broker.follow_ups`` for every final state it stores, and
stores the commands it gets back as the record's follow-up plan (see
``broker.py``): so a follow-up may repeat after a crash, but is never lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from asyncq import states
from asyncq.keys import Keys
from asyncq.message import encode_body
from asyncq.scripts import Command, Script
from asyncq.serialization import dumps, loads

_CHORD = Script.load("chord")  # count a chord member; the last one queues the body


def dump_then(then: Mapping[str, Any]) -> str:
    """The ``then`` field of a record ('' when nothing follows the task)."""
    return dumps(then, "a canvas step's arguments") if then else ""


def load_then(raw: str | None) -> dict[str, Any]:
    """A record's ``then`` field; a damaged one is read as "nothing follows"."""
    if not raw:
        return {}
    try:
        then = json.loads(raw)
    except ValueError:
        return {}
    return then if isinstance(then, dict) else {}


def on_success(keys: Keys, then: Mapping[str, Any], task_id: str, result: str,
               ttl: int) -> list[Command]:
    """The commands that take a workflow on after a task succeeded with ``result``."""
    commands: list[Command] = []
    value: Any = None if not then.get("ok") else loads(result)
    for action in then.get("ok", []):
        if "push" in action:
            commands.append(_push(keys, action["push"], [value], action))
        elif "count" in action:
            commands.append(_count(keys, action["count"], task_id, ttl))
    return commands


def passed_on(fields: Mapping[str, str], task_id: str, past_chord: bool = False
              ) -> dict[str, str]:
    """The final state of a task that cannot run because ``task_id`` ended unsuccessful:
    REVOKED after a revoke (FAILURE from a chord's body on, as Celery fails a chord
    whose member was revoked), else FAILURE, with the step's error."""
    revoked = fields.get("status") == states.REVOKED and not past_chord
    return {"status": states.REVOKED if revoked else states.FAILURE,
            "exc_type": fields.get("exc_type", "asyncq.exceptions.TaskError"),
            "exc_message": f"{fields.get('exc_message', '')} (in step {task_id})",
            "finished_at": fields.get("finished_at") or f"{time.time():.6f}"}


def errback_pushes(keys: Keys, errbacks: list[tuple[dict[str, Any], str]],
                   fields: Mapping[str, str]) -> list[Command]:
    """Queue ``link_error`` callbacks, each for the task it is called for (the failed
    task, or the chord body it ended): with its id, or, for Celery's new style, its
    request, exception and traceback; the error travels in the message, as the
    failed task's record may be gone (ignore_result) by the time it runs."""
    error = {k: fields.get(k, "") for k in ("exc_type", "exc_message", "traceback")}
    return [_push(keys, {**body, "errback_of": failed, "error": error}, [failed], {})
            for body, failed in errbacks]


def _push(keys: Keys, body: Mapping[str, Any], first: list[Any],
          action: Mapping[str, Any]) -> Command:
    message = dict(body)
    if not message.get("immutable"):
        message["args"] = [*first, *message["args"]]
    if "expires_in" in message:  # counted from when the step is queued, as in Celery
        message["expires"] = time.time() + float(message.pop("expires_in"))
    raw = encode_body(message).decode()
    due = time.time() + float(action["in"]) if "in" in action else action.get("at")
    if due is not None and due > time.time():
        return ("ZADD", keys.scheduled(message["queue"]), f"{due:.6f}", raw)
    return ("LPUSH", keys.queue(message["queue"], int(message.get("priority") or 0)), raw)


def _count(keys: Keys, chord: Mapping[str, Any], member_id: str, ttl: int) -> Command:
    """Count a chord member that succeeded; the one that completes the set queues the
    body's first tasks (all on one queue: one slot)."""
    queue, chord_id = chord["queue"], chord["chord"]
    lists = [keys.queue(name, int(priority)) for name, priority in chord["lists"]]
    return _CHORD.command([keys.chord(queue, chord_id), keys.chord_bodies(queue, chord_id),
                           *lists], [member_id, ttl, chord["size"]])

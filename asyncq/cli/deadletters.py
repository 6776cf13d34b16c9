"""The dead-letter list: read it, put messages back on their queue, empty it.

A worker sets a message aside in ``{asyncq}:dead`` (``Keys.dead_letters``)
when it cannot run it: the bytes are not a message, or they name a task the
worker does not know. The bytes are kept exactly as they were, so what an
operator sees here is what the worker saw. ``asyncq -A APP dead ...`` (in
``cli.py``) is the command line over this module.

Whether a message can run is judged against the app given here, which may
know more tasks than the worker that set it aside (a newer release): such a
message can be requeued. Requeueing checks the task's record, takes the
message off the dead-letter list (LREM: of two operators requeueing the same
copy at once, one gets it), then writes its PENDING record and queues it, as
``Broker.enqueue`` does. The list, the record and the queue are in three
slots, so these are three steps: a crash after the LREM loses that one dead
letter; two identical copies in the list, requeued at once by two operators,
could both run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from asyncq import states
from asyncq.exceptions import NotRegistered, exception_type_name
from asyncq.keys import PRIORITIES
from asyncq.message import Message
from asyncq.scripts import Script, execute

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

# The error a worker stores on a task whose message named a task it did not know.
# Only a FAILURE of this kind came from the setting aside itself; any other state
# means the task ran (or is queued) through another copy of the message.
NOT_REGISTERED = exception_type_name(NotRegistered())


_PURGE = Script.load("purge_dead_letters")  # the oldest N, in one step


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter list, judged against an app.

    ``problem`` says in a few words why the app cannot run it now ("not JSON",
    "unregistered task", ...); None means ``requeue`` would put it back.
    """

    index: int  # position in the list: 0 is the most recent
    raw: bytes  # the message exactly as the worker saw it
    task_id: str | None  # None when no id can be read
    task: str | None
    queue: str | None
    problem: str | None
    detail: str | None = None  # the problem as a sentence
    priority: int = 0  # which of the queue's lists it goes back to

    @property
    def requeueable(self) -> bool:
        return self.problem is None

    def preview(self, width: int = 48) -> str:
        """The raw bytes on one line: undecodable bytes and control characters escaped."""
        text = self.raw.decode("utf-8", "backslashreplace")
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        return text if len(text) <= width else text[: width - 3] + "..."

    def as_json(self) -> dict[str, Any]:
        """For ``dead list --json``: the raw bytes both readable and exact (base64)."""
        return {"index": self.index, "id": self.task_id, "task": self.task,
                "queue": self.queue, "priority": self.priority, "requeueable": self.requeueable,
                "problem": self.problem, "detail": self.detail,
                "raw": self.raw.decode("utf-8", "backslashreplace"),
                "raw_base64": base64.b64encode(self.raw).decode()}


@dataclass
class RequeueReport:
    """What ``requeue`` did with each dead letter it was asked about."""

    requeued: list[DeadLetter] = field(default_factory=list)
    kept: list[DeadLetter] = field(default_factory=list)  # still dead; problem says why
    gone: list[DeadLetter] = field(default_factory=list)  # removed by someone else meanwhile
    unmatched: list[str] = field(default_factory=list)  # asked-for ids not in the list

    @property
    def complete(self) -> bool:
        """True when something was requeued and nothing asked for was left behind."""
        return bool(self.requeued) and not (self.kept or self.gone or self.unmatched)


def read(app: AsyncQ) -> list[DeadLetter]:
    """Every dead letter, newest first, with the reason ``app`` cannot run it (if any)."""
    client = app.broker.client
    raws = cast(list[bytes], client.lrange(app.keys.dead_letters(), 0, -1))
    letters = [_judge(app, index, raw) for index, raw in enumerate(raws)]
    # Messages this app could run: their task record tells whether they already ran.
    runnable = [letter for letter in letters if letter.requeueable]
    pipe = client.pipeline(transaction=False)
    for letter in runnable:
        pipe.hmget(app.keys.task(letter.task_id or ""), "status", "exc_type")
    for letter, (status, exc_type) in zip(runnable, pipe.execute(), strict=True):
        judged = _record_problem(letter, _text(status), _text(exc_type))
        letters[letter.index] = judged
    return letters


def requeue(app: AsyncQ, ids: Collection[str] = ()) -> RequeueReport:
    """Put dead letters back on their queue with a fresh PENDING record, as
    ``Broker.enqueue`` would have written it; all of them, or those with ``ids``.

    Undecodable messages, unregistered tasks and tasks that already ran through
    another copy stay in the list and are reported in ``kept``.
    """
    report = RequeueReport()
    letters = read(app)
    if ids:
        wanted = set(ids)
        found = {letter.task_id for letter in letters}
        report.unmatched = [task_id for task_id in dict.fromkeys(ids) if task_id not in found]
        letters = [letter for letter in letters if letter.task_id in wanted]
    for letter in letters:
        outcome = _requeue_one(app, letter) if letter.requeueable else letter
        if outcome is None:
            report.requeued.append(letter)
        elif isinstance(outcome, DeadLetter):
            report.kept.append(outcome)
        else:  # "gone"
            report.gone.append(letter)
    return report


def _requeue_one(app: AsyncQ, letter: DeadLetter) -> DeadLetter | Literal["gone"] | None:
    """Requeue one dead letter: None when done, "gone" when someone else took it off
    the list, else the letter with the reason it stays.

    The record is checked again here, not only when listing, so that a task
    submitted again meanwhile is not run twice.
    """
    assert letter.task_id and letter.task and letter.queue  # a decodable message
    status, exc_type = cast("list[bytes | None]", app.broker.client.hmget(
        app.keys.task(letter.task_id), "status", "exc_type"))
    kept = _record_problem(letter, _text(status), _text(exc_type))
    if not kept.requeueable:
        return kept
    # redis-py hints LREM's value as str; the raw message is bytes, sent as is.
    if not app.broker.client.lrem(app.keys.dead_letters(), 1, letter.raw):  # type: ignore[arg-type]
        return "gone"
    app.broker.enqueue(letter.task_id, letter.task, letter.queue, letter.raw,
                       priority=letter.priority, fresh=True)
    return None


def purge(app: AsyncQ, oldest: int | None = None) -> tuple[int, int]:
    """Delete the ``oldest`` N dead letters (None: all of them) in one step.

    Returns (removed, left): those set aside after the caller counted stay.
    """
    removed, left = execute(app.broker.client, _PURGE.command(
        [app.keys.dead_letters()], [-1 if oldest is None else oldest]))
    return int(removed), int(left)


# -- judging one message ----------------------------------------------------
def _judge(app: AsyncQ, index: int, raw: bytes) -> DeadLetter:
    """Why ``app`` cannot run ``raw`` by itself (the task record is looked at later)."""
    try:
        message = Message.decode(raw)
    except ValueError as exc:
        reason = str(exc)
        problem = "not JSON" if reason.startswith("not JSON") else reason
        body = _json_object(raw)
        return DeadLetter(index, raw, _str_field(body, "id"), _str_field(body, "task"),
                          _str_field(body, "queue"), problem, reason)
    if message.task not in app.tasks:
        return DeadLetter(index, raw, message.id, message.task, message.queue,
                          "unregistered task",
                          f"app {app.main!r} has no task named {message.task!r}",
                          message.priority)
    if message.priority not in PRIORITIES:
        return DeadLetter(index, raw, message.id, message.task, message.queue,
                          "priority out of range",
                          f"priority {message.priority} is not one of 0-9: no worker would "
                          "look at its list", message.priority)
    return DeadLetter(index, raw, message.id, message.task, message.queue, None,
                      priority=message.priority)


def _record_problem(letter: DeadLetter, status: str | None,
                    exc_type: str | None) -> DeadLetter:
    """The check made before requeueing: a task whose record shows it ran, or is
    queued or running, must not be run again from a dead copy of its message."""
    if status is None or (status == states.FAILURE and exc_type == NOT_REGISTERED):
        return letter
    if status in states.READY_STATES:
        return replace(letter, problem=f"task already {status}",
                       detail=f"task {letter.task_id} already ended {status} through another "
                              "copy of this message; requeueing would run it again")
    return replace(letter, problem=f"task is {status}",
                   detail=f"task {letter.task_id} is {status} (queued or running already); "
                          "requeueing would run it twice")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _str_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None

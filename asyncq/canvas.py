"""Signatures, chains, groups and chords: Celery's canvas, flat and small.

How they travel: every step gets its id, and a PENDING record, when the whole
canvas is submitted (all records before any message). A chain's first message
carries the steps still to come; when a step succeeds, its worker queues the
next one with the result as its first argument: the plan to do so is stored
with the step's result, so that it survives a crash (see broker.py). A chord's
members carry the body; each member that succeeds adds its id to a set kept
beside the body's queue, and the member that completes the set queues the
body, which gathers the members' results. A failing step ends the rest of its chain, or its chord's
body, FAILURE with the step's error. Nesting canvases in canvases is not
supported: each step is a plain task signature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asyncq import states
from asyncq.current import current_app
from asyncq.keys import check_priority
from asyncq.message import Message, encode_body, new_task_id
from asyncq.result import AsyncResult, EagerResult, GroupResult
from asyncq.scripts import Command, Script
from asyncq.serialization import loads

if TYPE_CHECKING:
    from asyncq.app import AsyncQ


class Signature:
    """A task call to be made later: name, arguments and options (``task.s(...)``)."""

    def __init__(self, task: str, args: Any = (), kwargs: dict[str, Any] | None = None,
                 app: AsyncQ | None = None, immutable: bool = False, **options: Any):
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.app = app or current_app()
        self.immutable = immutable  # .si(): takes no result from a previous step
        self.options = options  # queue, priority
        check_priority(options.get("priority"))

    def __repr__(self) -> str:
        return f"{self.task}{'!' if self.immutable else ''}({self.args}, {self.kwargs})"

    def __or__(self, other: Signature | Chain) -> Chain:
        return Chain(self, *(other.steps if isinstance(other, Chain) else [other]))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = (), kwargs: dict[str, Any] | None = None,
                    **options: Any) -> AsyncResult:
        """Send it; extra ``args`` go in front (unless immutable), as in Celery."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs)
        args, kwargs = self.merged(args, kwargs)
        return self.app.send_task(self.task, args, kwargs, **{**self.options, **options})

    def apply(self, args: Any = (), kwargs: dict[str, Any] | None = None) -> EagerResult:
        """Run it here and now (Celery's ``Signature.apply``): an EagerResult."""
        args, kwargs = self.merged(args, kwargs)
        return self.app.registered(self.task).apply(args, kwargs)

    def merged(self, args: Any = (), kwargs: dict[str, Any] | None = None
               ) -> tuple[list[Any], dict[str, Any]]:
        if self.immutable:
            return list(self.args), dict(self.kwargs)
        return [*args, *self.args], {**self.kwargs, **(kwargs or {})}

    def body(self, task_id: str, args: Any = (), **extra: Any) -> dict[str, Any]:
        """The message body this signature becomes, with ``args`` in front."""
        call_args, call_kwargs = self.merged(args)
        queue = self.options.get("queue") or self.app.route(self.task)
        body = {"id": task_id, "task": self.task, "args": call_args, "kwargs": call_kwargs,
                "queue": queue, **extra}
        if self.options.get("priority"):
            body["priority"] = self.options["priority"]
        if self.immutable:
            body["immutable"] = True
        return body


def signature(varies: str | Signature, args: Any = (), kwargs: dict[str, Any] | None = None,
              app: AsyncQ | None = None, **options: Any) -> Signature:
    """Celery's ``signature('proj.add', args=(2, 2), countdown=10)``: a call by task
    name (or an existing signature, returned as it is)."""
    if isinstance(varies, Signature):
        return varies
    return Signature(varies, args, kwargs, app=app, **options)


@dataclass
class Entry:
    """One task of a canvas: its record is written; its message queued if ``push``."""

    task_id: str
    body: dict[str, Any]
    push: bool = True


def submit(app: AsyncQ, entries: list[Entry]) -> None:
    app.broker.enqueue_all([
        (e.task_id, e.body["task"], e.body["queue"], encode_body(e.body) if e.push else None,
         int(e.body.get("priority") or 0)) for e in entries])


class Chain:
    """``chain(a.s(1), b.s(), c.s())``: each step's result becomes the next one's first
    argument. Its result is the last step's, with ``.parent`` leading back."""

    def __init__(self, *steps: Signature):
        if not steps or not all(isinstance(s, Signature) for s in steps):
            raise TypeError("chain() takes task signatures, such as add.s(1, 2)")
        self.steps = list(steps)

    def __or__(self, other: Signature | Chain) -> Chain:
        return Chain(*self.steps, *(other.steps if isinstance(other, Chain) else [other]))

    def delay(self, *args: Any) -> AsyncResult:
        return self.apply_async(args)

    def apply(self, args: Any = ()) -> EagerResult:
        """Run the steps here, in turn (eager): the last step's result, or the first
        failed one's; ``.parent`` leads back."""
        result: EagerResult | None = None
        for step in self.steps:
            step_args = args if result is None else (result.result,)
            parent, result = result, step.apply(step_args)
            result.parent = parent  # type: ignore[attr-defined]
            if result.state != states.SUCCESS:
                break
        assert result is not None
        return result

    def apply_async(self, args: Any = ()) -> AsyncResult:
        app = self.steps[0].app
        if app.conf.task_always_eager:
            return self.apply(args)
        ids = [new_task_id() for _ in self.steps]
        rest = [step.body(task_id) for step, task_id in zip(self.steps[1:], ids[1:], strict=True)]
        first = self.steps[0].body(ids[0], args, chain=rest) if rest else self.steps[0].body(
            ids[0], args)
        submit(app, [Entry(ids[0], first), *(Entry(b["id"], b, push=False) for b in rest)])
        result = None
        for task_id, step in zip(ids, self.steps, strict=True):
            parent, result = result, AsyncResult(task_id, app=app, task_name=step.task)
            result.parent = parent  # type: ignore[attr-defined]
        assert result is not None
        return result


class Group:
    """``group(add.s(i, i) for i in range(10))``: run all at once; a GroupResult back."""

    def __init__(self, *steps: Any):
        if len(steps) == 1 and not isinstance(steps[0], Signature):
            steps = tuple(steps[0])
        if not all(isinstance(s, Signature) for s in steps):
            raise TypeError("group() takes task signatures, such as add.s(1, 2)")
        self.steps: list[Signature] = list(steps)

    def delay(self, *args: Any) -> GroupResult:
        return self.apply_async(args)

    def apply(self, args: Any = ()) -> GroupResult:
        """Run every task here (eager)."""
        return GroupResult([step.apply(args) for step in self.steps])

    def apply_async(self, args: Any = ()) -> GroupResult:
        app = self.steps[0].app if self.steps else None
        if app is not None and app.conf.task_always_eager:
            return self.apply(args)
        bodies = [step.body(new_task_id(), args) for step in self.steps]
        if app is not None:
            submit(app, [Entry(b["id"], b) for b in bodies])
        return GroupResult([AsyncResult(b["id"], app=app, task_name=b["task"]) for b in bodies])


class Chord:
    """``chord(header_group, body)``: the body runs once every header task succeeded,
    with the list of their results (in header order) as its first argument."""

    def __init__(self, header: Group | list[Signature], body: Signature):
        self.header = header if isinstance(header, Group) else Group(*header)
        if not isinstance(body, Signature) or not self.header.steps:
            raise TypeError("chord() takes a non-empty group and a task signature")
        self.body = body

    def __call__(self, *args: Any) -> AsyncResult:
        return self.apply_async(args)

    def delay(self, *args: Any) -> AsyncResult:
        return self.apply_async(args)

    def apply(self, args: Any = ()) -> EagerResult:
        """Run the header here, then the body with its results (eager)."""
        header = self.header.apply(args)
        failed = next((r for r in header if not r.successful()), None)
        result = failed if isinstance(failed, EagerResult) else \
            self.body.apply(([r.result for r in header],))
        result.parent = header  # type: ignore[attr-defined]
        return result

    def apply_async(self, args: Any = ()) -> AsyncResult:
        app = self.body.app
        if app.conf.task_always_eager:
            return self.apply(args)
        body_id = new_task_id()
        member_ids = [new_task_id() for _ in self.header.steps]
        callback = self.body.body(body_id, gather=member_ids)
        members = [step.body(task_id, args, chord=callback)
                   for step, task_id in zip(self.header.steps, member_ids, strict=True)]
        submit(app, [*(Entry(m["id"], m) for m in members), Entry(body_id, callback, False)])
        result = AsyncResult(body_id, app=app, task_name=self.body.task)
        result.parent = GroupResult(  # type: ignore[attr-defined]
            [AsyncResult(i, app=app) for i in member_ids])
        return result


# -- what a worker does after a step: a follow-up plan, stored with its result ----
_CHORD = Script.load("chord")  # count a chord member; the last one queues the body


def follow_ups(app: AsyncQ, message: Message, fields: Mapping[str, str]) -> list[Command]:
    """The plan that comes with storing a step's final state: the chain's next step,
    the chord's progress, or the failures they pass on. The broker stores it with
    the state and runs it before the ack, without reading it (see broker.py); so
    it is plain JSON: commands of text and numbers."""
    chain, chord = message.body.get("chain"), message.body.get("chord")
    if not chain and not chord:
        return []
    if fields.get("status") == states.SUCCESS:
        result = json.loads(fields["result"])
        plan = [_next_step(app, chain, result)] if chain else []
        if chord:
            plan.append(_count_member(app, chord, message.id))
        return plan
    if fields.get("status") == states.FAILURE:
        failure = {k: v for k, v in fields.items() if k != "traceback"}
        failure["exc_message"] = f"{fields.get('exc_message', '')} (in step {message.id})"
        rest = [*(chain or []), *([chord] if chord else [])]
        return [app.broker.end_command(step["id"], failure) for step in rest]
    return []


def _next_step(app: AsyncQ, chain: list[dict[str, Any]], result: Any) -> Command:
    """Queue a chain's next step, with the result as its first argument (unless immutable)."""
    step = dict(chain[0])
    if not step.get("immutable"):
        step["args"] = [result, *step["args"]]
    if chain[1:]:
        step["chain"] = chain[1:]
    return ("LPUSH", _queue_of(app, step), encode_body(step).decode())


def _count_member(app: AsyncQ, body: dict[str, Any], member_id: str) -> Command:
    """Count a chord member that succeeded; the one that completes the set queues the body."""
    members = app.keys.chord(body["queue"], body["id"])
    return _CHORD.command([members, _queue_of(app, body)],
                          [member_id, app.broker.record_ttl, len(body["gather"]),
                           encode_body(body).decode()])


def _queue_of(app: AsyncQ, body: dict[str, Any]) -> str:
    return app.keys.queue(body["queue"], int(body.get("priority") or 0))


def gathered_args(app: AsyncQ, message: Message) -> list[Any]:
    """A chord body's arguments: the members' results (in order) in front."""
    ids = message.body.get("gather")
    if not ids:
        return message.args
    results = [None if raw is None else loads(raw) for raw in app.broker.results(ids)]
    return message.args if message.body.get("immutable") else [results, *message.args]


chain = Chain
group = Group
chord = Chord

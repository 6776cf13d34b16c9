"""Signatures and the canvas: chain, group, chord, chunks, map and starmap, as in Celery.

A signature is a dict (``task``, ``args``, ``kwargs``, ``options``, ``subtask_type``,
``immutable``), so it travels as JSON inside another task's arguments and comes
back with ``maybe_signature``. Canvases nest as Celery's do: groups in chains
(a group followed by a step becomes a chord), chains in groups, chords whose
header holds chains, groups or chords, chains of chords, a chord's body a chain.

How a canvas travels: ``Workflow`` flattens it into plain tasks, each with its id
fixed and a PENDING record written before any message is queued. A task's record
also keeps what follows it (field ``then``, see ``workflow.py``): the tasks to
queue with its result, the chord it counts towards, the tasks that can no longer
run if it fails, and its ``link_error`` callbacks. Only the first tasks are
queued now; the broker starts the rest when their turn comes.
"""

from __future__ import annotations

import inspect
import itertools
import json
import time
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncq.broker import Submission
from asyncq.current import current_app
from asyncq.exceptions import EncodeError
from asyncq.keys import check_priority
from asyncq.message import as_timestamp, check_ahead, encode_body, new_task_id, too_deep
from asyncq.request import Request
from asyncq.result import AsyncResult, EagerResult, GroupResult
from asyncq.scripts import Command
from asyncq.workflow import dump_then

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.task import Task


class Signature(dict[str, Any]):
    """A task call to be made later (``add.s(2, 2)``): name, arguments and options."""

    subtask_types: dict[str, Any] = {}  # subtask_type -> class, for from_dict

    def __init__(self, task: Any = None, args: Any = None, kwargs: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: AsyncQ | None = None, **extra: Any):
        self._app = app
        if isinstance(task, dict):
            super().__init__(task)
            self["options"] = dict(self.get("options") or {})
        else:
            super().__init__(task=getattr(task, "name", task), args=tuple(args or ()),
                             kwargs=dict(kwargs or {}), options={**(options or {}), **extra},
                             subtask_type=subtask_type, immutable=immutable)
        check_priority(self.options.get("priority"))

    # -- the dict's fields, as attributes (Celery's names) -------------------
    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.get("args") or ())

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self["args"] = tuple(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.setdefault("kwargs", {})  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        return self.setdefault("options", {})  # type: ignore[no-any-return]

    @options.setter
    def options(self, value: dict[str, Any]) -> None:
        self["options"] = dict(value)

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def app(self) -> AsyncQ:
        return self._app or current_app()

    @property
    def name(self) -> str:
        return self.task

    @property
    def type(self) -> Task:
        """The registered task this signature calls."""
        return self.app.registered(self.task)

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}{'!' if self.immutable else ''}({call})"

    # -- calling it ----------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, in this process (as Celery does): its return value."""
        call_args, call_kwargs = self.merged(args, kwargs)
        return self.type(*call_args, **call_kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send it (extra ``args`` go in front, unless immutable): its result handle."""
        options = {k: v for k, v in options.items() if v is not None}
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        try:
            return Workflow(self.app).submit(self, args or (), kwargs or {}, options)
        except RecursionError:  # copying or building arguments some hundreds of levels deep
            raise EncodeError(too_deep("the arguments of the canvas")) from None

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run it here and now, links and all (Celery's ``Signature.apply``)."""
        call_args, call_kwargs = self.merged(args or (), kwargs or {})
        opts = {**self.options, **options}
        result = self.type.apply(call_args, call_kwargs, task_id=opts.get("task_id"))
        if result.successful():
            result.children = [maybe_signature(link, self._app).apply((result.result,))
                               for link in _listed(opts.get("link"))]
        else:
            for errback in _listed(opts.get("link_error")):
                call_errback_here(maybe_signature(errback, self._app), result)
        return result

    def merged(self, args: Any = (), kwargs: dict[str, Any] | None = None
               ) -> tuple[list[Any], dict[str, Any]]:
        """Partial arguments put together: extra args in front, unless immutable."""
        if self.immutable:
            return list(self.args), dict(self.kwargs)
        return [*(args or ()), *self.args], {**self.kwargs, **(kwargs or {})}

    # -- changing it (Celery's API) ------------------------------------------
    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy, with extra args in front, kwargs merged and options updated."""
        copy = type(self).from_dict(deepcopy(dict(self)), app=self._app)
        if args or kwargs:
            copy.args, copy.kwargs = self.merged(args, kwargs)
        immutable = options.pop("immutable", None)
        if immutable is not None:
            copy.immutable = immutable
        copy.options.update(options)
        return copy

    partial = clone

    def replace(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> Signature:
        """A copy with args, kwargs or options replaced (those that are not None)."""
        copy = self.clone()
        if args is not None:
            copy.args = args
        if kwargs is not None:
            copy.kwargs = kwargs
        if options is not None:
            copy.options = options
        return copy

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (``countdown``, ``queue``, ``priority``, ...); returns itself."""
        check_priority(options.get("priority"))
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result when it succeeds; returns the callback."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when this task ends without success; returns the errback."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """``link_error`` that returns this signature, for chaining calls."""
        self.link_error(errback)
        return self

    def freeze(self, _id: str | None = None) -> Any:
        """Fix the task's id now (``options['task_id']``); its result handle."""
        task_id = self.options.setdefault("task_id", _id or new_task_id())
        return AsyncResult(task_id, app=self._app, task_name=self.task)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return Chain(self, other, app=self._app)

    def __ior__(self, other: Any) -> Signature:  # type: ignore[override]
        return self.__or__(other)

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return type(self).from_dict(deepcopy(dict(self), memo), app=self._app)

    # -- what a worker gets --------------------------------------------------
    def route_name(self) -> str:
        """The task name that picks the queue (a map routes as the task it maps)."""
        return self.task

    def message_body(self, task_id: str) -> dict[str, Any]:
        """The message this signature becomes, without what a step before adds."""
        options = self.options
        if options.get("queue") and not self.app.conf.task_create_missing_queues:
            self.app.check_queue(options["queue"])
        queue = options.get("queue") or self.app.route(self.route_name())
        body: dict[str, Any] = {"id": task_id, "task": self.task, "args": list(self.args),
                                "kwargs": dict(self.kwargs), "queue": queue}
        if options.get("priority"):
            body["priority"] = int(options["priority"])
        if self.immutable:
            body["immutable"] = True
        expires = options.get("expires")
        if isinstance(expires, int | float):  # seconds from when it is queued
            body["expires_in"] = _seconds_ahead(expires, "expires")
        elif expires is not None:
            body["expires"] = check_ahead(as_timestamp(self.app.aware(expires)), "expires")
        return body

    def delay_option(self) -> dict[str, float]:
        """``countdown`` or ``eta`` as a canvas step keeps them until it is queued; at
        most ``MAX_DELAY`` (10 years) ahead, as for ``apply_async``."""
        options = self.options
        if options.get("countdown") is not None:
            return {"in": _seconds_ahead(options["countdown"], "countdown")}
        if options.get("eta") is not None:
            return {"at": check_ahead(as_timestamp(self.app.aware(options["eta"])), "eta")}
        return {}

    # -- from JSON -----------------------------------------------------------
    @classmethod
    def register_type(cls, kind: Any) -> Any:
        cls.subtask_types[kind.__name__.lower()] = kind
        return kind

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: AsyncQ | None = None) -> Signature:
        kind = Signature.subtask_types.get(d.get("subtask_type") or "")
        if kind is not None and kind is not cls:
            built: Signature = kind.from_dict(d, app=app)
            return built
        return cls(dict(d), app=app)


def signature(varies: Any, args: Any = None, kwargs: dict[str, Any] | None = None,
              app: AsyncQ | None = None, **options: Any) -> Signature:
    """Celery's ``signature('proj.add', args=(2, 2), countdown=10)``; a signature or
    its dict comes back as a signature (a copy, as in Celery)."""
    if isinstance(varies, dict):
        copy: Signature = maybe_signature(varies, app, clone=True)
        return copy
    return Signature(varies, args, kwargs, app=app, **options)


subtask = signature


def maybe_signature(d: Any, app: AsyncQ | None = None, clone: bool = False) -> Any:
    """A signature from its dict (as it comes back from JSON); None stays None."""
    if d is None:
        return None
    if isinstance(d, Signature):
        return d.clone() if clone else d
    if isinstance(d, dict):
        return Signature.from_dict(d, app=app)
    raise TypeError(f"not a signature: {d!r}")


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _signatures(tasks: Iterable[Any], app: AsyncQ | None) -> list[Signature]:
    sigs = [maybe_signature(t, app) for t in tasks]
    if not all(isinstance(s, Signature) for s in sigs):
        raise TypeError("a canvas takes signatures, such as add.s(1, 2)")
    return sigs


class _Several(Signature):
    """A canvas of signatures kept in ``kwargs['tasks']`` (a chain, a group): given as
    arguments or one iterable; one of the same kind inside is unrolled into it."""

    kind = ""

    def __init__(self, *tasks: Any, app: AsyncQ | None = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for task in _signatures(tasks, app):
            flat += task.tasks if isinstance(task, type(self)) else [task]
        super().__init__(f"asyncq.{self.kind}", (), {"tasks": flat}, options=options,
                         subtask_type=self.kind, app=app or (flat[0]._app if flat else None))

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: AsyncQ | None = None) -> Signature:
        return cls(*d["kwargs"]["tasks"], app=app, **(d.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]  # type: ignore[no-any-return]

    @property
    def app(self) -> AsyncQ:
        return self._app or (self.tasks[0].app if self.tasks else current_app())


@Signature.register_type
class Chain(_Several):
    """``chain(a.s(1), b.s(), c.s())``: each step's result becomes the next one's first
    argument. Steps may be any canvas; a group followed by a step becomes a chord."""

    kind = "chain"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) or "chain()"

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send it; an empty chain sends nothing (None), as in Celery."""
        if not self.tasks:
            return None
        return super().apply_async(args, kwargs, **options)

    def steps(self) -> list[Signature]:
        """The steps to run, a group followed by a step made a chord (as Celery does)."""
        out: list[Signature] = []
        for step in self.tasks:
            if out and isinstance(out[-1], Group):
                out[-1] = Chord(out[-1], step, app=self._app)
            else:
                out.append(step)
        return out

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the steps here, in turn: the last result, or the first that failed."""
        result: Any = None
        for step in self.steps():
            previous = result
            result = step.apply(args, kwargs) if previous is None else \
                step.apply((value_of(previous),))
            attach_parent(result, previous)
            if not successful(result):
                break
        return result


@Signature.register_type
class Group(_Several):
    """``group(add.s(i, i) for i in range(10))``: run all at once; a GroupResult back.
    A group inside a group joins it, as in Celery."""

    kind = "group"

    def __call__(self, *args: Any, **options: Any) -> Any:
        """``group(...)(2, countdown=1)``: extra args for every task, and options."""
        return self.apply_async(args, None, **options)

    def __len__(self) -> int:
        return len(self.tasks)

    def link(self, callback: Signature) -> Signature:
        """As in Celery: the callback follows the first task only (made immutable: it
        would otherwise get that one result); use a chord to follow them all."""
        if not self.tasks:
            raise TypeError("an empty group has no task to link to")
        return self.tasks[0].link(maybe_signature(callback, self._app).clone(immutable=True))

    def link_error(self, errback: Signature) -> Signature:
        """The errback is called for any task of the group that fails."""
        for task in self.tasks:
            task.link_error(maybe_signature(errback, self._app).clone(immutable=True))
        return errback

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``group | task`` is a chord, as in Celery."""
        if not isinstance(other, Signature):
            return NotImplemented
        return Chord(self, other, app=self._app)

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> GroupResult:
        return GroupResult(new_task_id(), [task.apply(args, kwargs) for task in self.tasks])


@Signature.register_type
class Chord(Signature):
    """``chord(header, body)``: the body runs once every header task succeeded, with
    the list of their results (in header order) as its first argument."""

    def __init__(self, header: Any, body: Any = None, app: AsyncQ | None = None,
                 **options: Any):
        group_ = header if isinstance(header, Group) else Group(header, app=app)
        super().__init__("asyncq.chord", (), {"header": group_, "body": maybe_signature(body, app)},
                         options=options, subtask_type="chord", app=app or group_._app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: AsyncQ | None = None) -> Signature:
        kwargs = d["kwargs"]
        header = kwargs["header"]  # a group's dict, or (as Celery writes it) a list
        return cls(maybe_signature(header, app) if isinstance(header, dict) else header,
                   kwargs.get("body"), app=app, **(d.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    @property
    def header(self) -> Group:
        return self.kwargs["header"]  # type: ignore[no-any-return]

    @property
    def body(self) -> Signature | None:
        return self.kwargs.get("body")

    @property
    def app(self) -> AsyncQ:
        return self._app or (self.body.app if self.body is not None else self.header.app)

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        """``chord(header)(body)`` or ``chord(header, body)()``: send it."""
        if body is not None:
            self.kwargs["body"] = body
        return self.apply_async((), {}, **options)

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``chord | task``: the task joins the body, as in Celery."""
        if not isinstance(other, Signature):
            return NotImplemented
        if isinstance(other, Group) or self.body is None:
            return Chain(self, other, app=self._app)
        return Chord(self.header, self.body | other, app=self._app, **self.options)

    def link(self, callback: Signature) -> Signature:
        return self.needs_body().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        return self.needs_body().link_error(errback)

    def needs_body(self) -> Signature:
        if self.body is None:
            raise TypeError("this chord has no body: chord(header, body) or chord(header)(body)")
        return self.body

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the header here, then the body with its results."""
        header = self.header.apply(args, kwargs)
        failed = next((r for r in header if not successful(r)), None)
        result = failed if failed is not None else \
            self.needs_body().apply((value_of(header),))
        attach_parent(result, header)
        return result


class _Map(Signature):
    """``add.map(items)`` / ``add.starmap(items)``: one task that calls the task on
    each item in turn, in the worker (not in parallel: that is ``chunks``/``group``)."""

    builtin = ""

    def __init__(self, task: Any, it: Iterable[Any] = (), app: AsyncQ | None = None,
                 **options: Any):
        if isinstance(task, dict) and "subtask_type" in task and "kwargs" in task \
                and task.get("task") == self.builtin:
            super().__init__(task, app=app)
            return
        super().__init__(self.builtin, (), {"task": signature(task, app=app), "it": list(it)},
                         options=options, subtask_type=type(self).__name__.lower(),
                         immutable=True, app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: AsyncQ | None = None) -> Signature:
        return cls(d["kwargs"]["task"], d["kwargs"]["it"], app=app, **(d.get("options") or {}))

    def route_name(self) -> str:
        return str(self.kwargs["task"]["task"])


@Signature.register_type
class XMap(_Map):
    builtin = "asyncq.map"


@Signature.register_type
class XStarmap(_Map):
    builtin = "asyncq.starmap"


@Signature.register_type
class Chunks(Signature):
    """``add.chunks(zip(xs, ys), 10)``: the items in parts of ``n``, each part one
    ``starmap`` task, the parts a group."""

    def __init__(self, task: Any, it: Iterable[Any] = (), n: int = 1,
                 app: AsyncQ | None = None, **options: Any):
        if int(n) < 1:
            raise ValueError(f"chunks() takes a chunk size of at least 1, not {n!r}")
        super().__init__("asyncq.chunks", (), {"task": signature(task, app=app),
                                              "it": [list(i) for i in it], "n": int(n)},
                         options=options, subtask_type="chunks", immutable=True, app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: AsyncQ | None = None) -> Signature:
        kwargs = d["kwargs"]
        return cls(kwargs["task"], kwargs["it"], kwargs["n"], app=app,
                   **(d.get("options") or {}))

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(**options)

    def group(self) -> Group:
        task, items, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = [items[i:i + n] for i in range(0, len(items), n)]
        return Group([XStarmap(task, part, app=self._app) for part in parts], app=self._app)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        return self.group().apply_async(None, None, **options)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        return self.group().apply()


# -- results, eagerly ---------------------------------------------------------------
def successful(result: Any) -> bool:
    return bool(result.successful())


def value_of(result: Any) -> Any:
    """What a step passes on: its return value, or a group's list of them."""
    if isinstance(result, GroupResult):
        return [value_of(r) for r in result]
    return result.result


def attach_parent(result: Any, parent: Any) -> None:
    """Give the first step of ``result``'s own line the parent ``parent``."""
    if parent is None:
        return
    while getattr(result, "parent", None) is not None:
        result = result.parent
    result.parent = parent


def takes_request(task: Task) -> bool:
    """Whether an errback is Celery's new style: ``(request, exc, traceback)``."""
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > 1 or any(p.kind == p.VAR_POSITIONAL for p in params)


def call_errback_here(errback: Signature, failed: EagerResult) -> None:
    """An eager run's ``link_error``: Celery's new style gets (request, exc, traceback),
    the old style the failed task's id."""
    if takes_request(errback.type):
        request = Request(id=failed.id, task=failed.task_name, is_eager=True)
        errback.apply((request, failed.result, failed.traceback))
    else:
        errback.apply((failed.id,))


# -- sending a canvas ---------------------------------------------------------------
@dataclass
class Node:
    """One task of a canvas: its message, and what follows it (``workflow.py``)."""

    body: dict[str, Any]
    ok: list[dict[str, Any]] = field(default_factory=list)
    next: list[str] = field(default_factory=list)
    err: list[dict[str, Any]] = field(default_factory=list)
    chord_body: bool = False
    in_chords: list[str] = field(default_factory=list)  # the bodies of chords it heads
    delay: dict[str, float] = field(default_factory=dict)  # its countdown ("in") or eta ("at")

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def due(self) -> float | None:
        """When it runs if queued now, with the canvas (None: at once)."""
        delay = self.delay
        return time.time() + delay["in"] if "in" in delay else delay.get("at")

    def then(self) -> dict[str, Any]:
        then: dict[str, Any] = {"ok": self.ok, "next": self.next, "err": self.err}
        if self.chord_body:
            then["body"] = 1
        if self.in_chords:
            then["in"] = self.in_chords
        return {k: v for k, v in then.items() if v}


@dataclass
class After:
    """What follows a piece of a canvas: actions on success, and who waits for it."""

    ok: list[dict[str, Any]] = field(default_factory=list)
    next: list[str] = field(default_factory=list)


@dataclass
class Built:
    entries: list[Node]  # the tasks that start it, given the incoming result
    exits: list[str]  # the tasks whose results are its result
    result: Any


def push(node: Node) -> dict[str, Any]:
    """The action that queues ``node`` with a step's result: at once, ``in`` seconds
    (its countdown) or ``at`` a time (its eta)."""
    return {"push": node.body, **node.delay}


class Workflow:
    """Turns a canvas into tasks (ids fixed, records written), then queues the first."""

    def __init__(self, app: AsyncQ):
        self.app = app
        self.nodes: list[Node] = []
        self.chords: list[tuple[str, list[Node]]] = []  # (chord id, its body's first tasks)

    def submit(self, sig: Signature, args: Any, kwargs: dict[str, Any],
               options: dict[str, Any]) -> Any:
        top = sig.clone()
        top.options.update(options)
        if type(top) is Signature and not top.options.get("link") \
                and not top.options.get("link_error"):
            call_args, call_kwargs = top.merged(args, kwargs)
            return self.app.send_task(top.task, call_args, call_kwargs, **_sending(top.options))
        built = self.build(top, After())
        for entry in built.entries:
            if not entry.body.get("immutable"):
                entry.body["args"] = [*args, *entry.body["args"]]
                entry.body["kwargs"] = {**entry.body["kwargs"], **kwargs}
            _expires_from_now(entry.body)
        starts = {id(entry) for entry in built.entries}
        # Every task's message is encoded now, the later steps' too, so that arguments
        # no worker could read are refused before anything is stored.
        messages = [encode_body(node.body) for node in self.nodes]
        self.app.broker.enqueue_all([Submission(
            node.id, node.body["task"], node.body["queue"],
            message if id(node) in starts else None,
            int(node.body.get("priority") or 0), dump_then(node.then()), node.due)
            for node, message in zip(self.nodes, messages, strict=True)],
            beside=self.chord_bodies())
        return built.result

    def chord_bodies(self) -> list[Command]:
        """The messages each chord queues when complete, written once beside its set."""
        keys, ttl = self.app.keys, self.app.broker.record_ttl
        commands: list[Command] = []
        for chord_id, entries in self.chords:
            for entry in entries:
                _expires_from_now(entry.body)
            queue = entries[0].body["queue"]
            messages = json.dumps([encode_body(entry.body).decode() for entry in entries])
            commands.append(("SET", keys.chord_bodies(queue, chord_id), messages, "EX", ttl))
        return commands

    def build(self, sig: Signature, after: After) -> Built:
        if isinstance(sig, Chord):
            return self.chord(sig, after)
        if isinstance(sig, Chain):
            return self.chain(sig, after)
        if isinstance(sig, Group):
            return self.group(sig, after)
        if isinstance(sig, Chunks):
            return self.group(sig.group(), after)
        return self.task(sig, after)

    def task(self, sig: Signature, after: After) -> Built:
        node = Node(sig.message_body(sig.options.get("task_id") or new_task_id()),
                    list(after.ok), list(after.next), delay=sig.delay_option())
        self.nodes.append(node)
        children = []
        for link in _listed(sig.options.get("link")):
            built = self.build(maybe_signature(link, self.app), After())
            node.ok += [push(entry) for entry in built.entries]
            node.next += [entry.id for entry in built.entries]
            children.append(built.result)
        node.err = [self.errback(e) for e in _listed(sig.options.get("link_error"))]
        result = AsyncResult(node.id, app=self.app, task_name=sig.task)
        result.children = children or None
        return Built([node], [node.id], result)

    def errback(self, errback: Any) -> dict[str, Any]:
        sig = maybe_signature(errback, self.app)
        if type(sig) is not Signature:
            raise TypeError(f"link_error takes a task signature, not {sig!r}")
        body = sig.message_body(sig.options.get("task_id") or new_task_id())
        body["errback"] = True
        encode_body(body)  # refused now if a worker could not read it
        return body

    def chain(self, chain_: Chain, after: After) -> Built:
        steps = [step.clone() for step in chain_.steps()]
        options = dict(chain_.options)
        for link in _listed(options.pop("link", None)):
            steps[-1].link(link)
        for errback in _listed(options.pop("link_error", None)):
            for step in steps:
                step.link_error(errback)
        if "task_id" in options:
            steps[-1].options["task_id"] = options.pop("task_id")
        steps[0].options.update(options)
        built: list[Built] = []
        for step in reversed(steps):
            piece = self.build(step, after)
            built.insert(0, piece)
            after = After([push(entry) for entry in piece.entries],
                          [entry.id for entry in piece.entries])
        for before, piece in itertools.pairwise(built):
            attach_parent(piece.result, before.result)
        return Built(built[0].entries, built[-1].exits, built[-1].result)

    def group(self, group_: Group, after: After) -> Built:
        if "link" in group_.options:
            raise TypeError("a group takes no link option: use a chord, or group.link() "
                            "for its first task, as in Celery")
        options = {k: v for k, v in group_.options.items() if k != "task_id"}
        pieces = [self.build(task.clone(**options), after) for task in group_.tasks]
        return Built([e for p in pieces for e in p.entries], [x for p in pieces for x in p.exits],
                     GroupResult(group_.options.get("task_id") or new_task_id(),
                                 [p.result for p in pieces], app=self.app))

    def chord(self, chord_: Chord, after: After) -> Built:
        """The body's first tasks wait, their messages written beside the chord's set;
        each header task that completes is counted, and the last one queues them."""
        body = self.build(chord_body(chord_), after)
        queues = {entry.body["queue"] for entry in body.entries}
        if len(queues) != 1:
            raise ValueError("a chord's body must start on one queue: its first tasks go to "
                             f"{sorted(queues)}")
        for entry in body.entries:
            entry.chord_body = True
        refuse_ignored_results(self.app, chord_.header)
        chord_id, first = body.entries[0].id, len(self.nodes)
        count: dict[str, Any] = {"queue": queues.pop(), "chord": chord_id, "lists": [
            [entry.body["queue"], int(entry.body.get("priority") or 0)]
            for entry in body.entries]}
        header = self.group(chord_.header, After([{"count": count}],
                                                 [entry.id for entry in body.entries]))
        count["size"] = len(header.exits)
        for node in self.nodes[first:]:  # a failure in the header calls the body's errbacks
            node.in_chords += [entry.id for entry in body.entries]
        for entry in body.entries:
            entry.body["gather"] = header.exits
        attach_parent(body.result, header.result)
        if not header.exits:  # an empty header: the body runs at once, with []
            return Built(body.entries, body.exits, body.result)
        self.chords.append((chord_id, body.entries))
        return Built(header.entries, body.exits, body.result)


def chord_body(chord_: Chord) -> Signature:
    """The body to build, with the chord's own options: its task_id, link and link_error
    are the body's (its result is the chord's), as in Celery."""
    body = chord_.needs_body().clone()
    target = body.tasks[-1] if isinstance(body, Chain) and body.tasks else body
    options = chord_.options
    if options.get("task_id"):
        target.options["task_id"] = options["task_id"]
    for link in _listed(options.get("link")):
        target.link(link)
    for errback in _listed(options.get("link_error")):
        body.link_error(errback)
    return body


def _seconds_ahead(seconds: Any, what: str) -> float:
    """A countdown or expiry in seconds, finite and at most ``MAX_DELAY`` (10 years)."""
    value = float(seconds)
    check_ahead(value, what, now=0.0)
    return value


def _expires_from_now(body: dict[str, Any]) -> None:
    """A message queued now: its expiry counted from now."""
    if "expires_in" in body:
        body["expires"] = time.time() + float(body.pop("expires_in"))


def refuse_ignored_results(app: AsyncQ, header: Group) -> None:
    """A chord's body gathers its members' stored results: a member that stores none
    would hand it None, so such a chord is refused when it is built."""
    for sig in header.tasks:
        if isinstance(sig, Chain):
            sig = sig.steps()[-1]
        if isinstance(sig, Group | Chord) or type(sig) is not Signature:
            continue
        task = app.tasks.get(sig.task)
        ignored = sig.options.get("ignore_result",
                                  task.ignore_result if task is not None else False)
        if ignored:
            raise ValueError(f"chord member {sig!r} has ignore_result set: a chord needs "
                             "its members' results (set ignore_result=False on the task)")


def _sending(options: dict[str, Any]) -> dict[str, Any]:
    """The options ``send_task`` takes."""
    names = ("task_id", "queue", "countdown", "eta", "expires", "priority")
    return {k: options[k] for k in names if options.get(k) is not None}


chain = Chain
group = Group
chord = Chord
chunks = Chunks
xmap = XMap
xstarmap = XStarmap

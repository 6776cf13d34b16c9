"""Task: a registered function and the ways to call it (inline, delay, apply_async)."""

from __future__ import annotations

import difflib
import inspect
import logging
import random
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from types import MethodType
from typing import TYPE_CHECKING, Any, NoReturn

from asyncq import canvas, signals, states
from asyncq.config import rate_per_second
from asyncq.exceptions import (
    ConfigurationError,
    Ignore,
    MaxRetriesExceededError,
    Reject,
    Retry,
)
from asyncq.message import as_timestamp, new_task_id
from asyncq.request import Request
from asyncq.result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.canvas import Signature

log = logging.getLogger("asyncq.task")


class FromConf:
    """A task attribute that follows an app setting unless the task class, the
    decorator or the instance sets it (Celery resolves these from the app's conf)."""

    def __init__(self, setting: str, convert: Callable[[Any], Any] = lambda value: value):
        self.setting = setting
        self.convert = convert

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, task: Task | None, owner: type) -> Any:
        if task is None:
            return self
        return self.convert(getattr(task.app.conf, self.setting))


# What ``@app.task(...)`` and a Task subclass may set, as in Celery. Those asyncq has no
# use for are accepted for Celery code and listed in docs/from-celery.md.
HONOURED_OPTIONS = {
    "name", "bind", "typing", "max_retries", "default_retry_delay", "autoretry_for",
    "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max", "retry_jitter",
    "ignore_result", "store_errors_even_if_ignored", "acks_late", "track_started",
    "time_limit", "soft_time_limit", "queue", "expires", "priority", "serializer", "throws",
    "rate_limit",
}
NOT_USED_OPTIONS = {
    "trail", "send_events", "resultrepr_maxsize", "abstract", "shadow_name", "routing_key",
    "exchange", "acks_on_failure_or_timeout", "reject_on_worker_lost", "compression",
    "pydantic", "pydantic_strict", "pydantic_context", "pydantic_dump_kwargs", "lazy",
    "request_stack",
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Accept Celery's ``task_`` spelling too (the tutorial writes ``task_acks_late=True``)."""
    known = HONOURED_OPTIONS | NOT_USED_OPTIONS
    checked = {}
    for key, value in options.items():
        name = key.removeprefix("task_") if key.removeprefix("task_") in known else key
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"unknown task option {key!r}{hint}")
        if name == "rate_limit" and value:
            rate_per_second(value)  # a malformed limit is an error now, not in the worker
        if name == "serializer" and value != "json":
            raise ConfigurationError(f"serializer={value!r}: asyncq speaks JSON only")
        checked[name] = value
    return checked


class Task:
    """Celery's Task: the decorator makes one per function; subclass it (``app.Task``,
    ``@app.task(base=...)``) for shared hooks, or define ``run`` for a class-based task
    registered with ``app.register_task``.

    Hooks the worker calls, as in Celery: ``before_start``, ``on_success``,
    ``on_retry``, ``on_failure`` and ``after_return``.
    """

    name: str = ""  # registered name; default "module.function"
    app: AsyncQ
    bind = False  # pass the task itself as the first argument (``self``)
    typing = True  # check the arguments against run's signature when the task is sent
    max_retries: int | None = 3  # tries after the first; None = no limit
    default_retry_delay: float = 180  # seconds before a retry that names no countdown
    autoretry_for: tuple[type[BaseException], ...] = ()  # exceptions that retry by themselves
    dont_autoretry_for: tuple[type[BaseException], ...] = ()  # ... except these
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False  # True or a base in seconds: exponential delays
    retry_backoff_max: float = 600  # cap of those delays, in seconds
    retry_jitter = True  # draw each delay at random between 0 and its cap
    throws: tuple[type[BaseException], ...] = ()  # expected errors: logged without traceback
    serializer = "json"  # the only one
    expires: float | datetime | None = None  # default expiry of each call
    priority: int | None = None  # default priority of each call
    ignore_result = FromConf("task_ignore_result", bool)
    store_errors_even_if_ignored = FromConf("task_store_errors_even_if_ignored", bool)
    acks_late = FromConf("task_acks_late", bool)
    track_started = FromConf("task_track_started", bool)
    queue = FromConf("task_default_queue", str)
    rate_limit = FromConf("task_default_rate_limit")  # '10/s', '100/m', '1000/h', a number
    time_limit = FromConf("task_time_limit", lambda value: float(value or 0))
    soft_time_limit = FromConf("task_soft_time_limit", lambda value: float(value or 0))

    def __init__(self, app: AsyncQ | None = None, fun: Callable[..., Any] | None = None,
                 **options: Any):
        if app is not None:
            self.app = app
        for option, value in check_options(options).items():
            if option in ("autoretry_for", "dont_autoretry_for", "throws"):
                value = tuple(value or ())
            if value is not None or option in ("max_retries", "expires", "priority"):
                setattr(self, option, value)
        if fun is not None:
            self.run = MethodType(fun, self) if self.bind else fun  # type: ignore[method-assign]
            self.__doc__ = fun.__doc__
            self.__wrapped__ = fun
            self.name = self.name or f"{self.module_name(fun.__module__)}.{fun.__qualname__}"
        if not self.name:
            self.name = f"{type(self).__module__}.{type(self).__qualname__}"
        self._requests: list[Request] = []

    def module_name(self, module: str) -> str:
        """A task defined in a script run as ``__main__`` is named after the app's
        ``main`` when it has one (Celery's rule), so a worker importing the module by
        its name registers the same name."""
        main = getattr(getattr(self, "app", None), "main", None)
        return main if module == "__main__" and main and main != "__main__" else module

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body: the decorated function, or a subclass's own ``run``."""
        raise NotImplementedError(f"task {self.name!r} defines no run()")

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def rate_interval(self) -> float | None:
        """Seconds between two runs under ``rate_limit`` across all workers; None when
        the task has no limit or the app turns limits off."""
        if self.app.conf.worker_disable_rate_limits or not self.rate_limit:
            return None
        per_second = rate_per_second(self.rate_limit)
        return 1 / per_second if per_second else None

    @property
    def request(self) -> Request:
        return self._requests[-1] if self._requests else Request()

    # -- hooks (override in a subclass) --------------------------------------
    def before_start(self, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        """Called in the worker just before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        """Called in the worker when the task returned."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                 einfo: Any) -> None:
        """Called in the worker when the task is to be retried."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: dict[str, Any],
                   einfo: Any) -> None:
        """Called in the worker when the task failed."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any,
                     kwargs: dict[str, Any], einfo: Any) -> None:
        """Called in the worker after the task ended, whatever the outcome."""

    # -- calling -------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body here and now, as Celery does; nothing touches Redis."""
        return self.run_with(Request(task=self.name, args=list(args), kwargs=kwargs),
                             args, kwargs)

    def run_with(self, request: Request, args: Any, kwargs: dict[str, Any]) -> Any:
        """Run with ``request`` as ``self.request``; the worker calls this."""
        self._requests.append(request)
        try:
            return self.run(*args, **kwargs)
        finally:
            self._requests.pop()

    def check_arguments(self, args: Any, kwargs: dict[str, Any] | None) -> None:
        """With ``typing`` on (Celery's default), a call that ``run`` could not take is a
        TypeError when the task is sent, not when a worker runs it."""
        if not self.typing:
            return
        try:
            signature = inspect.signature(self.run)
        except (TypeError, ValueError):
            return  # a builtin or C function: nothing to check against
        try:
            signature.bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                    task_id: str | None = None, queue: str | None = None,
                    countdown: float | None = None, eta: datetime | float | None = None,
                    expires: datetime | float | None = None,
                    priority: int | None = None, link: Any = None,
                    link_error: Any = None) -> AsyncResult:
        """Queue the task: its PENDING record is written, then its message pushed.

        ``countdown`` (seconds) or ``eta`` (a datetime or Unix time) hold it in Redis
        until then; ``expires`` (seconds from now, a datetime or Unix time) drops it,
        REVOKED, if no worker has started it by then. ``priority`` 0-9: higher runs
        first within its queue. ``link`` and ``link_error``: signatures (or lists of
        them) to run with its result when it succeeds, or when it does not.
        """
        self.check_arguments(args, kwargs)
        if link is not None or link_error is not None:
            options = {"task_id": task_id, "queue": queue, "countdown": countdown, "eta": eta,
                       "expires": expires if expires is not None else self.expires,
                       "priority": priority if priority is not None else self.priority,
                       "link": link, "link_error": link_error}
            return self.signature(args, kwargs).apply_async(  # type: ignore[no-any-return]
                **{k: v for k, v in options.items() if v is not None})
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=task_id)
        return self.app.send_task(self.name, args, kwargs, task_id=task_id,
                                  queue=queue,
                                  countdown=countdown, eta=eta,
                                  expires=expires if expires is not None else self.expires,
                                  priority=priority if priority is not None else self.priority)

    # -- eager: in this process, as Celery users test their tasks ------------------
    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, *,
              task_id: str | None = None, throw: bool | None = None, retries: int = 0,
              **options: Any) -> EagerResult:
        """Run the task here and now as a worker would (hooks, signals, retries at once)
        and return an EagerResult; nothing touches Redis. ``throw`` (default: the
        setting ``task_eager_propagates``) re-raises the task's exception."""
        task_id = task_id or new_task_id()
        args, kwargs = list(args or ()), dict(kwargs or {})
        throw = self.app.conf.task_eager_propagates if throw is None else throw
        while True:
            request = Request(id=task_id, task=self.name, args=args, kwargs=kwargs,
                              retries=retries, is_eager=True, called_directly=False)
            outcome = self._run_eagerly(request)
            if outcome.state != states.RETRY:
                break
            retries += 1
        if throw and isinstance(outcome.result, BaseException) and \
                outcome.state == states.FAILURE:
            raise outcome.result
        return outcome

    def _run_eagerly(self, request: Request) -> EagerResult:
        """One try: state SUCCESS, FAILURE, IGNORED, or RETRY when another try is due."""
        task_id, args, kwargs = str(request.id), request.args, request.kwargs
        signals.task_prerun.send(sender=self, task_id=task_id, task=self, args=args,
                                 kwargs=kwargs)
        state, value, einfo = states.SUCCESS, None, None
        try:
            self.before_start(task_id, args, kwargs)
            value = self.run_with(request, args, kwargs)
        except Ignore:
            state = states.IGNORED
        except Reject as rejected:
            state, value = states.REJECTED, rejected
        except Retry as retry:
            state, value = states.RETRY, retry
        except Exception as exc:
            einfo = traceback.format_exc()
            if self.autoretries(exc) and self.next_try(request.retries, exc) is not None:
                state, value = states.RETRY, exc
            else:
                state, value = states.FAILURE, exc
        self.after_run(request, state, value, einfo)
        return EagerResult(task_id, value, state, einfo, self.name)

    def after_run(self, request: Request, state: str, value: Any, einfo: str | None) -> None:
        """What follows a run, once its state is stored (worker) or known (eager), as in
        Celery: the task's hooks, then the signals. A hook that raises is logged; the
        task's outcome stands."""
        task_id, args, kwargs = str(request.id), request.args, request.kwargs
        try:
            if state == states.SUCCESS:
                self.on_success(value, task_id, args, kwargs)
            elif state == states.RETRY:
                self.on_retry(value, task_id, args, kwargs, einfo)
            elif state == states.FAILURE:
                self.on_failure(value, task_id, args, kwargs, einfo)
            if state != states.RETRY:
                self.after_return(state, value, task_id, args, kwargs, einfo)
        except Exception:
            log.exception("a hook of task %s raised", self.name)
        if state == states.SUCCESS:
            signals.task_success.send(sender=self, result=value)
        elif state == states.RETRY:
            signals.task_retry.send(sender=self, request=request, reason=value, einfo=einfo)
        elif state == states.FAILURE:
            signals.task_failure.send(sender=self, task_id=task_id, exception=value, args=args,
                                      kwargs=kwargs, traceback=einfo, einfo=einfo)
        signals.task_postrun.send(sender=self, task_id=task_id, task=self, args=args,
                                  kwargs=kwargs, retval=value, state=state)

    # -- retries ------------------------------------------------------------
    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              eta: datetime | float | None = None, max_retries: int | None = None) -> NoReturn:
        """Ask for another try: raises ``Retry``, which the worker turns into a schedule.

        With no tries left, raises ``exc`` (or MaxRetriesExceededError): the task fails.
        Use as ``raise self.retry(exc=exc, countdown=5)``.
        """
        if self.request.called_directly:
            raise exc or MaxRetriesExceededError("retry() of a task called directly")
        when = self.next_try(self.request.retries, exc, countdown, eta, max_retries)
        if when is None:
            raise exc or MaxRetriesExceededError(
                f"{self.name}[{self.request.id}] gave up after {self.request.retries} retries")
        raise Retry(exc, when, when - time.time())

    def next_try(self, retries: int, exc: BaseException | None = None,
                 countdown: float | None = None, eta: datetime | float | None = None,
                 max_retries: int | None = None) -> float | None:
        """When the next try is due (Unix time), or None when no tries are left."""
        if exc is not None and self.autoretries(exc):  # Celery: retry(exc, **retry_kwargs)
            countdown = self.retry_kwargs.get("countdown", countdown)
            max_retries = self.retry_kwargs.get("max_retries", max_retries)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and retries >= limit:
            return None
        if eta is not None:
            return as_timestamp(eta)
        if countdown is None:
            countdown = self.backoff(retries)
        return time.time() + countdown

    def backoff(self, retries: int) -> float:
        """The delay before try ``retries + 1``: fixed, or exponential, capped, jittered."""
        base = self.retry_backoff
        if not base:
            return float(self.default_retry_delay)
        delay = min(float(self.retry_backoff_max), float(base) * 2 ** retries)
        return random.uniform(0, delay) if self.retry_jitter else delay

    def autoretries(self, exc: BaseException) -> bool:
        """Whether ``exc`` retries the task by itself (``autoretry_for``, less
        ``dont_autoretry_for``)."""
        return isinstance(exc, tuple(self.autoretry_for or ())) and \
            not isinstance(exc, tuple(self.dont_autoretry_for or ()))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with these arguments, to send later or in a canvas."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it ignores the previous step's result."""
        return self.signature(args, kwargs, immutable=True)

    def signature(self, args: Any = (), kwargs: dict[str, Any] | None = None,
                  immutable: bool = False, **options: Any) -> Signature:
        return canvas.Signature(self.name, args, kwargs, app=self.app, immutable=immutable,
                                **options)

    subtask = signature

    def chunks(self, it: Any, n: int) -> Signature:
        """``add.chunks(zip(xs, ys), 10)``: the items in parts of n, a task per part."""
        return canvas.Chunks(self.s(), it, n, app=self.app)

    def map(self, it: Any) -> Signature:
        """``xsum.map([[1, 2], [3]])``: one task calling this one on each item."""
        return canvas.XMap(self.s(), it, app=self.app)

    def starmap(self, it: Any) -> Signature:
        """``add.starmap([(1, 2), (3, 4)])``: as map, each item spread as arguments."""
        return canvas.XStarmap(self.s(), it, app=self.app)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> None:
        """Set a custom state such as PROGRESS; meta is kept in its own field."""
        task_id = task_id or self.request.id
        if task_id is None or state is None:
            return  # called inline: there is no record to update
        self.app.broker.update_state(task_id, state, meta)

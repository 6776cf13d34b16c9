"""Task: a registered function and the ways to call it (inline, delay, apply_async)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from asyncq import canvas
from asyncq.exceptions import ConfigurationError, MaxRetriesExceededError, Retry
from asyncq.message import as_timestamp
from asyncq.result import AsyncResult

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.canvas import Signature

# Options ``@app.task(...)`` accepts; None means "use the app's setting".
TASK_OPTIONS: dict[str, Any] = {
    "name": None,  # registered name; default "module.function"
    "bind": False,  # pass the task itself as the first argument (``self``)
    "acks_late": None,  # default: the app's task_acks_late
    "ignore_result": None,  # default: the app's task_ignore_result
    "track_started": None,  # default: the app's task_track_started
    "queue": None,  # default: the app's task_default_queue
    "max_retries": 3,  # tries after the first; None = no limit
    "default_retry_delay": 180,  # seconds before a retry that names no countdown
    "autoretry_for": (),  # exception classes that retry the task by themselves
    "retry_backoff": False,  # True or a base in seconds: exponential delays for autoretry
    "retry_backoff_max": 600,  # cap of those delays, in seconds
    "retry_jitter": True,  # draw each delay at random between 0 and its cap
    "time_limit": None,  # seconds; default: the app's task_time_limit
    "soft_time_limit": None,  # seconds; default: the app's task_soft_time_limit
}


@dataclass
class Request:
    """What a bound task sees as ``self.request`` while it runs."""

    id: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    called_directly: bool = True


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Accept Celery's ``task_`` spelling too (the tutorial writes ``task_acks_late=True``)."""
    checked = {}
    for key, value in options.items():
        name = key.removeprefix("task_") if key.removeprefix("task_") in TASK_OPTIONS else key
        if name not in TASK_OPTIONS:
            raise ConfigurationError(f"unknown task option {key!r}; known: {sorted(TASK_OPTIONS)}")
        checked[name] = value
    return checked


class Task:
    """A function registered with an app; call it inline, or queue it with ``delay``."""

    def __init__(self, app: AsyncQ, fun: Callable[..., Any], **options: Any):
        self.app = app
        self.run = fun
        self.options = {**TASK_OPTIONS, **check_options(options)}
        self.name: str = self.options["name"] or f"{fun.__module__}.{fun.__qualname__}"
        self.bind: bool = bool(self.options["bind"])
        self._requests: list[Request] = []
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def _setting(self, option: str, setting: str) -> Any:
        value = self.options[option]
        return getattr(self.app.conf, setting) if value is None else value

    @property
    def acks_late(self) -> bool:
        return bool(self._setting("acks_late", "task_acks_late"))

    @property
    def ignore_result(self) -> bool:
        return bool(self._setting("ignore_result", "task_ignore_result"))

    @property
    def track_started(self) -> bool:
        return bool(self._setting("track_started", "task_track_started"))

    @property
    def queue(self) -> str:
        return str(self._setting("queue", "task_default_queue"))

    @property
    def time_limit(self) -> float:
        return float(self._setting("time_limit", "task_time_limit") or 0)

    @property
    def soft_time_limit(self) -> float:
        return float(self._setting("soft_time_limit", "task_soft_time_limit") or 0)

    @property
    def request(self) -> Request:
        return self._requests[-1] if self._requests else Request()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now, as Celery does; nothing touches Redis."""
        return self.run_with(Request(args=list(args), kwargs=kwargs), args, kwargs)

    def run_with(self, request: Request, args: Any, kwargs: dict[str, Any]) -> Any:
        """Run with ``request`` as ``self.request``; the worker calls this."""
        self._requests.append(request)
        try:
            return self.run(self, *args, **kwargs) if self.bind else self.run(*args, **kwargs)
        finally:
            self._requests.pop()

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                    task_id: str | None = None, queue: str | None = None,
                    countdown: float | None = None, eta: datetime | float | None = None,
                    expires: datetime | float | None = None,
                    priority: int | None = None) -> AsyncResult:
        """Queue the task; the id is recorded PENDING in the same step.

        ``countdown`` (seconds) or ``eta`` (a datetime or Unix time) hold it in Redis
        until then; ``expires`` (seconds from now, a datetime or Unix time) drops it,
        REVOKED, if no worker has started it by then. ``priority`` 0-9: higher runs
        first within its queue.
        """
        return self.app.send_task(self.name, args, kwargs, task_id=task_id, queue=queue,
                                  countdown=countdown, eta=eta, expires=expires,
                                  priority=priority)

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
        limit = self.options["max_retries"] if max_retries is None else max_retries
        if limit is not None and retries >= limit:
            return None
        if eta is not None:
            return as_timestamp(eta)
        if countdown is None:
            countdown = self.backoff(retries)
        return time.time() + countdown

    def backoff(self, retries: int) -> float:
        """The delay before try ``retries + 1``: fixed, or exponential, capped, jittered."""
        base = self.options["retry_backoff"]
        if not base:
            return float(self.options["default_retry_delay"])
        delay = min(float(self.options["retry_backoff_max"]), float(base) * 2 ** retries)
        return random.uniform(0, delay) if self.options["retry_jitter"] else delay

    @property
    def autoretry_for(self) -> tuple[type[BaseException], ...]:
        return tuple(self.options["autoretry_for"] or ())

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

    def AsyncResult(self, task_id: str) -> AsyncResult:  # Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> None:
        """Set a custom state such as PROGRESS; meta is kept in its own field."""
        task_id = task_id or self.request.id
        if task_id is None or state is None:
            return  # called inline: there is no record to update
        self.app.broker.update_state(task_id, state, meta)

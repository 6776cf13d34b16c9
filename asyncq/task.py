"""Task: a registered function and the ways to call it (inline, delay, apply_async)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncq.exceptions import ConfigurationError
from asyncq.result import AsyncResult

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

# Options ``@app.task(...)`` accepts; None means "use the app's setting".
TASK_OPTIONS: dict[str, Any] = {
    "name": None,  # registered name; default "module.function"
    "bind": False,  # pass the task itself as the first argument (``self``)
    "acks_late": None,  # default: the app's task_acks_late
    "ignore_result": None,  # default: the app's task_ignore_result
    "track_started": None,  # default: the app's task_track_started
    "queue": None,  # default: the app's task_default_queue
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
                    task_id: str | None = None, queue: str | None = None) -> AsyncResult:
        """Queue the task; the id is recorded PENDING in the same step."""
        return self.app.send_task(self.name, args, kwargs, task_id=task_id,
                                  queue=queue or self.queue)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> None:
        """Set a custom state such as PROGRESS; meta is kept in its own field."""
        task_id = task_id or self.request.id
        if task_id is None or state is None:
            return  # called inline: there is no record to update
        self.app.broker.update_state(task_id, state, meta)


def new_task_id() -> str:
    return str(uuid.uuid4())

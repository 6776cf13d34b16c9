"""The application object: settings, the task registry and the Redis connection."""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, overload

import redis
from redis.cluster import RedisCluster

from asyncq.broker import Broker
from asyncq.config import Settings
from asyncq.connection import redis_from_url
from asyncq.current import set_current_app
from asyncq.exceptions import ConfigurationError, NotRegistered
from asyncq.keys import PRIORITIES, Keys
from asyncq.message import MAX_ID_BYTES, as_timestamp, encode_message, new_task_id
from asyncq.result import AsyncResult
from asyncq.task import Task

F = TypeVar("F", bound=Callable[..., Any])


class AsyncQ:
    """A task queue app. ``Celery`` is the same class.

    ``AsyncQ("proj", broker="redis://localhost:6379/0", task_acks_late=True)``
    """

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, **settings: Any):
        self.main = main or "__main__"
        self.conf = Settings()
        self.conf.update(settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        self.tasks: dict[str, Task] = {}
        self._broker: Broker | None = None
        set_current_app(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.main}:{id(self):#x}>"

    # -- tasks --------------------------------------------------------------
    @overload
    def task(self, fun: F) -> Task: ...
    @overload
    def task(self, fun: None = None, **options: Any) -> Callable[[F], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None,
             **options: Any) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""

        def register(function: Callable[..., Any]) -> Task:
            task = Task(self, function, **options)
            self.tasks[task.name] = task
            return task

        return register(fun) if fun is not None else register

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                  task_id: str | None = None, queue: str | None = None,
                  countdown: float | None = None, eta: datetime | float | None = None,
                  expires: datetime | float | None = None, priority: int | None = None
                  ) -> AsyncResult:
        """Queue a task by name; it need not be registered here, only on the workers."""
        if priority is not None and (not isinstance(priority, int) or priority not in PRIORITIES):
            raise ValueError(f"priority must be a whole number from 0 to 9, not {priority!r}")
        if countdown is not None and not math.isfinite(countdown):
            raise ValueError(f"countdown must be a finite number of seconds, not {countdown!r}")
        if task_id is not None and not 0 < len(task_id.encode()) <= MAX_ID_BYTES:
            raise ValueError(f"task_id must be 1 to {MAX_ID_BYTES} bytes long")
        fresh = task_id is not None  # an id given by the caller may have an old record
        task_id = task_id or new_task_id()
        queue = queue or self.route(name)
        due = time.time() + countdown if countdown is not None else (
            as_timestamp(eta) if eta is not None else None)
        deadline = (as_timestamp(time.time() + expires) if isinstance(expires, int | float)
                    else as_timestamp(expires) if expires is not None else None)
        message = encode_message(task_id, name, list(args or ()), dict(kwargs or {}), queue,
                                 eta=due, expires=deadline, priority=priority or None)
        self.broker.enqueue(task_id, name, queue, message, eta=due, priority=priority or 0,
                            fresh=fresh)
        return AsyncResult(task_id, app=self, task_name=name)

    def route(self, name: str) -> str:
        """The queue for a task: ``task_routes`` (by name or glob), else the task's own
        ``queue`` option, else ``task_default_queue``."""
        for pattern, target in self.conf.task_routes.items():
            if fnmatch.fnmatchcase(name, pattern):
                return target["queue"] if isinstance(target, dict) else str(target)
        task = self.tasks.get(name)
        return task.queue if task else self.conf.task_default_queue

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self)

    def registered(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"task {name!r} is not registered") from None

    # -- Redis --------------------------------------------------------------
    @property
    def keys(self) -> Keys:
        return Keys(self.conf.key_prefix)

    @property
    def broker(self) -> Broker:
        """The Broker, connected on first use (and again after a fork)."""
        if self._broker is None:
            events = self.conf.events_max_length if self.conf.worker_send_task_events else 0
            self._broker = Broker(self.connect(), self.keys, self.conf.task_record_ttl,
                                  self.conf.result_expires, events)
        return self._broker

    def connect(self) -> redis.Redis | RedisCluster:
        """A client for the broker URL: redis://, redis+sentinel:// or redis+cluster://."""
        url = self.conf.broker
        backend = self.conf.result_backend
        if backend and backend != url:
            raise ConfigurationError(
                f"backend {backend!r} differs from broker {url!r}: asyncq stores results "
                "beside the queues, so that queueing and recording are one step")
        return redis_from_url(url, health_check_interval=30)

    def reset_connection(self) -> None:
        """Drop the connection; a forked child calls this to get its own."""
        self._broker = None


Celery = AsyncQ

"""The application object: settings, the task registry and the Redis connection."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar, overload
from zoneinfo import ZoneInfo

import redis
from redis.cluster import RedisCluster

from asyncq.broker import Broker
from asyncq.builtins import BUILTIN_PREFIX, add_builtin_tasks
from asyncq.celery_settings import CELERY_SETTINGS, OLD_NAMES
from asyncq.config import Settings
from asyncq.connection import describe_url, redis_from_url, same_server
from asyncq.current import all_apps, current_app, set_current_app
from asyncq.exceptions import ConfigurationError, NotRegistered, QueueNotFound
from asyncq.keys import Keys, check_priority
from asyncq.message import (
    MAX_ID_BYTES,
    as_timestamp,
    check_ahead,
    encode_message,
    new_task_id,
)
from asyncq.result import AsyncResult
from asyncq.signals import Signal, after_task_publish, before_task_publish, import_modules
from asyncq.task import Task as BaseTask

F = TypeVar("F", bound=Callable[..., Any])

# Functions decorated with @shared_task: (function, options), registered with every app.
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []


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
        self.tasks: dict[str, BaseTask] = {}
        self._broker: Broker | None = None
        self._task_class: type[BaseTask] | None = None
        self._autodiscover: list[tuple[Callable[[], Iterable[str]], str]] = []
        self.configured = self.finalized = False
        # Celery's app signals: sender is the app.
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        set_current_app(self)
        add_builtin_tasks(self)
        for function, options in _shared_tasks:
            self.task(**options)(function)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.main}:{id(self):#x}>"

    # -- tasks --------------------------------------------------------------
    @overload
    def task(self, fun: F) -> BaseTask: ...
    @overload
    def task(self, fun: None = None, **options: Any) -> Callable[[F], BaseTask]: ...

    def task(self, fun: Callable[..., Any] | None = None,
             **options: Any) -> BaseTask | Callable[[Callable[..., Any]], BaseTask]:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""

        base: type[BaseTask] = options.pop("base", None) or self.Task

        def register(function: Callable[..., Any]) -> BaseTask:
            return self.register_task(base(self, function, **options))

        return register(fun) if fun is not None else register

    @property
    def Task(self) -> type[BaseTask]:
        """The base class of this app's tasks (Celery's ``app.Task``): subclass it for
        hooks shared by several tasks, then ``@app.task(base=MyTask)``."""
        if self._task_class is None:
            self._task_class = type("Task", (BaseTask,), {"app": self, "__module__": __name__})
        return self._task_class

    def task_names(self, builtins: bool = False) -> list[str]:
        """The registered task names, sorted; asyncq's own (``asyncq.map``, ...) left
        out unless asked for, as Celery leaves out ``celery.*``."""
        return sorted(name for name in self.tasks
                      if builtins or not name.startswith(BUILTIN_PREFIX))

    def register_task(self, task: BaseTask | type[BaseTask]) -> BaseTask:
        """Register a task instance (a class-based task: a Task subclass with ``run``)."""
        if isinstance(task, type):
            task = task()
        if "app" not in vars(task) and not hasattr(type(task), "app"):
            task.app = self
        self.tasks[task.name] = task
        return task

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                  task_id: str | None = None, queue: str | None = None,
                  countdown: float | None = None, eta: datetime | float | None = None,
                  expires: datetime | float | None = None, priority: int | None = None
                  ) -> AsyncResult:
        """Queue a task by name; it need not be registered here, only on the workers.

        ValueError for a countdown, eta or expires more than ``MAX_DELAY`` (10 years)
        ahead; EncodeError for arguments that are not JSON or nest deeper than
        ``MAX_NESTING``; QueueNotFound for a queue the app does not know, when
        ``task_create_missing_queues`` is off."""
        check_priority(priority)
        if task_id is not None and not 0 < len(task_id.encode()) <= MAX_ID_BYTES:
            raise ValueError(f"task_id must be 1 to {MAX_ID_BYTES} bytes long")
        fresh = task_id is not None  # an id given by the caller may have an old record
        task_id = task_id or new_task_id()
        if queue and not self.conf.task_create_missing_queues:
            self.check_queue(queue)
        queue = queue or self.route(name)
        due, deadline = self.due_and_deadline(countdown, eta, expires)
        message = encode_message(task_id, name, list(args or ()), dict(kwargs or {}), queue,
                                 eta=due, expires=deadline, priority=priority or None)
        publishing = bool(before_task_publish.receivers or after_task_publish.receivers)
        if publishing:  # Celery's publish signals, with its argument names
            headers = {"id": task_id, "task": name, "eta": due, "expires": deadline}
            before_task_publish.send(sender=name, body=message, exchange="", routing_key=queue,
                                     headers=headers, properties={}, declare=[],
                                     retry_policy=None)
        self.broker.enqueue(task_id, name, queue, message, eta=due, priority=priority or 0,
                            fresh=fresh)
        if publishing:
            after_task_publish.send(sender=name, body=message, exchange="", routing_key=queue,
                                    headers=headers)
        return AsyncResult(task_id, app=self, task_name=name)

    def due_and_deadline(self, countdown: float | None, eta: datetime | float | None,
                         expires: datetime | float | None) -> tuple[float | None, float | None]:
        """When a task is due (None: now) and when it expires (None: never), as Unix
        seconds, each at most ``MAX_DELAY`` (10 years) ahead."""
        now = time.time()
        if countdown is not None and not math.isfinite(countdown):
            raise ValueError(f"countdown must be a finite number of seconds, not {countdown!r}")
        due = now + countdown if countdown is not None else (
            as_timestamp(self.aware(eta)) if eta is not None else None)
        if due is not None:
            check_ahead(due, "countdown" if countdown is not None else "eta", now)
        deadline = (as_timestamp(now + expires) if isinstance(expires, int | float)
                    else as_timestamp(self.aware(expires)) if expires is not None else None)
        if deadline is not None:
            check_ahead(deadline, "expires", now)
        return due, deadline

    # -- queues -------------------------------------------------------------
    def known_queues(self) -> set[str]:
        """The queues this app's configuration names: ``task_default_queue``,
        ``task_queues``, the targets of ``task_routes``, its tasks' ``queue`` options
        and the queues of its ``beat_schedule`` entries."""
        names = {self.conf.task_default_queue, *self.conf.task_queues}
        for target in self.conf.task_routes.values():
            names.add(str(target.get("queue") if isinstance(target, dict) else target))
        names.update(task.queue for task in self.tasks.values())
        for entry in self.conf.beat_schedule.values():
            options = entry.get("options") if isinstance(entry, dict) else None
            if isinstance(options, dict) and options.get("queue"):
                names.add(str(options["queue"]))
        return names

    def queue_known(self, name: str) -> bool:
        """Whether ``name`` is one of ``known_queues``, or a queue that a registered
        worker consumes (``worker -Q``; read from Redis only when it is not the first)."""
        if name in self.known_queues():
            return True
        from asyncq.recovery import registered_workers  # the worker registry's reader

        workers = registered_workers(self.broker.client, self.keys)
        return any(name in entry.queues for entry in workers.values())

    def check_queue(self, name: str) -> None:
        """QueueNotFound unless ``queue_known(name)``, as Celery raises with
        ``task_create_missing_queues`` off."""
        if not self.queue_known(name):
            raise QueueNotFound(
                f"queue {name!r} is not one of this app's queues "
                f"({', '.join(sorted(self.known_queues()))}), nor consumed by a worker: "
                "name it in task_queues or task_routes")

    def aware(self, when: datetime | float) -> datetime | float:
        """A naive datetime is read in the app's ``timezone`` (UTC unless set)."""
        if isinstance(when, datetime) and when.tzinfo is None:
            return when.replace(tzinfo=ZoneInfo(self.conf.timezone))
        return when

    # -- configuration, as Celery loads it -------------------------------------
    def config_from_object(self, obj: object | str, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Settings from an object or a module (or its name: ``'celeryconfig'``,
        ``'proj.settings:Config'``). With ``namespace='CELERY'`` only names starting
        ``CELERY_`` count (``CELERY_BROKER_URL`` sets broker_url), as with Django."""
        if isinstance(obj, str):
            try:
                obj = symbol_by_name(obj)
            except ImportError:
                if silent:
                    return
                raise
        self.conf.update(settings_in(obj, namespace))

    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] = (),
                           related_name: str = "tasks", force: bool = False) -> None:
        """Import ``<package>.tasks`` for each package when the worker starts (now, with
        ``force``); a package without that module is skipped, as in Celery."""
        listed = packages if callable(packages) else (lambda: list(packages or ()))
        self._autodiscover.append((listed, related_name))
        if force:
            self._discover(listed, related_name)

    def _discover(self, packages: Callable[[], Iterable[str]], related_name: str) -> None:
        for package in packages():
            name = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name not in (name, package):
                    raise  # the tasks module exists but imports something missing

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Celery's ``add_periodic_task(10.0, add.s(2, 2), name='add every 10')``: an
        entry of ``beat_schedule`` (usually from an ``on_after_configure`` receiver)."""
        task = getattr(sig, "task", None) or getattr(sig, "name", None) or str(sig)
        call_args = list(getattr(sig, "args", None) or args)
        call_kwargs = dict(getattr(sig, "kwargs", None) or kwargs or {})
        key = name or f"{task}({', '.join(map(repr, call_args))})"
        self.conf.beat_schedule[key] = {
            "task": task, "schedule": schedule, "args": call_args, "kwargs": call_kwargs,
            "options": {**dict(getattr(sig, "options", None) or {}), **options}}
        return key

    def import_task_modules(self) -> None:
        """What a worker imports at start-up: ``imports``, ``include``, then the
        autodiscovered packages (Celery's loader.import_default_modules)."""
        import_modules.send(sender=self)
        for name in (*self.conf.imports, *self.conf.include):
            importlib.import_module(name)
        for packages, related_name in self._autodiscover:
            self._discover(packages, related_name)
        self.finalize()

    def finalize(self) -> None:
        """Fire the app signals once each, as Celery does when it first uses the app:
        on_configure, on_after_configure (a place for ``add_periodic_task``), and
        on_after_finalize."""
        if not self.configured:
            self.configured = True
            self.on_configure.send(sender=self)
            self.on_after_configure.send(sender=self, source=self.conf)
        if not self.finalized:
            self.finalized = True
            self.on_after_finalize.send(sender=self)

    # -- the command line, from the app's own module (python proj.py worker) ----------
    def start(self, argv: list[str] | None = None) -> NoReturn:
        """Celery's ``app.start()``: run the ``asyncq`` command for this app, as
        ``asyncq -A <this module> ...``. It replaces this process (exec), so the
        command loads the app as it always does; the core never imports the CLI."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0] in ("celery", "asyncq"):
            argv = argv[1:]  # Celery takes argv with or without the program's name
        module, folder = main_module()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [folder, os.environ.get("PYTHONPATH", "")]))}
        os.execve(sys.executable, [sys.executable, "-m", "asyncq", "-A", module, *argv], env)

    def worker_main(self, argv: list[str] | None = None) -> NoReturn:
        """Celery's ``app.worker_main(argv=['worker', '--loglevel=INFO'])``."""
        argv = list(sys.argv[1:] if argv is None else argv)
        self.start(argv if argv[:1] == ["worker"] else ["worker", *argv])

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

    def registered(self, name: str) -> BaseTask:
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
                                  self.conf.result_expires, events,
                                  allow_eviction=self.conf.broker_allow_eviction)
        return self._broker

    def connect(self) -> redis.Redis | RedisCluster:
        """A client for the broker URL: redis://, redis+sentinel:// or redis+cluster://."""
        url = self.conf.broker
        backend = self.conf.result_backend
        if backend and backend != url and not same_server(backend, url):
            raise ConfigurationError(
                f"backend {describe_url(backend)!r} is another server than broker "
                f"{describe_url(url)!r}: asyncq stores results beside the queues, so that "
                "a queued message always has its record (a backend on the broker's server, "
                "another database number, is accepted)")
        return redis_from_url(url, health_check_interval=30)

    def reset_connection(self) -> None:
        """Drop the connection; a forked child calls this to get its own."""
        self._broker = None


Celery = AsyncQ


def main_module() -> tuple[str, str]:
    """The module name ``-A`` should load for the running program, and the folder to
    find it in: ``python proj.py`` is module ``proj``; ``python -m proj.celery`` is
    ``proj.celery``."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name.removesuffix(".__main__"), os.getcwd()
    path = Path(getattr(main, "__file__", "") or "app.py").resolve()
    return path.stem, str(path.parent)


def symbol_by_name(name: str) -> Any:
    """``'module'``, ``'module:attr'`` or ``'module.attr'`` as the object it names."""
    module_name, colon, attr = name.partition(":")
    if not colon:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name or "." not in name:
                raise
            module_name, _, attr = name.rpartition(".")
    found = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImportError(f"{module_name!r} has no attribute {attr!r}") from None
    return found


def settings_in(obj: object, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object or module holds, by asyncq's (Celery's) names.

    Other attributes (imports, helpers) are left alone, except a lower-case name very
    close to a setting's, which is surely a misspelt one and is an error."""
    known = set(Settings.__dataclass_fields__) | CELERY_SETTINGS
    values: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else ""
    for key in dir(obj):
        if key.startswith("_") or (prefix and not key.startswith(prefix)):
            continue
        name = setting_name(key.removeprefix(prefix), known)
        if name:
            values[name] = getattr(obj, key)
        elif key.islower() and not isinstance(getattr(obj, key), ModuleType):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
            if close:
                raise ConfigurationError(f"unknown setting {key!r}; did you mean {close[0]!r}?")
    return values


def setting_name(key: str, known: set[str] | frozenset[str]) -> str | None:
    """``broker_url``, ``BROKER_URL`` or an old Celery 3 name as a setting name."""
    if key in known:
        return key
    if key.isupper():
        name = OLD_NAMES.get(key, key.lower())
        return name if name in known else None
    return None


def shared_task(fun: Callable[..., Any] | None = None, **options: Any) -> Any:
    """A task for any app (Celery's ``@shared_task``): registered with every app made,
    before or after; calling it uses the current app's copy."""
    def register(function: Callable[..., Any]) -> SharedTask:
        _shared_tasks.append((function, options))
        for app in all_apps():
            app.task(**options)(function)
        return SharedTask(options.get("name") or f"{function.__module__}.{function.__qualname__}")

    return register(fun) if fun is not None else register


class SharedTask:
    """Stands for a shared task: every use goes to the current app's task of that name."""

    def __init__(self, name: str):
        self.name = name

    def _task(self) -> BaseTask:
        return current_app().registered(self.name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"


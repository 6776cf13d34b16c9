"""Errors asyncq raises, named after their Celery counterparts where one exists."""

from __future__ import annotations

import builtins
import sys


class AsyncQError(Exception):
    """Base class of every asyncq error."""


class ConfigurationError(AsyncQError, ValueError):
    """A setting or task option is unknown or has a bad value."""


class NotRegistered(AsyncQError, LookupError):
    """A task name that this app does not know; the message names it."""


class EncodeError(AsyncQError, TypeError):
    """Arguments or a result that cannot be sent as JSON."""


class TimeoutError(AsyncQError, builtins.TimeoutError):
    """``AsyncResult.get`` gave up waiting."""


class UnknownTaskError(AsyncQError, LookupError):
    """No record for this task id: never submitted, expired or forgotten."""


class WorkerLostError(AsyncQError):
    """The process running the task died before the task could finish."""


class TimeLimitExceeded(AsyncQError):
    """The task ran past its hard time limit and its process was killed."""


class SoftTimeLimitExceeded(AsyncQError):
    """Raised inside a task that ran past its soft time limit, so it can clean up."""


class Retry(AsyncQError):
    """Raised by ``self.retry()``: the worker schedules the next try at ``eta``."""

    def __init__(self, exc: BaseException | None, eta: float, countdown: float):
        reason = f"{type(exc).__name__}: {exc}" if exc else "retry requested"
        super().__init__(f"Retry in {countdown:.3g}s: {reason}")
        self.exc = exc
        self.eta = eta


class MaxRetriesExceededError(AsyncQError):
    """``self.retry()`` was called with no tries left and no exception to re-raise."""


class TaskRevokedError(AsyncQError):
    """The task was revoked (or expired) before it could finish."""


class Reject(AsyncQError):
    """Raised by a task to reject its message, as in Celery: ``requeue=False`` ends the
    task REJECTED and keeps the message as a dead letter; ``requeue=True`` puts the
    message back on its queue."""

    def __init__(self, reason: object = None, requeue: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class Ignore(AsyncQError):
    """Raised by a task so that the worker stores no state for it (it keeps whatever
    state the task set itself, e.g. with ``update_state``)."""


class QueueNotFound(AsyncQError, KeyError):
    """A task was routed to a queue the app does not know."""


class EvictingRedis(ConfigurationError):
    """The Redis asyncq would queue work on may evict keys when full (a maxmemory-policy
    other than noeviction): queued tasks and results could vanish without a trace."""


class ImproperlyConfigured(ConfigurationError):
    """Celery's name for a configuration error."""


class CeleryError(AsyncQError):
    """Celery's base class name, for code that catches it."""


class TaskError(AsyncQError):
    """Celery's base class of task errors."""


class InvalidTaskError(AsyncQError):
    """A message that is not a task asyncq can run (it is dead-lettered)."""


class ChordError(AsyncQError):
    """A member of a chord failed, so its body cannot run."""


class RemoteError(AsyncQError):
    """Stands for a task's exception whose class this process cannot find."""


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def rebuild_exception(type_name: str, message: str) -> BaseException:
    """Turn a stored error back into an exception instance.

    Only classes already imported in this process are used: a name read from
    Redis never causes an import. Anything else becomes a ``RemoteError``
    subclass carrying the original name.
    """
    module_name, _, qualname = type_name.rpartition(".")
    owner = sys.modules.get(module_name) if module_name else builtins
    cls: object = owner
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    stand_in: type[RemoteError] = type(qualname.rsplit(".", 1)[-1] or "RemoteError",
                                       (RemoteError,), {})
    stand_in.__module__ = module_name or "builtins"
    return stand_in(message)

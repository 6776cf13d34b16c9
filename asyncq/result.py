"""AsyncResult: a handle on one task's record, as in ``celery.result``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from asyncq import states
from asyncq.broker import SUCCESS_NOTICE
from asyncq.current import current_app
from asyncq.exceptions import TimeoutError, UnknownTaskError, rebuild_exception
from asyncq.serialization import loads
from asyncq.workflow import load_then

if TYPE_CHECKING:
    from asyncq.app import AsyncQ


class AsyncResult:
    """The state and outcome of a task, read from its Redis hash on each access."""

    parent: Any = None  # the result of the step before, in a canvas

    def __init__(self, id: str, app: AsyncQ | None = None, task_name: str | None = None,
                 parent: Any = None):
        self.id = id
        self.app = app or current_app()
        self.task_name = task_name
        self.parent = parent
        self._children: list[Any] | None = None

    @property
    def children(self) -> list[Any] | None:
        """The results of the tasks that follow this one in its canvas (its links, the
        next step), as known when it was sent or else from its record."""
        if self._children is not None:
            return self._children
        then = load_then(self.app.broker.record(self.id).get("then"))
        ids = then.get("next")
        return [AsyncResult(str(i), app=self.app) for i in ids] if ids else None

    @children.setter
    def children(self, value: list[Any] | None) -> None:
        self._children = value

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def state(self) -> str:
        """PENDING, STARTED, SUCCESS, FAILURE, a custom state, or UNKNOWN (no record)."""
        return self.app.broker.status(self.id)

    status = state

    @property
    def result(self) -> Any:
        """The return value; the exception on FAILURE; the meta of a custom state."""
        return _outcome(self.app.broker.record(self.id))

    info = result

    @property
    def traceback(self) -> str | None:
        return self.app.broker.record(self.id).get("traceback")

    @property
    def date_done(self) -> float | None:
        done = self.app.broker.record(self.id).get("finished_at")
        return float(done) if done else None

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def revoke(self, terminate: bool = False) -> bool:
        """Cancel the task: a queued or scheduled one never runs; with ``terminate``, a
        running one has its child killed (and replaced). Ends REVOKED; False if the task
        had a final state already."""
        return self.app.broker.revoke(self.id, revoked_fields(
            "terminated" if terminate else "revoked", terminate=terminate))

    def forget(self) -> None:
        """Delete the record now rather than when it expires."""
        self.app.broker.forget(self.id)

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None) -> Any:
        """Wait for the final state and return the result (or raise the task's error).

        Raises the task's exception on FAILURE, TaskRevokedError on REVOKED (with
        ``propagate=False``, returns them). Waits on the task's pub/sub channel. ``interval`` is
        accepted for Celery code and ignored. Raises UnknownTaskError when there
        is no record to wait for, TimeoutError when ``timeout`` passes first.
        """
        record = self._wait(timeout)
        if propagate and record.get("status") in states.PROPAGATE_STATES:
            raise _outcome(record)
        return _outcome(record)

    def wait(self, timeout: float | None = None, propagate: bool = True) -> Any:
        return self.get(timeout=timeout, propagate=propagate)

    def _wait(self, timeout: float | None) -> dict[str, str]:
        broker = self.app.broker
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = broker.waiter()
        name = broker.keys.done_channel(self.id)
        channel.subscribe(name)
        try:
            while True:
                record = broker.record(self.id)
                if not record:
                    raise UnknownTaskError(f"no record for task {self.id}")
                if record.get("status") in states.READY_STATES:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {self.id} not ready after {timeout}s")
                # A message means "a record changed"; a success on our channel carries
                # its result, so there is nothing more to read.
                notice = channel.get_message(timeout=1.0 if left is None else min(left, 1.0))
                if notice and notice["channel"] == name.encode() and \
                        notice["data"].startswith(SUCCESS_NOTICE):
                    return {"status": states.SUCCESS,
                            "result": notice["data"][len(SUCCESS_NOTICE):].decode()}
        finally:
            channel.unsubscribe(name)


class EagerResult(AsyncResult):
    """The outcome of a task run in the calling process (``apply()``, or
    ``task_always_eager``): already final, kept in memory, never in Redis."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,
                 name: str | None = None):
        self.id = self.task_id = id
        self.task_name = name
        self._value = ret_value
        self._state = state
        self._traceback = traceback

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self._state == states.SUCCESS

    def failed(self) -> bool:
        return self._state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None) -> Any:
        if propagate and isinstance(self._value, BaseException) and \
                self._state in states.PROPAGATE_STATES:
            raise self._value
        return self._value

    wait = get

    def forget(self) -> None:
        """Nothing to forget: an eager result was never stored."""

    def revoke(self, terminate: bool = False) -> bool:
        return False


def revoked_fields(reason: str, terminate: bool = False) -> dict[str, str]:
    """The record fields of a REVOKED task; ``terminate`` asks its worker to kill it."""
    fields = {"status": states.REVOKED, "exc_type": "asyncq.exceptions.TaskRevokedError",
              "exc_message": reason, "finished_at": f"{time.time():.6f}"}
    if terminate:
        fields["terminate"] = "1"
    return fields


def _outcome(record: dict[str, str]) -> Any:
    status = record.get("status")
    if status == states.SUCCESS:
        return loads(record.get("result"))
    if status in states.EXCEPTION_STATES and "exc_type" in record:
        return rebuild_exception(record["exc_type"], record.get("exc_message", ""))
    if status in (states.PENDING, states.STARTED, None):
        return None
    return loads(record.get("meta"))


class ResultSet:
    """Several results handled as one (Celery's ``ResultSet``), in the order given;
    a member may itself be a group's result."""

    parent: Any = None

    def __init__(self, results: list[Any] | None = None, app: AsyncQ | None = None):
        self.results: list[Any] = list(results or [])
        self.app = app

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(map(repr, self.results))}]>"

    @property
    def children(self) -> list[Any]:
        return self.results

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def waiting(self) -> bool:
        return not self.ready()

    def join_native(self, timeout: float | None = None, propagate: bool = True,
                    **ignored: Any) -> list[Any]:
        return self.get(timeout=timeout, propagate=propagate)

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        """How many finished SUCCESS, as in Celery."""
        return sum(r.successful() for r in self.results)

    def get(self, timeout: float | None = None, propagate: bool = True,
            **ignored: Any) -> list[Any]:
        """Every result, in order; ``timeout`` bounds the whole wait. (Celery's
        ``interval``, ``callback`` and the like are accepted and ignored.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        return [r.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                      propagate=propagate) for r in self.results]

    join = get

    def revoke(self, terminate: bool = False) -> None:
        for result in self.results:
            result.revoke(terminate=terminate)


class GroupResult(ResultSet):
    """The results of a group (Celery's ``GroupResult``), with the group's id."""

    def __init__(self, id: str | None = None, results: list[Any] | None = None,
                 parent: Any = None, app: AsyncQ | None = None):
        if isinstance(id, list):  # GroupResult(results), as asyncq took it before
            id, results = None, id
        super().__init__(results, app)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

"""The prefork worker: one supervisor process and N child processes.

A child's loop (``Child.run``): fetch messages of one queue into its own
in-flight list for that queue (``broker.fetch``), then one by one: start the
task (``broker.start``), run the function, store the outcome and acknowledge
(``Child.end``: ``broker.finish``, or ``broker.retry``; the store, then the
ack). Each Redis step of a taken task is retried through an outage
(``Outage.run``): a result computed meanwhile is stored once Redis is back.

The supervisor's loop (``Supervisor.supervise``) only watches. On a tick it
beats the heartbeat (``Presence``, in recovery.py), recovers dead workers'
messages (``Recovery``), kills children whose task was revoked with terminate
(``Watchdog``) and queues scheduled messages now due. As they happen it handles
a child's exit (recover what it held, then a new child in its slot), signals,
its children's task events (sent on in batches) and hard time limits.

Celery's counterparts: ``celery worker`` with the prefork pool (billiard);
the supervisor is Celery's MainProcess, a child is a ForkPoolWorker.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import redis

from asyncq import signals, states
from asyncq.broker import ELSEWHERE, NOT_SENT, Ending, LeftoversHeld, failure_fields, now
from asyncq.canvas import takes_request
from asyncq.events import EVENTS_FLUSH, Notes
from asyncq.exceptions import (
    ConfigurationError,
    EncodeError,
    Ignore,
    NotRegistered,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
    exception_type_name,
    rebuild_exception,
)
from asyncq.held import Ended, HeldEnds
from asyncq.message import MAX_ID_BYTES, Message, parse_json
from asyncq.outage import GaveUp, Outage, back_off
from asyncq.recovery import Presence, Recovery, Registration, recover_list
from asyncq.request import Request
from asyncq.result import revoked_fields
from asyncq.scripts import Command
from asyncq.serialization import dumps, loads
from asyncq.task import Task

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

log = logging.getLogger("asyncq.worker")
_fork = multiprocessing.get_context("fork")
TASK_ID_SIZE = MAX_ID_BYTES  # shared memory per child for the id of its running task
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass
class WorkerOptions:
    """What ``asyncq worker`` takes on its command line."""

    concurrency: int = 0  # 0 = the app's worker_concurrency, else the CPU count
    queues: list[str] = field(default_factory=list)  # [] = the app's default queue
    hostname: str = ""  # '' = asyncq@<host>:<pid>
    max_tasks_per_child: int = 0  # 0 = no limit


class Slots:
    """Per child slot, in memory shared by the supervisor and its children (made
    before the first fork): the hard deadline of the running task (monotonic
    clock, 0 when none), that task's id (to terminate it when revoked), and the
    ids of the tasks that ran but whose ends the child still holds (so that, if
    it dies, they count as run: ``Recovery.dead_child``)."""

    def __init__(self, count: int, most_held: int = 1):
        self.count = count
        self._deadlines = _fork.Array("d", count, lock=False)
        self._running = _fork.Array("c", count * TASK_ID_SIZE, lock=False)
        self._held_size = max(1, most_held) * (TASK_ID_SIZE + 1)
        self._held = _fork.Array("c", count * self._held_size, lock=False)

    def deadline(self, slot: int) -> float:
        return float(self._deadlines[slot])

    def set_deadline(self, slot: int, when: float) -> None:
        self._deadlines[slot] = when

    def deadlines(self) -> list[float]:
        """The deadlines set, of every slot."""
        return [float(when) for when in self._deadlines if when > 0]

    def show_running(self, slot: int, task_id: str) -> None:
        start = slot * TASK_ID_SIZE
        self._running[start:start + TASK_ID_SIZE] = \
            task_id.encode()[:TASK_ID_SIZE].ljust(TASK_ID_SIZE, b"\0")

    def running(self, slot: int) -> str:
        """The id of the task the child in ``slot`` runs ('' = none)."""
        start = slot * TASK_ID_SIZE
        raw: bytes = self._running[start:start + TASK_ID_SIZE]
        return raw.rstrip(b"\0").decode(errors="replace")

    def show_held(self, slot: int, task_ids: list[str]) -> None:
        start, size = slot * self._held_size, self._held_size
        self._held[start:start + size] = "\n".join(task_ids).encode()[:size].ljust(size, b"\0")

    def held(self, slot: int) -> list[str]:
        """The ids of the tasks the child in ``slot`` ran and holds the ends of."""
        start = slot * self._held_size
        raw: bytes = self._held[start:start + self._held_size]
        return raw.rstrip(b"\0").decode(errors="replace").split("\n") if raw[:1] != b"\0" \
            else []

    def clear(self, slot: int) -> None:
        self.set_deadline(slot, 0.0)
        self.show_running(slot, "")
        self.show_held(slot, [])


@dataclass
class Pool:
    """What a worker's children share with their supervisor, made before the first fork."""

    worker_id: str
    queues: list[str]
    max_tasks: int  # tasks per child before it is replaced; 0 = no limit
    slots: Slots
    wake_fd: int  # a byte here wakes the supervisor (a deadline set, a stop signal)


def task_traceback(exc: BaseException) -> str:
    """The traceback from the task's own code down, without asyncq's frames above it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    return f"exit code {exitcode}"


class _Stop(Exception):
    """Raised inside an idle child by SIGTERM, to leave a blocking fetch at once."""


@dataclass
class Outcome:
    """What running a task came to: its new state's record fields, when to try
    again if it is a retry, how long the function ran (seconds), and what the
    task's hooks are told (its return value or its exception, and the traceback)."""

    fields: dict[str, str]
    retry_at: float | None = None
    runtime: float | None = None  # None: it never ran (expired)
    value: Any = None
    einfo: str | None = None
    # "store" the state; or, as the task asked by raising Ignore or Reject: "ignore"
    # (store nothing), "reject" (REJECTED, the message kept as a dead letter), "requeue".
    disposal: str = "store"


@dataclass(frozen=True)
class Following:
    """The next message of a batch, decoded, its task, and the start to send for it."""

    raw: bytes
    message: Message
    task: Task
    start: Command


@dataclass(frozen=True)
class Ahead:
    """A message started before its turn (with its batch, or with the previous task's
    finish), and what its start answered; ``batched``: its end may be held."""

    raw: bytes
    message: Message
    answer: Any
    batched: bool = False


class Child:
    """One child process: fetches and runs tasks, one at a time, until told to stop."""

    def __init__(self, app: AsyncQ, pool: Pool, slot: int):
        self.app = app
        self.pool = pool
        self.slot = slot
        self.worker_id = pool.worker_id
        self.queues = list(pool.queues)  # rotated, so that none is always first
        self.inflight = ""  # the in-flight list of the batch being worked through
        self.then: str | None = None  # what follows the current task in its canvas
        self.fetched_at = 0.0  # when the batch being worked through was taken (monotonic)
        self.ahead: Ahead | None = None  # the next message, started with the last finish
        self.notes = Notes(app.broker.events, lambda: self.app.broker.client, log)
        self.outage = Outage(log)
        conf = app.conf
        self.start_spec = self.batch_start_spec()
        self.held = HeldEnds(lambda ends, fetch: self.outage.run(
            lambda: self.app.broker.finish_many(ends, fetch)), conf.worker_result_hold,
            lambda ids: pool.slots.show_held(slot, ids))
        self.busy = False
        self.armed_soft = self.armed_hard = False  # time limits set for the running task
        self.running = ""  # the id of the task this child runs now
        self.stopping = False

    def batch_start_spec(self) -> str:
        """The tasks a fetch may start at once (``Broker.start_spec``): the acks-late
        ones, without a rate limit."""
        conf = self.app.conf
        if conf.task_default_rate_limit:
            return ""
        return self.app.broker.start_spec(self.worker_id, {
            name: states.STARTED if task.track_started else ""
            for name, task in self.app.tasks.items() if task.acks_late and not task.rate_limit},
            conf.result_extended)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """Warm stop: an idle child leaves now, a busy one after its task."""
        if self.stopping:
            return  # a repeated signal (for example to the whole process group)
        self.stopping = True
        if not self.busy:
            raise _Stop

    def on_soft_time_limit(self, signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    # -- the loop -----------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGALRM, self.on_soft_time_limit)
        die_with_parent(os.getppid())
        self.app.reset_connection()  # a connection of our own, not the parent's
        self.notes.events = self.app.broker.events  # this process's own, after the fork
        threading.Thread(target=self.watch_for_a_freeze, daemon=True).start()
        threading.Thread(target=self.held.watch, daemon=True).start()
        threading.Thread(target=self.notes.watch, daemon=True).start()
        signals.worker_process_init.send(sender=None)
        try:
            self.loop()
        finally:
            self.send_held_ends()
            self.notes.flush(now=True)
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def loop(self) -> None:
        """Batches until told to stop (a child whose supervisor dies is killed with it:
        ``die_with_parent``)."""
        done = 0
        with suppress(_Stop):
            while not self.stopping and not self.had_enough(done):
                batch, started = self.fetch()
                self.busy = True  # a stop request waits for the end of this batch's task
                aheads = self.start_ahead(batch, started)
                for index, raw in enumerate(batch):
                    if (self.stopping or self.had_enough(done)) and not self.started_ahead(raw):
                        break  # the rest goes back to the queue when this child exits
                    more = index + 1 < len(batch) and aheads[index + 1] is None and \
                        not self.stopping and not self.had_enough(done + 1)
                    self.handle_contained(raw, aheads[index],
                                          batch[index + 1] if more else None)
                    done += 1
                self.ahead = None
                self.busy = False  # the held ends go with the next fetch

    def watch_for_a_freeze(self) -> None:
        """A thread: after this process was stopped (SIGSTOP, a paused VM) long enough
        to be presumed dead, its running task may have been recovered and started
        elsewhere. If the task is no longer this run's, the child dies at once,
        rather than run it to the end beside the new run."""
        conf = self.app.conf
        interval = max(0.1, conf.worker_heartbeat_interval / 2)
        last = time.monotonic()
        while True:
            time.sleep(interval)
            gap, last = time.monotonic() - last, time.monotonic()
            task_id = self.running
            if gap < interval + conf.worker_lost_after / 2 or not task_id:
                continue
            try:
                owned = self.app.broker.owns(task_id, self.inflight)
            except Exception:  # Redis away: the run's own finish is fenced anyway
                continue
            if not owned and self.running == task_id:
                log.error("Task %s was taken over while this worker was stopped for %.1fs: "
                          "this child ends now", task_id, gap)
                os.kill(os.getpid(), signal.SIGKILL)

    def started_ahead(self, raw: bytes) -> bool:
        return self.ahead is not None and self.ahead.raw is raw

    def handle_contained(self, raw: bytes, ahead: Ahead | None = None,
                         upcoming: bytes | None = None) -> None:
        """``handle``, where a Redis error that waiting will not end (a damaged record:
        WRONGTYPE, a field no asyncq wrote) costs that one message, set aside as a dead
        letter, never the child: other tasks go on. (Outages and refusals, such as a
        full Redis, are waited out inside.)"""
        try:
            self.handle(raw, ahead, upcoming)
        except redis.ResponseError as exc:
            self.running = ""
            self.pool.slots.show_running(self.slot, "")
            self.refused(raw, self.inflight, _guess_field(raw, "id"), exc)

    def refused(self, raw: bytes, inflight: str, task_id: str | None,
                exc: redis.ResponseError) -> None:
        """A message whose step Redis refused goes to the dead letters as it is: its
        record is what is damaged, so nothing more is written to it."""
        log.error("Task %s: Redis refused a step (%s): its message is set aside as a dead "
                  "letter", task_id, exc)
        try:
            self.outage.run(lambda: self.app.broker.dead_letter(raw, inflight, None, None))
        except redis.ResponseError as again:
            log.error("setting the message aside failed too (%s): it stays held", again)

    def had_enough(self, done: int) -> bool:
        return bool(self.pool.max_tasks) and done >= self.pool.max_tasks

    def fetch(self) -> tuple[list[bytes], list[Any]]:
        """Take the next messages (up to worker_prefetch_multiplier) of one queue; the
        held ends go first, in the same round trip as the first queue's fetch. On a
        single Redis the fetch starts the acks-late ones too (``start_spec``): per
        message, what its start answered (None: not started)."""
        self.notes.flush()  # if due
        self.queues.append(self.queues.pop(0))
        conf = self.app.conf
        answered = self.send_held_ends(fetch_from=self.queues[0])
        try:
            self.inflight, taken, started = self.outage.run(lambda: self.app.broker.fetch(
                self.queues, self.worker_id, self.slot, conf.worker_fetch_timeout,
                conf.worker_prefetch_multiplier, self.pool.slots.count,
                idle=lambda: self.notes.flush(now=True), answered=answered,
                start_spec=self.start_spec), pause=back_off)
            self.fetched_at = time.monotonic()
        except LeftoversHeld as held:
            self.reclaim(held.inflight)
            return [], []
        except GaveUp:  # Redis away: the loop looks for a stop, then fetches again
            return [], []
        return taken, started

    def reclaim(self, inflight: str) -> None:
        """Between batches this child holds nothing, so a message in its in-flight list
        is one whose answer was lost: a BLMOVE the client retried after its reply
        was cut off, or an ack that a Sentinel failover lost with the old master.
        It is recovered as a dead child's would be (an acks-late task runs again)."""
        error = WorkerLostError("Redis lost the task's acknowledgement (failover or outage)")
        self.outage.run(lambda: recover_list(self.app, inflight, inflight, "lost", error,
                                             self.worker_id))

    def handle(self, raw: bytes, ahead: Ahead | None = None,
               upcoming: bytes | None = None) -> None:
        """One message: start the task (``ahead``: it was, with its batch), run it,
        store its outcome and acknowledge (and start the ``upcoming`` message in the
        same round trip, when it can be)."""
        if ahead is None and self.started_ahead(raw):
            ahead = self.ahead
        self.ahead = None
        try:
            message = ahead.message if ahead else Message.decode(raw)
            task = self.app.registered(message.task)
        except NotRegistered as exc:
            signals.task_unknown.send(sender=self, name=_guess_field(raw, "task"),
                                      id=_guess_field(raw, "id"), message=raw, exc=exc)
            self.dead_letter(raw, exc)
            return
        except ValueError as exc:
            signals.task_rejected.send(sender=self, message=raw, exc=exc)
            self.dead_letter(raw, exc)
            return
        request = self.request(message)
        self.then = None  # unknown until the task starts
        if not message.expired() and self.throttled(task, message):
            return
        signals.task_received.send(sender=self, request=request)
        if message.expired():
            log.warning("Task %s[%s] expired before it started: revoked", task.name, message.id)
            self.end(message, Outcome(revoked_fields("expired")), keep_result=True)
            signals.task_revoked.send(sender=task, request=request, terminated=False,
                                      signum=None, expired=True)
            return
        if not self.start(task, message, request, ahead):
            return
        if not self.held.known_short(task.name):
            self.send_held_ends()  # held ends are not left at the mercy of a task not known short
        self.pool.slots.show_running(self.slot, message.id)
        self.running = message.id
        outcome = self.execute(task, message, request)
        short = self.held.learn(task.name, outcome.runtime)
        self.running = ""
        self.pool.slots.show_running(self.slot, "")
        failed = outcome.fields.get("status") == states.FAILURE
        self.end(message, outcome, keep_result=not task.ignore_result or
                 (failed and task.store_errors_even_if_ignored), upcoming=upcoming,
                 hold=bool(ahead and ahead.batched and short) and not hooked(task))
        self.call_hooks(task, request, outcome)

    def throttled(self, task: Task, message: Message) -> bool:
        """Under a rate limit, a message whose turn is later waits in Redis (the
        queue's scheduled set) rather than here; the supervisor is woken to queue
        it again when its turn comes."""
        try:
            interval = task.rate_interval()
        except ConfigurationError as exc:  # a limit set where it was not checked
            log.error("Task %s: %s; running it without a limit", task.name, exc)
            return False
        if interval is None:
            return False
        until = self.outage.run(lambda: self.app.broker.throttle(message, self.inflight,
                                                                 interval))
        if not until:
            return False
        log.debug("Task %s[%s] rate-limited (%s): waits %.3fs", task.name, message.id,
                  task.rate_limit, until - time.time())
        with suppress(BlockingIOError):
            os.write(self.pool.wake_fd, b"d")
        return True

    def request(self, message: Message) -> Request:
        """``self.request`` for the task, with Celery's fields."""
        body = message.body
        return Request(id=message.id, task=message.task, args=message.args,
                       kwargs=message.kwargs, retries=message.retries,
                       hostname=self.worker_id, called_directly=False,
                       eta=body.get("eta"), expires=body.get("expires"),
                       root_id=body.get("root_id"), parent_id=body.get("parent_id"),
                       group=body.get("group"),
                       delivery_info={"routing_key": message.queue,
                                      "priority": message.priority})

    # -- the steps of one task ----------------------------------------------
    def start(self, task: Task, message: Message, request: Request,
              ahead: Ahead | None = None) -> bool:
        """Mark the task started, this child its owner; False when this message is no
        longer ours, its task already has a final state (a duplicate) or another
        child runs it (this copy then waits in the scheduled set). ``ahead``: it was
        started already, with the previous task's finish."""
        if not self.still_held(message, ahead):
            return False
        self.notes.note("received", message.id, task.name, self.worker_id,
                        retries=message.retries)
        if task.track_started:
            self.notes.note("started", message.id, task.name, self.worker_id)
        broker = self.app.broker
        if ahead is not None:
            final, self.then = self.outage.run(lambda: broker.started(message, self.inflight,
                                                                      ahead.answer))
        else:
            final, self.then = self.outage.run(lambda: broker.start(
                message, self.inflight, self.worker_id, task.acks_late, task.track_started,
                self.app.conf.result_extended))
        if final == ELSEWHERE:
            self.defer(task, message, owner=self.then or "?")
            return False
        if final:
            log.warning("Task %s[%s] already %s: not run again", task.name, message.id, final)
            self.notes.note("rejected", message.id, task.name, self.worker_id,
                            reason=f"already {final}")
            if final == states.REVOKED:
                signals.task_revoked.send(sender=task, request=request, terminated=False,
                                          signum=None, expired=False)
            return False
        log.info("Task %s[%s] received", task.name, message.id)
        return True

    def still_held(self, message: Message, ahead: Ahead | None = None) -> bool:
        """Fencing: a message taken a while ago may have been recovered away from this
        worker (frozen, or cut off, long enough to be presumed dead); it is then
        another worker's to run. A fresh batch needs no check; a task started with its
        batch must still be this run's."""
        if time.monotonic() - self.fetched_at < self.app.conf.worker_heartbeat_interval:
            return True
        broker = self.app.broker
        if self.outage.run(lambda: broker.owns(message.id, self.inflight) if ahead
                           else broker.holds(message, self.inflight)):
            return True
        log.warning("Task %s[%s] is no longer held by this worker (recovered while it was "
                    "away): not run here", message.task, message.id)
        return False

    def defer(self, task: Task, message: Message, owner: str) -> None:
        """Another child runs this task now (a second copy of its message): this copy
        waits, and is dropped once the task is final, or run if that child dies."""
        delay = self.app.conf.worker_heartbeat_interval
        log.warning("Task %s[%s] is running elsewhere (%s): this copy waits %.1fs", task.name,
                    message.id, owner, delay)
        self.outage.run(lambda: self.app.broker.defer(message, self.inflight, delay))
        with suppress(BlockingIOError):
            os.write(self.pool.wake_fd, b"d")  # the supervisor queues it again when due

    def execute(self, task: Task, message: Message, request: Request) -> Outcome:
        """Run the task under its time limits: its new state, or a retry."""
        request.args = self.outage.run(lambda: self.call_args(task, message))
        signals.task_prerun.send(sender=task, task_id=message.id, task=task,
                                 args=request.args, kwargs=request.kwargs)
        began = time.monotonic()
        self.arm_time_limits(task)
        try:
            task.before_start(message.id, request.args, request.kwargs)
            value = task.run_with(request, request.args, request.kwargs)
            result = dumps(value, f"the result of task {task.name!r}")
        except Retry as retry:
            self.disarm_time_limits()
            outcome = self.retried(task, message, retry.exc or retry, retry.eta)
        except (Ignore, Reject) as asked:
            self.disarm_time_limits()
            outcome = self.set_aside(task, message, asked)
        except Exception as exc:  # any error of the task is its FAILURE (or a retry)
            self.disarm_time_limits()
            outcome = self.failed(task, message, exc)
        else:
            self.disarm_time_limits()
            runtime = time.monotonic() - began
            log.info("Task %s[%s] succeeded in %.3fs: %s", task.name, message.id, runtime,
                     _shorten(result))
            outcome = Outcome({"status": states.SUCCESS, "result": result,
                               "finished_at": now(), "runtime": f"{runtime:.6f}"},
                              value=value)
        outcome.runtime = time.monotonic() - began
        return outcome

    def call_args(self, task: Task, message: Message) -> list[Any]:
        """The arguments a canvas adds at run time: a chord body's gathered results in
        front; for an errback of Celery's new style, the failed task's request,
        exception and traceback in place of its id."""
        body, broker = message.body, self.app.broker
        if "gather" in body:
            results = [None if raw is None else loads(raw) for raw in broker.results(
                body["gather"])]
            return message.args if body.get("immutable") else [results, *message.args]
        failed_id = body.get("errback_of")
        if not failed_id or not takes_request(task) or body.get("immutable"):
            return message.args
        record = broker.record(failed_id)  # for its name and worker; may be gone
        error = body.get("error") or record
        exc = rebuild_exception(error.get("exc_type") or "Exception",
                                error.get("exc_message", ""))
        request = Request(id=failed_id, task=record.get("task"), hostname=record.get("worker"))
        return [request, exc, error.get("traceback"), *message.args[1:]]

    def retried(self, task: Task, message: Message, reason: BaseException,
                eta: float) -> Outcome:
        return Outcome(self.retry_fields(task, message, reason, eta), eta, value=reason,
                       einfo=task_traceback(reason))

    def failed(self, task: Task, message: Message, exc: Exception) -> Outcome:
        """FAILURE, or a retry when the error is one the task retries by itself."""
        retry_at = task.next_try(message.retries, exc) if task.autoretries(exc) else None
        if retry_at is not None:
            return self.retried(task, message, exc, retry_at)
        expected = isinstance(exc, tuple(task.throws or ()))  # Celery's throws: no alarm
        log.log(logging.INFO if expected else logging.ERROR, "Task %s[%s] raised %s%s: %s",
                task.name, message.id, "expected " if expected else "",
                type(exc).__name__, exc)
        tb = "" if isinstance(exc, EncodeError) else task_traceback(exc)
        return Outcome(failure_fields(exc, tb), value=exc, einfo=tb)

    def set_aside(self, task: Task, message: Message, asked: Ignore | Reject) -> Outcome:
        """The task raised Ignore (no state stored) or Reject (REJECTED and a dead
        letter, or back on its queue with ``requeue=True``), as in Celery."""
        if isinstance(asked, Ignore):
            log.info("Task %s[%s] ignored", task.name, message.id)
            return Outcome({}, disposal="ignore")
        how = "requeue" if asked.requeue else "reject"
        log.warning("Task %s[%s] rejected (%s): %s", task.name, message.id,
                    "requeued" if asked.requeue else "kept as a dead letter", asked.reason)
        return Outcome({"status": states.REJECTED, "exc_type": exception_type_name(asked),
                        "exc_message": str(asked.reason or ""), "finished_at": now()},
                       value=asked, disposal=how)

    def call_hooks(self, task: Task, request: Request, outcome: Outcome) -> None:
        """After the state is stored: the task's hooks and the signals (Task.after_run)."""
        state = states.IGNORED if outcome.disposal == "ignore" else outcome.fields["status"]
        task.after_run(request, state, outcome.value, outcome.einfo)

    def end(self, message: Message, outcome: Outcome, keep_result: bool,
            upcoming: bytes | None = None, hold: bool = False) -> None:
        """Store the task's new state, then acknowledge its message (the broker does
        both, in that order); note it, if this stored it. The ``upcoming`` message is
        started in the same round trip when it can be (see ``ahead_of``). With
        ``hold``, a final state waits to go with others (``HeldEnds``)."""
        broker, fields = self.app.broker, outcome.fields
        retry_at, runtime = outcome.retry_at, outcome.runtime
        if outcome.disposal != "store":
            self.dispose(message, outcome)
            return
        if retry_at is not None:
            stored = self.outage.run(lambda: broker.retry(message, self.inflight, retry_at,
                                                          fields))
        else:
            if runtime is not None:
                fields.setdefault("runtime", f"{runtime:.6f}")  # a failure's too
                runtime = float(fields["runtime"])  # the event says what the record says
            if hold:
                ending = Ending(message, self.inflight, fields, keep_result, self.then)
                self.report_ends(self.held.add(ending, runtime))
                return
            following = self.ahead_of(upcoming)
            stored, answer = self.outage.run(lambda: broker.finish_and_start(
                message, self.inflight, fields, keep_result, self.then,
                following.start if following else None))
            if following:
                self.ahead = Ahead(following.raw, following.message, answer)
        if stored:
            self.note_end(message, fields, runtime)

    def start_ahead(self, batch: list[bytes], started: list[Any]) -> list[Ahead | None]:
        """Start every message of a fresh batch whose task is acks-late, in one round
        trip, unless the fetch ``started`` it already: a quick task then costs no round
        trip of its own to start. (If the child dies, those not run yet go back to
        their queue, uncounted: see ``Recovery.dead_child``.)"""
        aheads: list[Ahead | None] = [None] * len(batch)
        for index, (raw, answer) in enumerate(zip(batch, started, strict=True)):
            if answer is not None:
                with suppress(ValueError):  # not one of ours: ``handle`` sets it aside
                    aheads[index] = Ahead(raw, Message.decode(raw), answer, batched=True)
        picked = [(index, following) for index, following in
                  enumerate(None if aheads[i] else self.ahead_of(raw)
                            for i, raw in enumerate(batch))
                  if following and following.task.acks_late]
        if not picked:
            return aheads
        answers = self.outage.run(lambda: self.app.broker.start_many(
            [following.start for _, following in picked]))
        for (index, following), answer in zip(picked, answers, strict=True):
            aheads[index] = Ahead(following.raw, following.message, answer, batched=True)
        return aheads

    def send_held_ends(self, fetch_from: str | None = None) -> tuple[str, Any] | None:
        """Send the held ends now; one that Redis refuses for good (a damaged record)
        is ended on its own, so that it costs only its own message. ``fetch_from``: a
        queue whose fetch goes in the same round trip; returns it with what the fetch
        answered, for ``Broker.fetch`` (None: not sent)."""
        try:
            if fetch_from is None:
                self.report_ends(self.held.flush())
                return None
            conf = self.app.conf
            _, command = self.app.broker.fetch_command(
                fetch_from, self.worker_id, self.slot, conf.worker_prefetch_multiplier,
                self.pool.slots.count, self.start_spec)
            ended, answer = self.held.flush_with(command)
            self.report_ends(ended)
            return None if answer is NOT_SENT else (fetch_from, answer)
        except redis.ResponseError:
            for ending, runtime in self.held.take_held():
                self.end_alone(ending, runtime)
            return None

    def end_alone(self, ending: Ending, runtime: float | None) -> None:
        broker, message = self.app.broker, ending.message
        try:
            stored = self.outage.run(lambda: broker.finish(
                message, ending.inflight, ending.fields, ending.keep_result, ending.then))
        except redis.ResponseError as exc:
            self.refused(message.raw, ending.inflight, message.id, exc)
            return
        if stored:
            self.note_end(message, dict(ending.fields), runtime)

    def report_ends(self, ended: list[Ended]) -> None:
        """Events for the held ends that were sent and stored."""
        for end, runtime, stored in ended:
            if stored:
                self.note_end(end.message, dict(end.fields), runtime)

    def ahead_of(self, raw: bytes | None) -> Following | None:
        """The start of the next message of the batch, to send with this finish: one
        round trip fewer per task. Not for a message that needs a look first (its
        batch is old enough to need fencing, it is expired, rate-limited or not one
        of ours): that one starts on its own, as any other."""
        conf = self.app.conf
        if raw is None or time.monotonic() - self.fetched_at >= conf.worker_heartbeat_interval:
            return None
        try:
            message = Message.decode(raw)
            task = self.app.registered(message.task)
        except (ValueError, NotRegistered):
            return None
        if message.expired() or task.rate_limit or conf.task_default_rate_limit:
            return None
        start = self.app.broker.start_command(message, self.inflight, self.worker_id,
                                              task.acks_late, task.track_started,
                                              conf.result_extended)
        return Following(raw, message, task, start)

    def dispose(self, message: Message, outcome: Outcome) -> None:
        """Ignore: acknowledge only. Reject: REJECTED, and the message kept as a dead
        letter (or put back on its queue, with requeue=True)."""
        broker = self.app.broker
        if outcome.disposal == "ignore":
            self.outage.run(lambda: broker.acknowledge(message, self.inflight))
        elif outcome.disposal == "requeue":
            self.outage.run(lambda: broker.put_back(message, self.inflight))
        elif self.outage.run(lambda: broker.dead_letter(message.raw, self.inflight,
                                                        outcome.fields, message.id, self.then,
                                                        run=self.inflight)):
            self.note_end(message, outcome.fields, outcome.runtime)

    def dead_letter(self, raw: bytes, exc: Exception) -> None:
        """Set a message we cannot run aside; fail its task when we know its id."""
        task_id = _guess_field(raw, "id")
        log.error("Message set aside in the dead-letter list (task id %s): %s", task_id, exc)
        failure = failure_fields(exc) if task_id else None
        failed = self.outage.run(
            lambda: self.app.broker.dead_letter(raw, self.inflight, failure, task_id))
        if task_id and failed:
            self.notes.note(
                "failed", task_id, _guess_field(raw, "task") or "?", self.worker_id,
                count=states.FAILURE, exception=_shorten(f"{type(exc).__name__}: {exc}"))

    def note_end(self, message: Message, fields: dict[str, str],
                 runtime: float | None = None) -> None:
        """An event for the state the task just stored; it is counted too."""
        status = fields["status"]
        kind = _EVENT_OF_STATE.get(status, status.lower())
        error = f"{fields['exc_type']}: {fields.get('exc_message', '')}" \
            if "exc_type" in fields else None
        self.notes.note(
            kind, message.id, message.task, self.worker_id, count=status, runtime=runtime,
            result=_shorten(fields["result"]) if "result" in fields else None,
            exception=_shorten(error) if error else None, eta=fields.get("eta"))

    def retry_fields(self, task: Task, message: Message, reason: BaseException,
                     eta: float) -> dict[str, str]:
        """RETRY, with the reason kept where FAILURE keeps its error."""
        log.warning("Task %s[%s] retry %d in %.2fs: %s: %s", task.name, message.id,
                    message.retries + 1, eta - time.time(), type(reason).__name__, reason)
        return {"status": states.RETRY, "exc_type": exception_type_name(reason),
                "exc_message": str(reason), "traceback": task_traceback(reason),
                "retries": str(message.retries + 1), "eta": f"{eta:.6f}"}

    def arm_time_limits(self, task: Task) -> None:
        """The soft limit is a timer here; the hard one a deadline the supervisor watches."""
        if task.soft_time_limit:
            signal.setitimer(signal.ITIMER_REAL, task.soft_time_limit)
            self.armed_soft = True
        if task.time_limit:
            self.pool.slots.set_deadline(self.slot, time.monotonic() + task.time_limit)
            self.armed_hard = True
            with suppress(BlockingIOError):
                os.write(self.pool.wake_fd, b"t")  # so the supervisor sleeps no longer than this

    def disarm_time_limits(self) -> None:
        """(Only what was armed: a task without limits costs no system call here.)"""
        if self.armed_soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.armed_soft = False
        if self.armed_hard:
            self.pool.slots.set_deadline(self.slot, 0.0)
            self.armed_hard = False


def hooked(task: Task) -> bool:
    """Whether something runs after the task that may look at its stored state: its
    own hooks, or receivers of the signals sent after a run (its end is then sent
    before them, not held)."""
    kind = type(task)
    return bool(signals.task_success.receivers or signals.task_failure.receivers or
                signals.task_postrun.receivers or signals.task_retry.receivers) or any(
        getattr(kind, hook) is not getattr(Task, hook)
        for hook in ("on_success", "on_failure", "after_return"))


_told: dict[str, float] = {}  # the supervisor's contained errors, by text: when last logged


def contained(chore: Callable[[], object]) -> None:
    """Run a supervisor chore; an error in it is logged (the same one at most once a
    minute) and the loop goes on: no Redis error, and no damaged key, stops a worker."""
    try:
        chore()
    except Exception as exc:
        told = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - _told.get(told, -60.0) >= 60.0:
            if len(_told) > 1000:
                _told.clear()
            _told[told] = time.monotonic()
            log.error("a worker chore failed, and is tried again next tick: %s", told,
                      exc_info=True)


def die_with_parent(parent: int) -> None:
    """A child never outlives its supervisor: with nobody to enforce its time limits,
    revokes or recovery, it is killed at once (its acks-late task then comes back as
    a dead host's does). Linux does it for us (PR_SET_PDEATHSIG); elsewhere a thread
    looks every half second."""
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.prctl(pr_set_pdeathsig, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        done = False
    if not done:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _guess_field(raw: bytes, name: str) -> str | None:
    """A text field (the task id, its name) of a message that is otherwise unusable."""
    try:
        body = parse_json(raw)
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


_EVENT_OF_STATE = {states.SUCCESS: "succeeded", states.FAILURE: "failed",
                   states.RETRY: "retried", states.REVOKED: "revoked"}


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class Respawns:
    """When a slot gets its new child: at once, unless its children keep failing at
    start-up (exiting with an error within ``SETTLED`` seconds: a broken import or
    ``worker_process_init`` receiver). Then the pause doubles with each failure, up to
    ``MOST``, so that the supervisor does not spin forking children that cannot live.
    A child killed by a signal (a time limit, a revoke, an operator) is always
    replaced at once."""

    SETTLED = 1.0
    FIRST, MOST = 0.1, 5.0

    def __init__(self) -> None:
        self.born: dict[int, float] = {}
        self.failures: dict[int, int] = {}  # failed start-ups in a row, per slot
        self.due: dict[int, float] = {}  # slot -> when to spawn (monotonic)

    def spawned(self, slot: int) -> None:
        self.born[slot] = time.monotonic()
        self.due.pop(slot, None)

    def after_exit(self, slot: int, exitcode: int | None) -> float:
        """Schedule the slot's next child; returns the pause before it."""
        now = time.monotonic()
        failed = (exitcode or 0) > 0 and now - self.born.get(slot, 0.0) < self.SETTLED
        failures = self.failures[slot] = self.failures.get(slot, 0) + 1 if failed else 0
        pause = 0.0 if failures < 2 else min(self.FIRST * 2 ** (failures - 2), self.MOST)
        self.due[slot] = now + pause
        return pause

    def ready(self) -> list[int]:
        now = time.monotonic()
        return [slot for slot, when in self.due.items() if when <= now]

    def next_at(self) -> float | None:
        return min(self.due.values(), default=None)


class Supervisor:
    """The worker's main process: starts, watches and replaces children; recovers lost work."""

    def __init__(self, app: AsyncQ, options: WorkerOptions):
        self.app = app
        self.concurrency = (options.concurrency or app.conf.worker_concurrency
                            or os.cpu_count() or 1)
        self.queues = options.queues or [app.conf.task_default_queue]
        self.worker_id = options.hostname or f"asyncq@{socket.gethostname()}:{os.getpid()}"
        self._wake_read, wake_write = os.pipe()
        self.pool = Pool(self.worker_id, self.queues,
                         options.max_tasks_per_child or app.conf.worker_max_tasks_per_child,
                         Slots(self.concurrency, app.conf.worker_prefetch_multiplier),
                         wake_write)
        self.children: dict[int, BaseProcess] = {}
        self.respawns = Respawns()
        # One selector for the loop's whole life (a fresh one per wake-up, as
        # multiprocessing's wait() makes, costs more than the wake-up's own work):
        # the children's exits (data: their slot) and the wake-up pipe.
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_read, selectors.EVENT_READ, None)
        self.outage = Outage(log)
        registration = Registration(self.concurrency, self.queues)
        self.presence = Presence(app, self.worker_id, registration, self.outage)
        self.recovery = Recovery(app, self.worker_id, registration, self.outage)
        self.watchdog = Watchdog(app, self.pool.slots, self.children, self.outage)
        self.next_due: float | None = None  # Unix time the next scheduled message is due
        self.events_sent_at = time.monotonic()
        self.stop_requests = 0  # 1 = warm shutdown, 2 = cold shutdown
        self.stops_applied = 0

    # -- signals: handlers only count, the main loop acts ---------------------
    def on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stop_requests += 1
        os.write(self.pool.wake_fd, b"!")

    def install_signal_handlers(self) -> None:
        os.set_blocking(self.pool.wake_fd, False)
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        signal.signal(signal.SIGINT, self.on_stop_signal)

    # -- the main loop ------------------------------------------------------
    def run(self) -> int:
        """Run until shut down; the exit status is 0 after a warm shutdown, 1 after a cold one."""
        self.install_signal_handlers()
        signals.worker_init.send(sender=self)
        if not self.wait_for_redis() or self.presence.name_taken() or self.evicting():
            return 1
        previous = self.presence.previous()
        contained(self.presence.beat)
        self.recovery.own_leftovers(previous)
        for slot in range(self.concurrency):
            self.spawn(slot)
        log.info("%s ready.", self.worker_id)
        signals.worker_ready.send(sender=self)
        try:
            self.supervise()
        except BaseException:
            log.critical("supervisor failed; killing its children (their acks-late tasks "
                         "will be recovered)", exc_info=True)
            self.signal_children(signal.SIGKILL)
            raise
        self.say_goodbye()
        signals.worker_shutdown.send(sender=self)
        return 1 if self.stop_requests >= 2 else 0

    def supervise(self) -> None:
        """The loop: heartbeats and housekeeping on a tick; children's exits and signals
        as they happen; hard time limits at their deadlines."""
        next_beat = time.monotonic() + self.app.conf.worker_heartbeat_interval
        while self.children or (self.respawns.due and not self.stop_requests):
            for slot in self.respawns.ready():
                self.spawn(slot)
            if time.monotonic() >= next_beat:
                self.tick()
                next_beat = time.monotonic() + self.app.conf.worker_heartbeat_interval
            elif self.next_due is not None and self.next_due <= time.time():
                contained(self.queue_due_messages)
            ready = {key.fileobj: key.data
                     for key, _ in self.selector.select(timeout=self.pause(next_beat))}
            if self._wake_read in ready and b"d" in os.read(self._wake_read, 64):
                contained(self.queue_due_messages)  # a child set a message aside for later
            self.send_events()
            self.apply_stop_requests()
            self.watchdog.enforce_time_limits()
            for slot in ready.values():
                if slot is not None:
                    self.on_child_exit(slot)

    def tick(self) -> None:
        """Housekeeping, once per heartbeat interval; each chore one try, if Redis is away,
        and none can stop the others, or the supervisor."""
        contained(self.presence.beat)
        contained(lambda: self.recovery.dead_workers(self.presence.connected_since))
        contained(self.watchdog.terminate_revoked)
        contained(self.queue_due_messages)

    def pause(self, next_beat: float) -> float:
        """Sleep until the next heartbeat or the nearest hard time limit."""
        wake_at = min([next_beat, *self.pool.slots.deadlines()])
        if self.app.broker.events.notes:
            wake_at = min(wake_at, self.events_sent_at + EVENTS_FLUSH)
        if self.next_due is not None:
            wake_at = min(wake_at, time.monotonic() + self.next_due - time.time())
        respawn_at = self.respawns.next_at()
        if respawn_at is not None:
            wake_at = min(wake_at, respawn_at)
        return max(0.0, wake_at - time.monotonic())

    # -- the chores of the loop -----------------------------------------------
    def send_events(self, now: bool = False) -> None:
        """Send the children's notes, at most every EVENTS_FLUSH seconds (one script
        call for all the tasks that ended meanwhile); kept if Redis is away."""
        events = self.app.broker.events
        if not events.notes or (not now and
                                time.monotonic() - self.events_sent_at < EVENTS_FLUSH):
            return
        try:
            self.outage.once(lambda: events.flush(self.app.broker.client))
        except Exception:  # events are best effort: never take the worker down
            log.exception("task events dropped")
            events.take()
        self.events_sent_at = time.monotonic()

    def queue_due_messages(self) -> None:
        """Move due scheduled messages of our queues to their lists (any worker consuming
        a queue may; each message moves once)."""
        def move() -> None:
            self.next_due = self.app.broker.move_due(self.queues)
        if not self.outage.once(move):
            self.next_due = time.time() + 1.0  # Redis away: look again in a second

    def spawn(self, slot: int) -> None:
        self.pool.slots.clear(slot)
        child = Child(self.app, self.pool, slot)
        process = _fork.Process(target=child.run, name=f"Child-{slot}", daemon=False)
        # Every object so far goes out of the garbage collector's sight: a child's
        # collections then never write to them, so their pages stay shared with the
        # supervisor instead of being copied into each child (less memory, PSS).
        gc.freeze()
        process.start()
        self.respawns.spawned(slot)
        self.children[slot] = process
        self.selector.register(process.sentinel, selectors.EVENT_READ, slot)
        log.debug("child %d started with pid %d", slot, process.pid)

    def on_child_exit(self, slot: int) -> None:
        """Recover what the dead child held, then put a new child in its slot."""
        process = self.children.pop(slot)
        self.selector.unregister(process.sentinel)
        process.join()
        self.pool.slots.set_deadline(slot, 0.0)  # not respawned in a shutdown: nothing to watch
        how = describe_exit(process.exitcode)
        error: Exception
        mode = "shutdown" if self.stop_requests >= 2 else "lost"
        error = WorkerLostError(f"Worker exited prematurely: {how}")
        killed_for = self.watchdog.killed_for(slot)
        if killed_for == "timeout":
            mode, error = "timeout", TimeLimitExceeded(
                f"Task ran past its hard time limit; child killed ({how})")
        elif killed_for == "revoked":
            log.info("child %d (pid %d) stopped for a revoked task: %s", slot, process.pid, how)
        elif process.exitcode != 0:
            log.error("child %d (pid %d) died: %s", slot, process.pid, how)
        try:
            slots = self.pool.slots
            running, ended = slots.running(slot), slots.held(slot)
            self.outage.run(lambda: self.recovery.dead_child(slot, mode, error, running, ended),
                            pause=self.wait_unless_stopped(2))
        except GaveUp:
            return
        except Exception:  # damaged data: what could be recovered was; the slot goes on
            log.exception("recovering what child %d held failed", slot)
        if not self.stop_requests:
            pause = self.respawns.after_exit(slot, process.exitcode)
            if pause:
                log.warning("child %d failed at start-up again: its next child starts in "
                            "%.1fs", slot, pause)

    # -- shutting down --------------------------------------------------------
    def apply_stop_requests(self) -> None:
        if self.stop_requests == self.stops_applied:
            return
        self.stops_applied = self.stop_requests
        cold = self.stop_requests > 1
        signals.worker_shutting_down.send(sender=self.worker_id, sig="SIGTERM",
                                          how="Cold" if cold else "Warm", exitcode=int(cold))
        if self.stop_requests == 1:
            log.info("warm shutdown: finishing running tasks (signal again for a cold shutdown)")
            self.signal_children(signal.SIGTERM)
        else:
            log.warning("cold shutdown: killing children; acks-late tasks go back to the queue")
            self.signal_children(signal.SIGKILL)

    def signal_children(self, signum: int) -> None:
        for process in self.children.values():
            if process.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def say_goodbye(self) -> None:
        self.send_events(now=True)
        self.outage.once(self.presence.leave)
        log.info("%s stopped.", self.worker_id)

    # -- Redis, which may be away -------------------------------------------
    def wait_unless_stopped(self, stops: int) -> Callable[[float], bool]:
        """A pause for ``Outage.run`` that gives up once ``stops`` stop requests came
        (two: a cold shutdown, where children's work must be recovered if at all
        possible). It waits on the signal pipe, so a request is seen at once."""
        def pause(delay: float) -> bool:
            if self.stop_requests >= stops:
                log.error("cold shutdown while Redis is away: what the children held "
                          "stays in their in-flight lists for recovery")
                return False
            if self._wake_read in wait([self._wake_read], timeout=delay):
                os.read(self._wake_read, 64)
                self.apply_stop_requests()
            return True
        return pause

    def evicting(self) -> bool:
        """A Redis that may evict keys when full would lose tasks without a trace: the
        worker refuses to start on it, or, where the user allowed it, warns."""
        try:
            risk = self.app.broker.eviction_warning()
        except Exception as exc:  # not knowable now; never a reason to refuse
            log.warning("could not read Redis's maxmemory-policy: %s", exc)
            return False
        if risk and not self.app.conf.broker_allow_eviction:
            log.critical("%s. asyncq refuses to work on it: set maxmemory-policy to noeviction, "
                         "or broker_allow_eviction = True to accept that tasks may be lost", risk)
            return True
        if risk:
            log.warning("%s (allowed by broker_allow_eviction: tasks may be lost)", risk)
        return False

    def wait_for_redis(self) -> bool:
        """Wait until Redis answers at start-up; False if told to stop meanwhile."""
        try:
            self.outage.run(self.app.broker.client.ping, pause=self.wait_unless_stopped(1))
        except GaveUp:
            return False
        return self.stop_requests == 0


class Watchdog:
    """Kills children that must stop mid-task: past their task's hard time limit, or
    running a task revoked with terminate=True; remembers why, for their exit."""

    def __init__(self, app: AsyncQ, slots: Slots, children: dict[int, BaseProcess],
                 outage: Outage):
        self.app = app
        self.slots = slots
        self.children = children  # the supervisor's, by slot
        self.outage = outage
        self.timed_out: set[int] = set()
        self.terminated: set[int] = set()  # killed because their task was revoked

    def killed_for(self, slot: int) -> str | None:
        """Why the child in ``slot`` was killed here: 'timeout', 'revoked' or None."""
        if slot in self.timed_out:
            self.timed_out.discard(slot)
            self.terminated.discard(slot)
            return "timeout"
        if slot in self.terminated:
            self.terminated.discard(slot)
            return "revoked"
        return None

    def enforce_time_limits(self) -> None:
        """Kill children whose task is past its hard limit; their exit is then handled."""
        now_ = time.monotonic()
        for slot, process in self.children.items():
            deadline = self.slots.deadline(slot)
            if 0 < deadline <= now_ and slot not in self.timed_out and process.pid:
                log.error("child %d (pid %d): hard time limit exceeded, killing it",
                          slot, process.pid)
                self.timed_out.add(slot)
                self._kill(process)

    def terminate_revoked(self) -> None:
        """Kill the children whose running task was revoked with terminate=True."""
        running = {slot: task_id for slot in self.children
                   if (task_id := self.slots.running(slot))}
        if running:
            self.outage.once(lambda: self._terminate_revoked(running))

    def _terminate_revoked(self, running: dict[int, str]) -> None:
        pipe = self.app.broker.client.pipeline(transaction=False)
        for task_id in running.values():
            pipe.hmget(self.app.keys.task(task_id), "status", "terminate")
        for (slot, task_id), (status, terminate) in zip(running.items(), pipe.execute(),
                                                        strict=True):
            process = self.children.get(slot)
            if status == states.REVOKED.encode() and terminate == b"1" and process:
                log.warning("Task %s revoked with terminate: killing child %d", task_id, slot)
                self.terminated.add(slot)
                self._kill(process)

    @staticmethod
    def _kill(process: BaseProcess) -> None:
        if process.pid:
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

"""The prefork worker: one supervisor process and N child processes.

Each child runs the loop in ``Child.run``: fetch messages of one queue into
its own in-flight list for that queue, start each, run the function, then store
the final state and acknowledge (``broker.finish``: the store, then the ack).
The supervisor only watches: it sends heartbeats, replaces children that die
and, before replacing one, recovers the messages the dead child held
(``broker.recover``).

Celery's counterparts: ``celery worker`` with the prefork pool (billiard);
the supervisor is Celery's MainProcess, a child is a ForkPoolWorker.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, cast

from asyncq import states
from asyncq.broker import LeftoversHeld, now, registration
from asyncq.canvas import follow_ups, gathered_args
from asyncq.connection import is_transient
from asyncq.events import EVENTS_FLUSH, NoteReader, NoteWriter
from asyncq.exceptions import (
    EncodeError,
    NotRegistered,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
    exception_type_name,
)
from asyncq.message import MAX_ID_BYTES, Message, parse_json
from asyncq.outage import REDIS_DOWN, Outage
from asyncq.result import revoked_fields
from asyncq.serialization import dumps
from asyncq.task import Request

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.task import Task

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


def failure_fields(exc: BaseException, tb: str = "") -> dict[str, str]:
    """The record fields of a FAILURE: the exception's type, message and traceback."""
    return {"status": states.FAILURE, "exc_type": exception_type_name(exc),
            "exc_message": str(exc), "traceback": tb, "finished_at": now()}


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


class Child:
    """One child process: fetches and runs tasks, one at a time, until told to stop."""

    def __init__(self, app: AsyncQ, worker_id: str, slot: int, queues: list[str],
                 max_tasks: int, deadlines: Any, running_ids: Any, wake_fd: int, share: int,
                 notes_fd: int):
        self.app = app
        self.worker_id = worker_id
        self.slot = slot
        self.inflight = ""  # the in-flight list of the batch being worked through
        self.queues = list(queues)
        self.max_tasks = max_tasks
        self.deadlines = deadlines  # shared with the supervisor, which enforces them
        self.running_ids = running_ids  # shared too: the id of the task each child runs
        self.wake_fd = wake_fd  # a byte here wakes the supervisor to look at deadlines
        self.notes = NoteWriter(notes_fd)  # task events, sent on by the supervisor
        self.share = share  # how many children share the queues (for fair prefetching)
        self.outage = Outage(log)
        self.busy = False
        self.stopping = False

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """Warm stop: an idle child leaves now, a busy one after its task."""
        if self.stopping:
            return  # a repeated signal (for example to the whole process group)
        self.stopping = True
        if not self.busy:
            raise _Stop

    def on_soft_time_limit(self, signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGALRM, self.on_soft_time_limit)
        self.app.reset_connection()  # a connection of our own, not the parent's
        parent = os.getppid()
        done = 0
        try:
            while not self.stopping and not (self.max_tasks and done >= self.max_tasks):
                if os.getppid() != parent:
                    log.error("supervisor gone: this child stops taking work")
                    return
                for raw in self.fetch():
                    if self.stopping or (self.max_tasks and done >= self.max_tasks):
                        break  # the rest of the batch goes back to the queue on exit
                    self.busy = True
                    self.handle(raw)
                    done += 1
                    self.busy = False
        except _Stop:
            pass

    def fetch(self) -> list[bytes]:
        """Take the next messages (up to worker_prefetch_multiplier); queues are rotated
        so that none is always first."""
        self.queues.append(self.queues.pop(0))
        try:
            self.inflight, taken = self.app.broker.fetch(
                self.queues, self.worker_id, self.slot, self.app.conf.worker_fetch_timeout,
                self.app.conf.worker_prefetch_multiplier, self.share)
        except LeftoversHeld as held:
            self.reclaim(held.inflight)
            return []
        except REDIS_DOWN as exc:
            time.sleep(self.outage.failed(exc))
            return []
        self.outage.ok()
        return taken

    def reclaim(self, inflight: str) -> None:
        """Between batches this child holds nothing, so a message in its in-flight list
        is one whose answer was lost: a BLMOVE the client retried after its reply
        was cut off, or an ack that a Sentinel failover lost with the old master.
        It is recovered as a dead child's would be (an acks-late task runs again)."""
        error = WorkerLostError("Redis lost the task's acknowledgement (failover or outage)")
        self.persist(lambda: recover_list(self.app, inflight, inflight, "lost", error,
                                          self.worker_id))

    def persist(self, step: Callable[[], Any]) -> Any:
        """Run a Redis step of a task already taken, retrying until Redis answers:
        a result computed during an outage is stored once Redis is back."""
        while True:
            try:
                value = step()
            except REDIS_DOWN as exc:
                time.sleep(self.outage.failed(exc))
                continue
            self.outage.ok()
            return value

    def handle(self, raw: bytes) -> None:
        broker, events = self.app.broker, self.notes
        try:
            message = Message.decode(raw)
            task = self.app.registered(message.task)
        except (ValueError, NotRegistered) as exc:
            self.dead_letter(raw, exc)
            return
        if message.expires is not None and time.time() > message.expires:
            log.warning("Task %s[%s] expired before it started: revoked", task.name, message.id)
            fields = revoked_fields("expired")
            if self.persist(lambda: broker.finish(message, self.inflight, fields)):
                self.note_end(message, fields)
            return
        events.note("received", message.id, task.name, self.worker_id, retries=message.retries,
                    more=task.track_started)
        if task.track_started:
            events.note("started", message.id, task.name, self.worker_id)
        final = self.persist(lambda: broker.start(message, self.inflight, self.worker_id,
                                                  task.acks_late, task.track_started,
                                                  self.app.conf.result_extended))
        if final:
            log.warning("Task %s[%s] already %s: not run again", task.name, message.id, final)
            events.note("rejected", message.id, task.name, self.worker_id,
                        reason=f"already {final}")
            return
        log.info("Task %s[%s] received", task.name, message.id)
        self.show_running(message.id)
        began = time.monotonic()
        fields, retry_at = self.execute(task, message)
        runtime = time.monotonic() - began
        self.show_running("")
        if retry_at is not None:
            if self.persist(lambda: broker.retry(message, self.inflight, retry_at, fields)):
                self.note_end(message, fields, runtime)
            return
        fields.setdefault("runtime", f"{runtime:.6f}")  # a failure's too
        runtime = float(fields["runtime"])  # the event and the counters say what the record says
        after = follow_ups(self.app, message, fields)  # a canvas's next step, if any
        if self.persist(lambda: broker.finish(message, self.inflight, fields,
                                              keep_result=not task.ignore_result, after=after)):
            self.note_end(message, fields, runtime)

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

    def show_running(self, task_id: str) -> None:
        """Let the supervisor see which task this child runs (to terminate it on revoke)."""
        start = self.slot * TASK_ID_SIZE
        self.running_ids[start:start + TASK_ID_SIZE] = task_id.encode()[:TASK_ID_SIZE].ljust(
            TASK_ID_SIZE, b"\0")

    def execute(self, task: Task, message: Message) -> tuple[dict[str, str], float | None]:
        """Run the task under its time limits; return the record fields of its new state,
        and when to try again if it asked for (or earned) a retry."""
        args = self.persist(lambda: gathered_args(self.app, message))  # a chord body's inputs
        request = Request(id=message.id, args=args, kwargs=message.kwargs,
                          retries=message.retries, hostname=self.worker_id,
                          called_directly=False, delivery_info={"routing_key": message.queue})
        started = time.monotonic()
        self.arm_time_limits(task)
        try:
            value = task.run_with(request, args, message.kwargs)
            result = dumps(value, f"the result of task {task.name!r}")
        except Retry as retry:
            self.disarm_time_limits()
            return self.retry_fields(task, message, retry.exc or retry, retry.eta), retry.eta
        except Exception as exc:  # any error of the task is its FAILURE (or a retry)
            self.disarm_time_limits()
            retry_at = (task.next_try(message.retries, exc)
                        if isinstance(exc, task.autoretry_for) else None)
            if retry_at is not None:
                return self.retry_fields(task, message, exc, retry_at), retry_at
            log.error("Task %s[%s] raised %s: %s", task.name, message.id,
                      type(exc).__name__, exc)
            tb = "" if isinstance(exc, EncodeError) else task_traceback(exc)
            return failure_fields(exc, tb), None
        finally:
            self.disarm_time_limits()
        runtime = time.monotonic() - started
        log.info("Task %s[%s] succeeded in %.3fs: %s", task.name, message.id, runtime,
                 _shorten(result))
        return {"status": states.SUCCESS, "result": result, "finished_at": now(),
                "runtime": f"{runtime:.6f}"}, None

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
        if task.time_limit:
            self.deadlines[self.slot] = time.monotonic() + task.time_limit
            with suppress(BlockingIOError):
                os.write(self.wake_fd, b"t")  # so the supervisor sleeps no longer than this

    def disarm_time_limits(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.deadlines[self.slot] = 0.0

    def dead_letter(self, raw: bytes, exc: Exception) -> None:
        """Set a message we cannot run aside; fail its task when we know its id."""
        task_id = _guess_id(raw)
        log.error("Message set aside in the dead-letter list (task id %s): %s", task_id, exc)
        failure = failure_fields(exc) if task_id else None
        failed = self.persist(
            lambda: self.app.broker.dead_letter(raw, self.inflight, failure, task_id))
        if task_id and failed:
            self.notes.note(
                "failed", task_id, _guess_field(raw, "task") or "?", self.worker_id,
                count=states.FAILURE, exception=_shorten(f"{type(exc).__name__}: {exc}"))


def recover_list(app: AsyncQ, inflight: str, owner: str, mode: str, error: Exception,
                 worker_id: str) -> int:
    """Requeue or fail the messages of one in-flight list held by ``worker_id``;
    returns how many it handled. See ``Broker.recover`` for the rules."""
    broker = app.broker
    failure = failure_fields(error)
    handled = 0
    for raw in broker.inflight_messages(inflight):
        try:
            message = Message.decode(raw)
        except ValueError as exc:
            broker.dead_letter(raw, inflight, None, None)
            log.error("garbled in-flight message set aside: %s", exc)
            continue
        outcome = broker.recover(message, inflight, owner, mode,
                                 app.conf.task_redelivery_limit, failure)
        log.warning("Task %s[%s] held by a lost child: %s", message.task, message.id, outcome)
        handled += outcome in ("requeued", "failed")
        if outcome in ("requeued", "failed"):
            broker.events.note(
                outcome, message.id, message.task, worker_id,
                count=states.FAILURE if outcome == "failed" else None,
                exception=f"{type(error).__name__}: {error}" if outcome == "failed" else None)
    broker.events.flush(broker.client)
    return handled


def _guess_id(raw: bytes) -> str | None:
    """The task id of a message that is otherwise unusable, when one can be read."""
    return _guess_field(raw, "id")


def _guess_field(raw: bytes, name: str) -> str | None:
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


class Supervisor:
    """The worker's main process: starts, watches and replaces children; recovers lost work."""

    def __init__(self, app: AsyncQ, options: WorkerOptions):
        self.app = app
        self.concurrency = (options.concurrency or app.conf.worker_concurrency
                            or os.cpu_count() or 1)
        self.queues = options.queues or [app.conf.task_default_queue]
        self.worker_id = options.hostname or f"asyncq@{socket.gethostname()}:{os.getpid()}"
        self.max_tasks_per_child = (options.max_tasks_per_child
                                    or app.conf.worker_max_tasks_per_child)
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        # Per slot: when its running task must end (monotonic clock), 0 when none.
        self.deadlines = _fork.Array("d", self.concurrency, lock=False)
        self.running_ids = _fork.Array("c", self.concurrency * TASK_ID_SIZE, lock=False)
        self.next_due: float | None = None  # Unix time the next scheduled message is due
        # Since when Redis has answered without a break. Dead workers are reaped only
        # once every live worker has had time to beat again (two heartbeats and the
        # longest backoff), so that a long outage, which lets every heartbeat lapse,
        # does not make live workers recover each other's work.
        self.connected_since: float | None = None
        self.timed_out: set[int] = set()
        self.terminated: set[int] = set()  # killed because their task was revoked
        self.outage = Outage(log)
        self.stop_requests = 0  # 1 = warm shutdown, 2 = cold shutdown
        self.stops_applied = 0
        self._wake_read, self._wake_write = os.pipe()
        # Children write their task events here; the supervisor sends them in batches.
        self._notes_read, self._notes_write = os.pipe()
        self.notes = NoteReader(self._notes_read, app.broker.events)
        self.events_sent_at = time.monotonic()

    # -- signals: handlers only count, the main loop acts ---------------------
    def on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stop_requests += 1
        os.write(self._wake_write, b"!")

    def install_signal_handlers(self) -> None:
        os.set_blocking(self._wake_write, False)
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        signal.signal(signal.SIGINT, self.on_stop_signal)

    # -- the main loop ------------------------------------------------------
    def run(self) -> int:
        """Run until shut down; the exit status is 0 after a warm shutdown, 1 after a cold one."""
        self.install_signal_handlers()
        if not self.wait_for_redis() or self.name_taken():
            return 1
        previous = self.previous_registration()
        self.heartbeat()
        self.recover_own_leftovers(previous)
        for slot in range(self.concurrency):
            self.spawn(slot)
        log.info("%s ready.", self.worker_id)
        try:
            self.supervise()
        except BaseException:
            log.critical("supervisor failed; killing its children (their acks-late tasks "
                         "will be recovered)", exc_info=True)
            self.signal_children(signal.SIGKILL)
            raise
        self.say_goodbye()
        return 1 if self.stop_requests >= 2 else 0

    def supervise(self) -> None:
        """The loop: heartbeats and housekeeping on a tick; children's exits and signals
        as they happen; hard time limits at their deadlines."""
        next_beat = time.monotonic() + self.app.conf.worker_heartbeat_interval
        while self.children:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                self.reap_dead_workers()
                self.terminate_revoked()
                self.queue_due_messages()
                next_beat = time.monotonic() + self.app.conf.worker_heartbeat_interval
            elif self.next_due is not None and self.next_due <= time.time():
                self.queue_due_messages()
            sentinels = {child.sentinel: slot for slot, child in self.children.items()}
            ready = wait([*sentinels, self._wake_read, self._notes_read],
                         timeout=self.pause(next_beat))
            if self._wake_read in ready:
                os.read(self._wake_read, 64)
            if self._notes_read in ready:
                self.notes.read()
            self.send_events()
            self.apply_stop_requests()
            self.enforce_time_limits()
            for fd in ready:
                if fd in sentinels:
                    self.on_child_exit(sentinels[fd])

    def pause(self, next_beat: float) -> float:
        """Sleep until the next heartbeat or the nearest hard time limit."""
        wake_at = min([next_beat, *(d for d in self.deadlines if d > 0)])
        if self.app.broker.events.notes:
            wake_at = min(wake_at, self.events_sent_at + EVENTS_FLUSH)
        if self.next_due is not None:
            wake_at = min(wake_at, time.monotonic() + self.next_due - time.time())
        return max(0.0, wake_at - time.monotonic())

    def send_events(self, now: bool = False) -> None:
        """Send the children's notes, at most every EVENTS_FLUSH seconds (one script
        call for all the tasks that ended meanwhile)."""
        events = self.app.broker.events
        if not events.notes or (not now and
                                time.monotonic() - self.events_sent_at < EVENTS_FLUSH):
            return
        try:
            events.flush(self.app.broker.client)
        except REDIS_DOWN as exc:  # kept, and sent once Redis is back
            self.outage.failed(exc)
        except Exception:  # events are best effort: never take the worker down
            log.exception("task events dropped")
            events.take()
        self.events_sent_at = time.monotonic()

    def spawn(self, slot: int) -> None:
        self.deadlines[slot] = 0.0
        start = slot * TASK_ID_SIZE
        self.running_ids[start:start + TASK_ID_SIZE] = b"\0" * TASK_ID_SIZE
        child = Child(self.app, self.worker_id, slot, self.queues, self.max_tasks_per_child,
                      self.deadlines, self.running_ids, self._wake_write, self.concurrency,
                      self._notes_write)
        process = _fork.Process(target=child.run, name=f"Child-{slot}", daemon=False)
        process.start()
        self.children[slot] = process
        log.debug("child %d started with pid %d", slot, process.pid)

    def on_child_exit(self, slot: int) -> None:
        process = self.children.pop(slot)
        process.join()
        self.deadlines[slot] = 0.0  # not respawned during a shutdown: nothing to watch
        how = describe_exit(process.exitcode)
        error: Exception
        if slot in self.timed_out:
            self.timed_out.discard(slot)
            mode, error = "timeout", TimeLimitExceeded(
                f"Task ran past its hard time limit; child killed ({how})")
        else:
            if slot in self.terminated:
                self.terminated.discard(slot)
                log.info("child %d (pid %d) stopped for a revoked task: %s", slot, process.pid, how)
            elif process.exitcode != 0:
                log.error("child %d (pid %d) died: %s", slot, process.pid, how)
            mode = "shutdown" if self.stop_requests >= 2 else "lost"
            error = WorkerLostError(f"Worker exited prematurely: {how}")
        held = [self.app.keys.inflight(queue, self.worker_id, slot) for queue in self.queues]
        if not self.retrying(lambda: [self.recover_list(inflight, inflight, mode, error)
                                      for inflight in held]):
            return
        if not self.stop_requests:
            self.spawn(slot)

    def queue_due_messages(self) -> None:
        """Move due scheduled messages of our queues to their lists (any worker consuming
        a queue may; each message moves once)."""
        try:
            self.next_due = self.app.broker.move_due(self.queues)
        except REDIS_DOWN as exc:
            self.outage.failed(exc)

    def terminate_revoked(self) -> None:
        """Kill the children whose running task was revoked with terminate=True."""
        running: dict[int, str] = {}
        for slot in self.children:
            start = slot * TASK_ID_SIZE
            raw_id = bytes(self.running_ids[start:start + TASK_ID_SIZE]).rstrip(b"\0")
            if raw_id:
                running[slot] = raw_id.decode(errors="replace")
        if not running:
            return
        pipe = self.app.broker.client.pipeline(transaction=False)
        for task_id in running.values():
            pipe.hmget(self.app.keys.task(task_id), "status", "terminate")
        try:
            answers = pipe.execute()
        except REDIS_DOWN as exc:
            self.outage.failed(exc)
            return
        for (slot, task_id), (status, terminate) in zip(running.items(), answers, strict=True):
            process = self.children.get(slot)
            if status == states.REVOKED.encode() and terminate == b"1" and process and process.pid:
                log.warning("Task %s revoked with terminate: killing child %d", task_id, slot)
                self.terminated.add(slot)
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)

    def enforce_time_limits(self) -> None:
        """Kill children whose task is past its hard limit; their exit is then handled."""
        now_ = time.monotonic()
        for slot, process in self.children.items():
            deadline = self.deadlines[slot]
            if 0 < deadline <= now_ and slot not in self.timed_out and process.pid:
                log.error("child %d (pid %d): hard time limit exceeded, killing it",
                          slot, process.pid)
                self.timed_out.add(slot)
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)

    def apply_stop_requests(self) -> None:
        if self.stop_requests == self.stops_applied:
            return
        self.stops_applied = self.stop_requests
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

    # -- Redis, which may be away -------------------------------------------
    def retrying(self, step: Callable[[], Any], give_up_after_stops: int = 2) -> bool:
        """Run ``step`` until Redis answers; False if enough stop requests came first
        (by default a cold shutdown: children's work must be recovered if at all possible).

        Waits on the signal pipe, so a shutdown request is seen at once.
        """
        while True:
            try:
                step()
            except Exception as exc:  # a cluster client that finds no node raises its own kind
                if not is_transient(exc):
                    raise
                delay = self.outage.failed(exc)
                if self.stop_requests >= give_up_after_stops:
                    log.error("cold shutdown while Redis is away: what the children held "
                              "stays in their in-flight lists for recovery")
                    return False
                if self._wake_read in wait([self._wake_read], timeout=delay):
                    os.read(self._wake_read, 64)
                    self.apply_stop_requests()
                continue
            self.outage.ok()
            return True

    def wait_for_redis(self) -> bool:
        """Wait until Redis answers at start-up; False if told to stop meanwhile."""
        return self.retrying(lambda: self.app.broker.client.ping(), give_up_after_stops=1) and \
            self.stop_requests == 0

    def name_taken(self) -> bool:
        """Two live workers must never share an id: they would share in-flight lists."""
        if self.app.broker.client.exists(self.app.keys.worker(self.worker_id)):
            log.critical("a worker named %s is already running (its heartbeat is fresh); "
                         "give this one another name with -n", self.worker_id)
            return True
        return False

    # -- recovery -----------------------------------------------------------
    def held_lists(self, worker_id: str, concurrency: int, queues: list[str]) -> list[str]:
        """The in-flight lists a worker may hold: one per queue it consumes and child."""
        return [self.app.keys.inflight(queue, worker_id, slot)
                for queue in queues for slot in range(concurrency)]

    def recover_list(self, inflight: str, owner: str, mode: str, error: Exception,
                     worker_id: str = "") -> int:
        return recover_list(self.app, inflight, owner, mode, error, worker_id or self.worker_id)

    def previous_registration(self) -> tuple[int, list[str]]:
        """What a previous run under this worker's name registered (0, [] if none):
        the in-flight lists it may have left behind follow from it."""
        raw = self.app.broker.client.hget(self.app.keys.workers(), self.worker_id)
        return registration(raw) if raw else (0, [])

    def recover_own_leftovers(self, previous: tuple[int, list[str]]) -> None:
        """A worker restarted under the same name first takes back what it held, in the
        lists its previous run registered and in the ones it uses now."""
        concurrency, queues = previous
        held = self.held_lists(self.worker_id, concurrency, queues)
        held += self.held_lists(self.worker_id, self.concurrency, self.queues)
        for inflight in dict.fromkeys(held):
            self.recover_list(inflight, inflight, "lost",
                              WorkerLostError("Worker restarted while running the task"))

    def reap_dead_workers(self) -> None:
        """Recover the work of workers whose heartbeat has lapsed (a host died).

        Every live worker does this; recovery moves each message at most once and
        leaves a worker alone again as soon as its heartbeat is back.
        """
        keys, client = self.app.keys, self.app.broker.client
        settle = 2 * self.app.conf.worker_heartbeat_interval + self.outage.max_delay
        if self.connected_since is None or time.monotonic() - self.connected_since < settle:
            return  # after an outage every heartbeat may have lapsed: let the others beat first
        try:
            registry = cast(dict[bytes, bytes], client.hgetall(keys.workers()))
            known = {k.decode(): registration(v) for k, v in registry.items()}
            known.pop(self.worker_id, None)
            pipe = client.pipeline(transaction=False)
            for worker_id in known:
                pipe.exists(keys.worker(worker_id))
            alive = pipe.execute()
            for (worker_id, entry), is_alive in zip(known.items(), alive, strict=True):
                if not is_alive:
                    self.recover_dead_worker(worker_id, *entry)
        except REDIS_DOWN as exc:
            self.outage.failed(exc)
        except Exception:  # a bug here must not take this worker down with the dead one
            log.exception("recovering dead workers failed; will try again")

    def recover_dead_worker(self, worker_id: str, concurrency: int, queues: list[str]) -> None:
        keys, client = self.app.keys, self.app.broker.client
        owner = keys.worker(worker_id)
        error = WorkerLostError(f"Worker {worker_id} stopped sending heartbeats")
        held = self.held_lists(worker_id, concurrency, queues)
        handled = sum(self.recover_list(inflight, owner, "lost", error, worker_id)
                      for inflight in held)
        if client.exists(owner):
            return  # it came back meanwhile
        if not self.any_exists(held):
            client.hdel(keys.workers(), worker_id)
            client.hdel(keys.counters(), f"done\t{worker_id}")  # its tally goes with it
        log.warning("worker %s lost its heartbeat: recovered %d task(s)", worker_id, handled)

    def any_exists(self, keys: list[str]) -> bool:
        """Whether any of ``keys`` exists (one EXISTS each: on a cluster they spread)."""
        pipe = self.app.broker.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return any(pipe.execute())

    # -- presence -----------------------------------------------------------
    def heartbeat(self) -> None:
        """Announce this worker; if the beats stop, the key lapses and others recover its work."""
        keys, conf = self.app.keys, self.app.conf
        pipe = self.app.broker.client.pipeline(transaction=True)  # all {prefix}: one slot
        pipe.hset(keys.worker(self.worker_id), mapping={
            "id": self.worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "concurrency": self.concurrency, "queues": ",".join(self.queues),
            "heartbeat": now()})
        pipe.expire(keys.worker(self.worker_id), max(1, round(conf.worker_lost_after)))
        pipe.hset(keys.workers(), self.worker_id,
                  json.dumps({"concurrency": self.concurrency, "queues": self.queues}))
        try:
            pipe.execute()
        except REDIS_DOWN as exc:
            self.outage.failed(exc)
            self.connected_since = None
        else:
            self.outage.ok()
            if self.connected_since is None:
                self.connected_since = time.monotonic()

    def say_goodbye(self) -> None:
        self.notes.read()  # what the children wrote before they exited
        self.send_events(now=True)
        self._say_goodbye()

    def _say_goodbye(self) -> None:
        """Leave the registry, unless messages are still held (then others recover them)."""
        keys, client = self.app.keys, self.app.broker.client
        with suppress(*REDIS_DOWN):
            held = self.any_exists(self.held_lists(self.worker_id, self.concurrency,
                                                   self.queues))
            pipe = client.pipeline(transaction=True)
            pipe.delete(keys.worker(self.worker_id))
            if not held:
                pipe.hdel(keys.workers(), self.worker_id)
                pipe.hdel(keys.counters(), f"done\t{self.worker_id}")
            pipe.execute()
        log.info("%s stopped.", self.worker_id)

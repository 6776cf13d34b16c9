"""The prefork worker: one supervisor process and N child processes.

Each child runs the loop in ``Child.run``: fetch a message into its own
in-flight list (BLMOVE), start it, run the function, then store the final state
and acknowledge in one step (``broker.finish``). The supervisor only watches:
it sends heartbeats, replaces children that die and, before replacing one,
recovers the messages the dead child held (``broker.recover``).

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
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import redis

from asyncq import states
from asyncq.broker import Message, now
from asyncq.exceptions import EncodeError, NotRegistered, WorkerLostError, exception_type_name
from asyncq.serialization import dumps
from asyncq.task import Request

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.task import Task

log = logging.getLogger("asyncq.worker")
_fork = multiprocessing.get_context("fork")
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
                 max_tasks: int):
        self.app = app
        self.worker_id = worker_id
        self.inflight = app.keys.inflight(worker_id, slot)
        self.queues = list(queues)
        self.max_tasks = max_tasks
        self.busy = False
        self.stopping = False

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """Warm stop: an idle child leaves now, a busy one after its task."""
        if self.stopping:
            return  # a repeated signal (for example to the whole process group)
        self.stopping = True
        if not self.busy:
            raise _Stop

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.app.reset_connection()  # a connection of our own, not the parent's
        parent = os.getppid()
        done = 0
        try:
            while not self.stopping and not (self.max_tasks and done >= self.max_tasks):
                if os.getppid() != parent:
                    log.error("supervisor gone: this child stops taking work")
                    return
                raw = self.fetch()
                if raw is not None:
                    self.busy = True
                    self.handle(raw)
                    done += 1
                    self.busy = False
        except _Stop:
            pass

    def fetch(self) -> bytes | None:
        """Take the next message; queues are rotated so that none is always first."""
        self.queues.append(self.queues.pop(0))
        try:
            return self.app.broker.fetch(self.queues, self.inflight,
                                         self.app.conf.worker_fetch_timeout)
        except redis.ConnectionError as exc:
            log.error("cannot reach Redis (%s); trying again in 1s", exc)
            time.sleep(1.0)
            return None

    def handle(self, raw: bytes) -> None:
        broker = self.app.broker
        try:
            message = Message.decode(raw)
            task = self.app.registered(message.task)
        except (ValueError, NotRegistered) as exc:
            self.dead_letter(raw, exc)
            return
        final = broker.start(message, self.inflight, self.worker_id, task.acks_late,
                             task.track_started)
        if final:
            log.warning("Task %s[%s] already %s: not run again", task.name, message.id, final)
            return
        log.info("Task %s[%s] received", task.name, message.id)
        fields = self.execute(task, message)
        broker.finish(message, self.inflight, fields, keep_result=not task.ignore_result)

    def execute(self, task: Task, message: Message) -> dict[str, str]:
        """Run the task; return the record fields of its final state."""
        request = Request(id=message.id, args=message.args, kwargs=message.kwargs,
                          hostname=self.worker_id, called_directly=False,
                          delivery_info={"routing_key": message.queue})
        started = time.monotonic()
        try:
            value = task.run_with(request, message.args, message.kwargs)
            result = dumps(value, f"the result of task {task.name!r}")
        except Exception as exc:
            log.error("Task %s[%s] raised %s: %s", task.name, message.id,
                      type(exc).__name__, exc)
            return failure_fields(exc, "" if isinstance(exc, EncodeError) else task_traceback(exc))
        runtime = time.monotonic() - started
        log.info("Task %s[%s] succeeded in %.3fs: %s", task.name, message.id, runtime,
                 _shorten(result))
        return {"status": states.SUCCESS, "result": result, "finished_at": now(),
                "runtime": f"{runtime:.6f}"}

    def dead_letter(self, raw: bytes, exc: Exception) -> None:
        """Set a message we cannot run aside; fail its task when we know its id."""
        task_id = _guess_id(raw)
        log.error("Message set aside in the dead-letter list (task id %s): %s", task_id, exc)
        failure = failure_fields(exc) if task_id else None
        self.app.broker.dead_letter(raw, self.inflight, failure, task_id)


def _guess_id(raw: bytes) -> str | None:
    """The task id of a message that is otherwise unusable, when one can be read."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    task_id = body.get("id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class Supervisor:
    """The worker's main process: starts, watches and replaces children."""

    def __init__(self, app: AsyncQ, options: WorkerOptions):
        self.app = app
        self.concurrency = (options.concurrency or app.conf.worker_concurrency
                            or os.cpu_count() or 1)
        self.queues = options.queues or [app.conf.task_default_queue]
        self.worker_id = options.hostname or f"asyncq@{socket.gethostname()}:{os.getpid()}"
        self.max_tasks_per_child = options.max_tasks_per_child
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.stop_requests = 0  # 1 = warm shutdown, 2 = cold shutdown
        self._wake_read, self._wake_write = os.pipe()

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
        if not self.wait_for_redis():
            return 1
        if self.name_taken():
            return 1
        self.recover_own_leftovers()
        for slot in range(self.concurrency):
            self.spawn(slot)
        log.info("%s ready.", self.worker_id)
        next_beat = 0.0
        while self.children:
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.app.conf.worker_heartbeat_interval
            sentinels = {child.sentinel: slot for slot, child in self.children.items()}
            pause = max(0.0, next_beat - time.monotonic())
            ready = wait([*sentinels, self._wake_read], timeout=pause)
            if self._wake_read in ready:
                os.read(self._wake_read, 64)
                self.apply_stop_requests()
            for fd in ready:
                if fd in sentinels:
                    self.on_child_exit(sentinels[fd])
        self.say_goodbye()
        return 1 if self.stop_requests >= 2 else 0

    def wait_for_redis(self) -> bool:
        """Wait, with capped backoff, until Redis answers; False if told to stop meanwhile."""
        delay = 0.5
        while not self.stop_requests:
            try:
                self.app.broker.client.ping()
                return True
            except redis.ConnectionError as exc:
                log.error("cannot reach Redis at %s (%s); retrying in %.1fs",
                          self.app.conf.broker, exc, delay)
                wait([self._wake_read], timeout=delay)
                delay = min(delay * 2, 10.0)
        return False

    def name_taken(self) -> bool:
        """Two live workers must never share an id: they would share in-flight lists."""
        if self.app.broker.client.exists(self.app.keys.worker(self.worker_id)):
            log.critical("a worker named %s is already running (its heartbeat is fresh); "
                         "give this one another name with -n", self.worker_id)
            return True
        return False

    def spawn(self, slot: int) -> None:
        child = Child(self.app, self.worker_id, slot, self.queues, self.max_tasks_per_child)
        process = _fork.Process(target=child.run, name=f"Child-{slot}", daemon=False)
        process.start()
        self.children[slot] = process
        log.debug("child %d started with pid %d", slot, process.pid)

    def on_child_exit(self, slot: int) -> None:
        process = self.children.pop(slot)
        process.join()
        if process.exitcode != 0:
            log.error("child %d (pid %d) died: %s", slot, process.pid,
                      describe_exit(process.exitcode))
        self.recover_slot(slot, f"Worker exited prematurely: {describe_exit(process.exitcode)}",
                          count=self.stop_requests < 2)
        if not self.stop_requests:
            self.spawn(slot)

    def apply_stop_requests(self) -> None:
        if self.stop_requests == 1:
            log.info("warm shutdown: finishing running tasks (signal again for a cold shutdown)")
            self.signal_children(signal.SIGTERM)
        elif self.stop_requests >= 2:
            log.warning("cold shutdown: killing children; acks-late tasks go back to the queue")
            self.signal_children(signal.SIGKILL)

    def signal_children(self, signum: int) -> None:
        for process in self.children.values():
            if process.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    # -- recovery -----------------------------------------------------------
    def recover_slot(self, slot: int, reason: str, count: bool = True) -> None:
        """Requeue or fail whatever the dead child of ``slot`` had taken."""
        self.recover_list(self.app.keys.inflight(self.worker_id, slot), reason, count)

    def recover_list(self, inflight: str, reason: str, count: bool = True) -> None:
        broker = self.app.broker
        failure = failure_fields(WorkerLostError(reason))
        for raw in broker.inflight_messages(inflight):
            try:
                message = Message.decode(raw)
            except ValueError as exc:
                broker.dead_letter(raw, inflight, None, None)
                log.error("garbled in-flight message set aside: %s", exc)
                continue
            outcome = broker.recover(message, inflight, self.app.conf.task_redelivery_limit,
                                     count, failure)
            log.warning("Task %s[%s] held by a lost child: %s", message.task, message.id, outcome)

    def recover_own_leftovers(self) -> None:
        """A worker restarted under the same name first takes back what it held."""
        pattern = self.app.keys.inflight(self.worker_id, 0)[:-1] + "*"
        for inflight in self.app.broker.client.scan_iter(match=pattern):
            self.recover_list(inflight.decode(), "Worker restarted while running the task")

    # -- presence -----------------------------------------------------------
    def heartbeat(self) -> None:
        """Announce this worker; the key's TTL lapses if the supervisor stops beating."""
        keys, conf = self.app.keys, self.app.conf
        pipe = self.app.broker.client.pipeline(transaction=True)
        pipe.hset(keys.worker(self.worker_id), mapping={
            "id": self.worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "concurrency": self.concurrency, "queues": ",".join(self.queues),
            "heartbeat": now()})
        pipe.expire(keys.worker(self.worker_id), max(1, int(conf.worker_heartbeat_interval * 3)))
        pipe.sadd(keys.workers(), self.worker_id)
        try:
            pipe.execute()
        except redis.ConnectionError as exc:
            log.error("heartbeat failed, Redis unreachable: %s", exc)

    def say_goodbye(self) -> None:
        with suppress(redis.ConnectionError):
            pipe = self.app.broker.client.pipeline(transaction=True)
            pipe.delete(self.app.keys.worker(self.worker_id))
            pipe.srem(self.app.keys.workers(), self.worker_id)
            pipe.execute()
        log.info("%s stopped.", self.worker_id)

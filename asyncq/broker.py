"""The life of a task in Redis: enqueue, fetch, start, finish (store + ack), recover.

Read this file top to bottom to follow one task; each step runs the Lua script
named after it in ``asyncq/lua/``. The keys are laid out for Redis Cluster
(see ``keys.py``): a task's record lives in a slot of its own, tagged by its
id, and a queue's lists, in-flight lists and scheduled set share the queue's
slot. So every script touches one slot, and a step that changes both a record
and a queue is two parts, a record part and a queue part, ordered so that a
crash between them loses nothing:

1. ``enqueue``  - write the PENDING record, then push the message.
2. ``fetch``    - move messages of one queue into the child's in-flight list
                  for that queue; they stay there until acknowledged.
3. ``start``    - mark the record STARTED, or skip the message if its task
                  already has a final state (a duplicate delivery).
4. ``finish``   - store the final state, then remove the message from the
                  in-flight list (the acknowledgement). A crash in between
                  leaves a final record and a held message: the message is
                  redelivered or recovered, finds the final state, and is
                  dropped. Every way a task ends (its own outcome, a retry, a
                  dead letter, a lost child) goes store first, then ack.
5. ``recover``  - a child died holding a message: put it back on its queue
                  (acks-late, or never started) or end it FAILURE WorkerLostError.

How the parts travel (``Broker._in_stages``): on a single Redis, the parts of a
step go in one pipeline, run in order on one connection: one round trip. On a
cluster they go one stage after the other, each stage a pipeline, because a
cluster pipeline sends to every node at once and the nodes run their parts in
no set order.

A canvas step's follow-ups (queue the next step of a chain, count a chord
member and queue the body when complete, end the rest after a step that did not
succeed, queue its errbacks) live in other slots. Every path that stores a
final state asks ``follow_ups`` for them, from what the record says follows the
task (field ``then``, see ``workflow.py``): a plan, a list of commands the
broker runs without reading. The record part of ``finish`` (and of a revoke, a
recovery, a dead letter) stores the plan in the record (field ``after``)
together with the final state, and only if it stored the final state; the
broker then runs the plan's commands, each on its own slot, and last clears
``after`` and acknowledges. Whoever finds a final
record still holding ``after`` (a redelivered copy at ``start``, a recoverer, a
retried ``finish``) runs the plan again and clears it: after a crash, a
follow-up may happen twice (a chain's next step queued twice, which its own
record then runs once in all but a narrow race), but it is never lost. A chord
member is counted in a set, so counting it twice is harmless.

Celery's counterpart is kombu's Redis transport plus its Redis result backend.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any, NamedTuple, cast

import redis
from redis.cluster import RedisCluster

from asyncq import damage, states, workflow
from asyncq.connection import RedisClient, eviction_risk, is_refusal
from asyncq.events import Events
from asyncq.exceptions import EvictingRedis, exception_type_name
from asyncq.keys import PRIORITIES, Keys
from asyncq.message import Message
from asyncq.replies import raw_list, text, text_map, texts
from asyncq.scripts import Command, MergedCalls, Script, execute
from asyncq.serialization import dumps

log = logging.getLogger("asyncq.worker")

# What ``start`` answers for a task another child is running now (one run per task id).
ELSEWHERE = "elsewhere"
# What ``finish_many`` gives for a fetch it did not send.
NOT_SENT = object()

# A waiter told "SUCCESS <result JSON>" has its answer without reading the record.
SUCCESS_NOTICE = b"SUCCESS "
NOTICE_MAX_RESULT = 64 * 1024  # larger results are read from the record instead


class Submission(NamedTuple):
    """One task of a canvas to enqueue: its record is written; its message queued
    unless None (a later step); ``then`` is what follows it (see workflow.py)."""

    task_id: str
    task: str
    queue: str
    message: bytes | None
    priority: int = 0
    then: str = ""
    due: float | None = None


class Ending(NamedTuple):
    """A task's end for ``finish_many``: its message, the child's in-flight list it is
    held in, its final fields, whether the result is kept, and what follows it in
    its canvas (None: read it from the record)."""

    message: Message
    inflight: str
    fields: Mapping[str, str]
    keep_result: bool
    then: str | None


class LeftoversHeld(Exception):
    """The child's in-flight list holds messages between batches: an answer lost on
    the way (a BLMOVE retried by the client, an ack lost in a failover). The child
    recovers them (``Child.reclaim``) before it takes more."""

    def __init__(self, inflight: str):
        super().__init__(inflight)
        self.inflight = inflight


def now() -> str:
    """Timestamps are stored as Unix seconds with microseconds."""
    return f"{time.time():.6f}"


def flat(fields: Mapping[str, str]) -> list[str]:
    """Field/value pairs as Redis takes them: [field, value, field, value, ...]."""
    return [item for pair in fields.items() for item in pair]


def failure_fields(exc: BaseException, tb: str = "") -> dict[str, str]:
    """The record fields of a FAILURE: the exception's type, message and traceback."""
    return {"status": states.FAILURE, "exc_type": exception_type_name(exc),
            "exc_message": str(exc), "traceback": tb, "finished_at": now()}


def final_notice(fields: Mapping[str, str]) -> str:
    """What the task's channel is told: the result itself when it succeeded (and is small)."""
    result = fields.get("result")
    if fields.get("status") == states.SUCCESS and result is not None \
            and len(result) <= NOTICE_MAX_RESULT:
        return SUCCESS_NOTICE.decode() + result
    return "final"


def _fetched(answer: Any, with_starts: bool) -> tuple[list[bytes], list[Any]]:
    """fetch.lua's answer: the messages, and per message its start's answer (None: not
    started)."""
    if not with_starts:
        messages = raw_list(answer)
        return messages, [None] * len(messages)
    taken, started = answer
    return raw_list(taken), [state[0] if state else None for state in started]


def _script_text(value: Any) -> str:
    """A plan's commands are JSON: a script's text (bytes, see scripts.py) goes as text."""
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(f"{type(value).__name__} in a follow-up plan")


def _parse_plan(plan: str) -> tuple[list[list[Command]], Command]:
    """A stored follow-up plan: its stages of commands, and the command that clears it.
    A plan no asyncq wrote (damaged) reads as nothing to do, logged."""
    try:
        stages, clear = json.loads(plan)
        return [[tuple(command) for command in stage] for stage in stages], tuple(clear)
    except (ValueError, TypeError) as exc:
        log.error("a task record holds a damaged follow-up plan (%s): ignored", exc)
        return [], ("ECHO", "damaged plan ignored")


class Broker:
    """All of asyncq's Redis traffic: queues (lists) and task records (hashes)."""

    def __init__(self, client: RedisClient, keys: Keys, record_ttl: int,
                 result_ttl: int, events_max_length: int = 0, allow_eviction: bool = False):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.keys = keys
        self.record_ttl = record_ttl  # safety TTL while a task is queued or running
        self.result_ttl = result_ttl  # how long final results are kept
        self.events = Events(keys, events_max_length)  # notes sent in batches
        self._announced: set[str] = set()  # queues this process added to keys.queues()
        self._waiters = threading.local()  # one pub/sub connection per thread, for get()
        self._damaged: set[str] = set()  # queues left alone for now (see fetch)
        self._damaged_since = 0.0
        self.allow_eviction = allow_eviction
        self._eviction: tuple[str | None] | None = None  # what eviction_risk found, once

    # -- a Redis that may evict keys is refused ---------------------------------
    def eviction_warning(self) -> str | None:
        """Why this Redis may evict asyncq's keys when full, or None (read once per
        connection; None too where INFO is not allowed: nothing to go on)."""
        if self._eviction is None:
            try:
                self._eviction = (eviction_risk(self.client),)
            except redis.ResponseError:  # INFO refused (ACL): not known, not refused
                self._eviction = (None,)
        return self._eviction[0]

    def refuse_if_evicting(self) -> None:
        """Queueing work on a Redis that may evict it is refused, unless allowed."""
        risk = self.eviction_warning()
        if risk and not self.allow_eviction:
            raise EvictingRedis(
                f"{risk}. asyncq refuses to queue work there: set maxmemory-policy to "
                "noeviction (CONFIG SET maxmemory-policy noeviction, or redis.conf), or set "
                "broker_allow_eviction = True to accept that tasks may be lost")

    # -- how the parts of a step travel --------------------------------------
    def _in_stages(self, *stages: Sequence[Command]) -> list[Any]:
        """Run commands stage by stage; returns their answers, in order.

        Within a stage, order does not matter; each stage must be done before the
        next begins. On a single Redis all stages go in one pipeline: one
        connection runs them in order, in one round trip. (No MULTI: the steps
        are ordered so that stopping between two parts is safe, as it must be on
        a cluster, and MULTI/EXEC would double the commands per step.) On a
        cluster each stage is one pipeline, sent when the one before has
        answered: a cluster pipeline writes to every node at once. A command
        alone goes straight to its server (a cluster pipeline would first ask
        COMMAND GETKEYS for a script).
        """
        if not self.cluster:
            return self._send_merged(stages)
        return [answer for stage in stages for answer in self._send(stage)]

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [execute(self.client, commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            execute(pipe, command)
        return pipe.execute()

    def _send_merged(self, stages: Sequence[Sequence[Command]]) -> list[Any]:
        """All stages in one pipeline, each stage's calls of one script merged into one
        (``MergedCalls``). As a pipeline does, every command runs and the first error
        is raised after."""
        merged = [MergedCalls(stage) for stage in stages]
        commands = [command for stage in merged for command in stage.commands]
        if len(commands) == 1:
            sent = [execute(self.client, commands[0])]
        else:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                execute(pipe, command)
            sent = pipe.execute(raise_on_error=False)
        answers: list[Any] = []
        for stage in merged:
            answers += stage.answers(sent[:len(stage.commands)])
            sent = sent[len(stage.commands):]
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def _run(self, command: Command) -> Any:
        """One command alone; its answer."""
        return execute(self.client, command)

    # ``_eval(script, keys, args)`` is ``script.command(keys, args)``: a script's part
    # of a step, as tests stage one by hand.
    _eval = staticmethod(Script.command)

    # -- 1. enqueue ---------------------------------------------------------
    _enqueue = Script.load("enqueue")

    def enqueue(self, task_id: str, task: str, queue: str, message: bytes,
                eta: float | None = None, priority: int = 0, fresh: bool = False) -> None:
        """Write the PENDING record, then queue the message (or schedule it): a worker
        that takes the message always finds the record. ``fresh`` first clears a
        record left under this id (a task_id given again)."""
        self.refuse_if_evicting()
        due = f"{eta:.6f}" if eta is not None and eta > time.time() else ""
        record = self._record_pending(task_id, task, queue, due, fresh)
        push = ("ZADD", self.keys.scheduled(queue), due, message) if due \
            else ("LPUSH", self.keys.queue(queue, priority), message)
        self._all_or_nothing([record], [self.keys.task(task_id)], [push],
                             self._announce([queue]))

    def enqueue_all(self, entries: Sequence[Submission], beside: Sequence[Command] = ()
                    ) -> None:
        """The tasks of a canvas: all records (and ``beside``: the messages its chords
        queue when complete) are written before any message is queued."""
        self.refuse_if_evicting()
        pushes: list[Command] = []
        records = list(beside)
        for entry in entries:
            due = f"{entry.due:.6f}" if entry.due is not None and entry.due > time.time() \
                else ""
            records.append(self._record_pending(entry.task_id, entry.task, entry.queue, due,
                                                True, entry.then))
            if entry.message is not None:
                pushes.append(("ZADD", self.keys.scheduled(entry.queue), due, entry.message)
                              if due else
                              ("LPUSH", self.keys.queue(entry.queue, entry.priority),
                               entry.message))
        written = [command[1] for command in beside] + \
            [self.keys.task(entry.task_id) for entry in entries]
        self._all_or_nothing(records, written, pushes,
                             self._announce(entry.queue for entry in entries))

    def _all_or_nothing(self, records: Sequence[Command], written: Sequence[str],
                        pushes: Sequence[Command], announce: Sequence[Command]) -> None:
        """Stage one writes the records (the keys ``written``), stage two queues the
        messages (``pushes``, LPUSH or ZADD): all of it, or none. When Redis refuses
        any part (out of memory, read-only, a key of the wrong type), the messages it
        queued are taken back and the records deleted (LREM, ZREM and DEL free memory:
        a full Redis takes them), then the refusal is raised. A worker that took such a
        message in between runs it all the same. A lost connection is raised as it
        is: what Redis did then cannot be known (the record expires, see README).
        ``announce`` (the SADD of new queue names, for the monitor) may fail alone."""
        if self.cluster:
            answers = self._settle(records)
            if not any(isinstance(answer, Exception) for answer in answers):
                answers += self._settle([*pushes, *announce])
        else:  # one pipeline, run in order: one round trip
            answers = self._settle([*records, *pushes, *announce])
        done = len(records) + len(pushes)
        refused = [answer for answer in answers[:done] if isinstance(answer, Exception)]
        if not refused:
            if any(isinstance(answer, Exception) for answer in answers[done:]):
                self._announced -= {queue for command in announce for queue in command[2:]}
            return
        queued = answers[len(records):done]  # none on a cluster that refused stage one
        take_back: list[Command] = [
            ("LREM", key, 1, message) if kind == "LPUSH" else ("ZREM", key, message)
            for (kind, key, *_, message), answer in zip(pushes, queued, strict=False)
            if not isinstance(answer, Exception)]
        with suppress(redis.RedisError):
            self._settle([*take_back, *[("DEL", key) for key in written]])
        raise refused[0]

    def _settle(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands as ``_send`` does, with each refusal in place of its answer
        rather than raised."""
        if len(commands) == 1:
            try:
                return [self._run(commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            execute(pipe, command)
        return cast(list[Any], pipe.execute(raise_on_error=False))

    def _record_pending(self, task_id: str, task: str, queue: str, due: str,
                        fresh: bool | str, then: str = "") -> Command:
        mode = fresh if isinstance(fresh, str) else int(fresh)
        # A task due later keeps its record until then, and task_record_ttl after.
        ttl = self.record_ttl + (math.ceil(float(due) - time.time()) if due else 0)
        return self._enqueue.command([self.keys.task(task_id)],
                                     [task, queue, now(), ttl, due, mode, then])

    def record_if_new(self, task_id: str, task: str, queue: str) -> None:
        """A PENDING record for a periodic run, unless the run's record exists."""
        self._run(self._record_pending(task_id, task, queue, "", "new"))

    def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of asyncq's scripts alone (for the scheduler, which has its own)."""
        return self._run(script.command(keys, args))

    def _announce(self, queues: Iterable[str]) -> list[Command]:
        """Add queues new to this process to the app's set of queue names (for the
        monitor): one SADD the first time a process sends to a queue, none after."""
        new = set(queues) - self._announced
        self._announced |= new
        return [("SADD", self.keys.queues(), *sorted(new))] if new else []

    _move_due = Script.load("move_due")

    def move_due(self, queues: Iterable[str], limit: int = 500) -> float | None:
        """Queue the scheduled messages of ``queues`` now due; returns when the next
        one is due. Each queue's set and lists share a slot: one script per message."""
        upcoming: list[float] = []
        for queue in queues:
            scheduled = self.keys.scheduled(queue)
            for raw in raw_list(self.client.zrangebyscore(scheduled, "-inf", time.time(),
                                                          0, limit)):
                try:
                    message = Message.decode(raw)
                except ValueError:  # cannot happen for messages we wrote: set aside
                    if self.client.zrem(scheduled, raw):  # whoever removes it keeps it
                        self.client.lpush(self.keys.dead_letters(), raw)
                    continue
                self._run(self._move_due.command(
                    [scheduled, self.keys.queue(queue, message.priority)], [raw]))
            first = cast("list[tuple[bytes, float]]",
                         self.client.zrange(scheduled, 0, 0, withscores=True))
            upcoming += [score for _, score in first]
        return min(upcoming, default=None)

    # -- 2. fetch -----------------------------------------------------------
    _fetch = Script.load("fetch", uses=("start",))

    def fetch(self, queues: list[str], worker_id: str, slot: int, timeout: float,
              prefetch: int = 1, share: int = 1, idle: Callable[[], None] | None = None,
              answered: tuple[str, Any] | None = None, start_spec: str = ""
              ) -> tuple[str, list[bytes], list[Any]]:
        """Move up to ``prefetch`` messages of one queue into the child's in-flight list
        for that queue; returns that list's key and the messages, in the order to
        run them. The first queue that has messages gives them all, highest
        priority first.

        A message is never only in a Python variable: it is either on its queue or
        on an in-flight list, so a crash here loses nothing (taken but not started,
        it goes back to its queue). ``share``, the number of children of the worker,
        keeps one child from taking more than its part of a short queue. When every
        list is empty, call ``idle`` (a child sends its task events), then block
        (BLMOVE) on the first queue's own list for up to ``timeout``. ``answered``: a
        queue whose ``fetch_command`` was sent already (with a child's held ends), and
        what it answered. ``start_spec`` (from ``start_spec``): the messages to start in
        the same script; the third item returned is, per message, what its start
        answered (for ``started``), None where it was not started.
        """
        if self._damaged and time.monotonic() - self._damaged_since > 5:
            self._damaged.clear()  # look at them again: repaired meanwhile?
        usable = [queue for queue in queues if queue not in self._damaged]
        for queue in usable:
            inflight, command = self.fetch_command(queue, worker_id, slot, prefetch, share,
                                                   start_spec)
            try:
                if answered is not None and answered[0] == queue:
                    taken = answered[1]
                else:
                    taken = self._run(command)
            except redis.ResponseError as exc:
                self._skip_damaged(queue, exc)
                continue
            if isinstance(taken, int):
                raise LeftoversHeld(inflight)
            messages, started = _fetched(taken, bool(start_spec))
            if messages:
                return inflight, messages, started
        if not usable:
            time.sleep(timeout)  # every queue damaged: look again later
            self._damaged.clear()
            return "", [], []
        if idle is not None:
            idle()
        inflight = self.keys.inflight(usable[0], worker_id, slot)
        # BLMOVE takes a timeout in seconds as a float (Redis 6+); redis-py's hint says
        # int, but it sends the value as is. Rounding would change its meaning (0 blocks
        # forever), so the float goes through unchanged.
        try:
            raw = self.client.blmove(self.keys.queue(usable[0]), inflight, cast(int, timeout),
                                     "RIGHT", "LEFT")
        except redis.ResponseError as exc:
            self._skip_damaged(usable[0], exc)
            raw = None
        return (inflight, [], []) if raw is None else (inflight, raw_list([raw]), [None])

    def fetch_command(self, queue: str, worker_id: str, slot: int, prefetch: int = 1,
                      share: int = 1, start_spec: str = "") -> tuple[str, Command]:
        """The child's in-flight list for ``queue``, and the script call that fills it."""
        inflight = self.keys.inflight(queue, worker_id, slot)
        lists = [self.keys.queue(queue, priority) for priority in reversed(PRIORITIES)]
        return inflight, self._fetch.command([inflight, *lists],
                                             [prefetch, share, now(), start_spec])

    def start_spec(self, worker_id: str, show: Mapping[str, str], extended: bool) -> str:
        """Which messages ``fetch`` starts in its own script, as ``start_command`` would
        (acks-late, no ``expires``): ``show`` maps each task a child may start with its
        batch to the status its start shows. On a cluster, '': the records are in
        other slots than the queue."""
        if self.cluster or not show:
            return ""
        before, _, after = self.keys.task("\0").partition("\0")
        return json.dumps({"worker": worker_id, "ttl": str(self.record_ttl),
                           "record": [before, after], "show": dict(show),
                           "call": extended})

    def _skip_damaged(self, queue: str, exc: redis.ResponseError) -> None:
        """A queue whose keys Redis refuses to read as lists (WRONGTYPE: not written by
        asyncq) is left alone for a while, logged once (``damage.skip``, as every reader
        of damaged data); the others go on."""
        if is_refusal(exc):
            raise exc  # full or busy: not the queue's fault
        damage.skip(self.keys.queue(queue), "", f"not consumed until repaired: {exc}")
        self._damaged.add(queue)
        self._damaged_since = time.monotonic()

    _throttle = Script.load("throttle")

    def throttle(self, message: Message, inflight: str, interval: float) -> float:
        """Take the next run slot of a rate-limited task: 0 to run it now, else the time
        its message waits until in the scheduled set (no longer held by the child)."""
        rate = self.keys.rate(message.queue, message.task)
        answer = self._run(self._throttle.command(
            [rate, f"{rate}:taken", inflight, self.keys.scheduled(message.queue)],
            [message.raw, message.id, f"{time.time():.6f}", f"{interval:.6f}"]))
        return float(answer)

    # -- 3. start -----------------------------------------------------------
    _start = Script.load("start")

    def start(self, message: Message, inflight: str, worker_id: str, acks_late: bool,
              track_started: bool, extended: bool = False) -> tuple[str | None, str]:
        """Record that a child began the task, as its owner (``inflight`` names the
        run): (None, what follows it in its canvas). When it has a final state
        already: (that state, ''), after dropping the message (and running
        follow-ups a crash left undone). When another run owns it: (ELSEWHERE,
        that run's owner); the caller defers this copy."""
        return self.started(message, inflight, self._run(self.start_command(
            message, inflight, worker_id, acks_late, track_started, extended)))

    def start_command(self, message: Message, inflight: str, worker_id: str, acks_late: bool,
                      track_started: bool, extended: bool = False) -> Command:
        """The script call of ``start``, to send on its own or with the previous task's
        finish (``finish_and_start``: one round trip for both)."""
        return self._start.command(
            [self.keys.task(message.id)],
            [worker_id, now(), self.record_ttl, int(acks_late),
             states.STARTED if track_started else "", message.raw if extended else "",
             inflight])

    def start_many(self, starts: Sequence[Command]) -> list[Any]:
        """Several ``start_command`` calls in one round trip (a child's batch); their
        answers, for ``started``."""
        return self._in_stages(starts)

    def started(self, message: Message, inflight: str, answer: Any) -> tuple[str | None, str]:
        """What ``start``'s script answered, as ``start`` returns it."""
        if not isinstance(answer, list):
            return None, text(answer) or ""
        status, detail = texts(answer)
        if not status:
            return ELSEWHERE, detail or ""
        self._follow_up_then_ack(message.raw, inflight, detail or "")
        return status, ""

    _defer = Script.load("defer")

    def defer(self, message: Message, inflight: str, delay: float) -> bool:
        """Set a copy of a running task's message aside in the scheduled set for
        ``delay`` seconds; False if this child no longer held it."""
        return bool(self._run(self._defer.command(
            [inflight, self.keys.scheduled(message.queue)],
            [message.raw, f"{time.time() + delay:.6f}"])))

    def owns(self, task_id: str, run: str) -> bool:
        """Whether the run ``run`` (a child's in-flight list) still owns the task: no
        other run took it over, and nobody ended it meanwhile."""
        status, owner = texts(self.client.hmget(self.keys.task(task_id), "status", "owner"))
        return status not in states.READY_STATES and owner == run

    def holds(self, message: Message, inflight: str) -> bool:
        """Whether the message is still in the child's in-flight list (recovery moves
        it away from a worker presumed dead)."""
        return self._run(("LPOS", inflight, message.raw)) is not None

    def update_state(self, task_id: str, state: str, meta: Any) -> bool:
        """Store a custom state (such as PROGRESS) and its meta as their own fields, in
        a record that exists and is not final.

        Final states come only from the task's return or exception, so that each
        task has exactly one, with a result or an error to match it.
        """
        if state in states.READY_STATES:
            raise ValueError(f"update_state cannot set the final state {state}: "
                             "return a value or raise an exception instead")
        fields = {"status": state, "meta": dumps(meta, f"the meta of state {state!r}")}
        answer = self._run(self._store_state(task_id, fields, ttl="", notice="update"))
        return bool(answer[0])

    # -- 4. finish: store the final state, then acknowledge ---------------------
    _store = Script.load("store")

    def _store_state(self, task_id: str, fields: Mapping[str, str], ttl: int | str,
                     notice: str = "final", plan: str = "", owner: str = "") -> Command:
        """The command that stores a state unless the task has a final one, or another
        run than ``owner`` owns it (``store.lua``)."""
        return self._store.command([self.keys.task(task_id)],
                                   [ttl, self.keys.done_channel(task_id), notice, plan, owner,
                                    *flat(fields)])

    def end_command(self, task_id: str, fields: Mapping[str, str]) -> Command:
        """The command that ends a task running nowhere (the rest of a failed chain, a
        chord body) unless it is final; for a canvas's follow-up plan."""
        return self._store_state(task_id, fields, self.result_ttl)

    # -- what a final state sets off in a workflow ----------------------------
    def follow_ups(self, task_id: str, then: str | None, fields: Mapping[str, str]
                   ) -> list[list[Command]]:
        """The one place that decides what a task's final state sets off in its canvas
        (``then``: the record's field; None = read it), in stages. Success takes the
        workflow on; any other final state ends every task waiting for this one,
        REVOKED or FAILURE with its error, then queues the errbacks, which read
        those records (see workflow.py)."""
        if then is None:
            then = text(self.client.hget(self.keys.task(task_id), "then")) or ""
        plan = workflow.load_then(then)
        status = fields.get("status")
        if not plan or status not in states.READY_STATES:
            return []
        if status == states.SUCCESS:
            return [workflow.on_success(self.keys, plan, task_id, fields.get("result", "null"),
                                        self.record_ttl)]
        ended, errbacks = self._waiting_on(plan, task_id)
        return [[self.end_command(other, workflow.passed_on(fields, task_id, past_chord))
                 for other, past_chord in ended],
                workflow.errback_pushes(self.keys, errbacks, fields)]

    def _waiting_on(self, plan: Mapping[str, Any], task_id: str
                    ) -> tuple[list[tuple[str, bool]], list[tuple[dict[str, Any], str]]]:
        """Every task that waits, directly or through others, on the task whose ``then``
        is ``plan``, each with whether it comes at or after a chord's body (which a
        revoked member fails rather than revokes, as in Celery); and the errbacks to
        run, each with the id it is called with: the task's own, and those of the
        bodies of the chords whose header it is in (as Celery calls them when a
        member fails; not those of chords further on, which never started)."""
        errbacks = [(body, task_id) for body in plan.get("err", [])]
        headed = set(plan.get("in", []))
        ended: dict[str, bool] = {}
        waiting = [(str(i), False) for i in plan.get("next", [])]
        while waiting:
            fresh = {i: past for i, past in waiting if i not in ended}
            pipe = self.client.pipeline(transaction=False)
            for other in fresh:
                pipe.hget(self.keys.task(other), "then")
            waiting = []
            for (other, past), raw in zip(fresh.items(), pipe.execute() if fresh else [],
                                          strict=True):
                then = workflow.load_then(text(raw))
                past = past or bool(then.get("body"))
                ended[other] = past
                if other in headed:
                    errbacks += [(body, other) for body in then.get("err", [])]
                waiting += [(str(i), past) for i in then.get("next", [])]
        return list(ended.items()), errbacks

    def _plan(self, task_id: str, then: str | None, fields: Mapping[str, str],
              keep_result: bool = True, run: str = "") -> str:
        """The follow-up plan to store with a final state ('' = none): the commands, and
        the one that clears the plan (or, without a result to keep, the record)."""
        after = [stage for stage in self.follow_ups(task_id, then, fields) if stage]
        if not after:
            return ""
        record = self.keys.task(task_id)
        clear = ("HDEL", record, "after") if keep_result else \
            self._drop_record.command([record], [run])
        return json.dumps([list(after), clear], default=_script_text)

    def finish(self, message: Message, inflight: str, fields: Mapping[str, str],
               keep_result: bool = True, then: str | None = None) -> bool:
        """Store the final state, then ack; False if a final state was there.

        ``then`` is what follows the task in its canvas (None: read it from the
        record). Its follow-up plan is stored with the final state, run, and
        cleared before the ack (see the module docstring). Without a result to keep
        (ignore_result) the final record still goes first, and is deleted with the
        ack: a copy redelivered after a crash between the two finds the final
        state, as any other would, rather than no record.
        """
        return self.finish_and_start(message, inflight, fields, keep_result, then)[0]

    def finish_and_start(self, message: Message, inflight: str, fields: Mapping[str, str],
                         keep_result: bool = True, then: str | None = None,
                         start_next: Command | None = None) -> tuple[bool, Any]:
        """``finish``, with the start of the child's next task (``start_command``) sent
        in the same round trip; returns whether this finish stored, and the answer of
        that start (for ``started``). The next task's start does not depend on this
        one's end, so it may go first or beside it."""
        record = self.keys.task(message.id)
        plan = self._plan(message.id, then, fields, keep_result, inflight)
        store = self._store_state(message.id, fields,
                                  self.result_ttl if keep_result else self.record_ttl,
                                  final_notice(fields), plan, owner=inflight)
        drop = self._drop_record.command([record], [inflight])
        answers = self._store_then_ack(
            store, message.raw, inflight, beside=[start_next] if start_next else [],
            ack_too=[] if keep_result else [drop], held=bool(plan))
        stored, _, finished, other = answers[0]
        next_answer = answers[1] if start_next else None
        # Stored now, or by this very call's earlier try whose answer was lost (the
        # same finished_at): either way this call's outcome is the task's.
        if stored or (finished and text(finished) == fields.get("finished_at")):
            return True, next_answer
        self.note_late_run(message.id, fields, inflight, text(other) or text(finished))
        return False, next_answer

    def finish_many(self, ends: Sequence[Ending], then_fetch: Command | None = None
                    ) -> tuple[list[bool], Any]:
        """``finish`` for several tasks in one round trip (a child's held ends): all
        their stores, then all their acknowledgements; whether each stored. With
        ``then_fetch`` (a ``fetch_command``), the child's next fetch goes last in the
        same round trip, and its answer is returned too (NOT_SENT when a follow-up
        plan keeps a message held, as the fetch would find it, or on a cluster)."""
        stores: list[Command] = []
        acks: list[Command] = []
        planned: list[bool] = []
        for end in ends:
            message, record = end.message, self.keys.task(end.message.id)
            plan = self._plan(message.id, end.then, end.fields, end.keep_result, end.inflight)
            stores.append(self._store_state(
                message.id, end.fields, self.result_ttl if end.keep_result else
                self.record_ttl, final_notice(end.fields), plan, owner=end.inflight))
            planned.append(bool(plan))
            if not plan:  # a plan's message waits for its follow-ups (_store_then_ack)
                acks.append(("LREM", end.inflight, 1, message.raw))
                if not end.keep_result:
                    acks.append(self._drop_record.command([record], [end.inflight]))
        fetch = [then_fetch] if then_fetch is not None and not any(planned) and \
            not self.cluster else []
        answers = self._in_stages(stores, acks + fetch)
        outcomes = []
        for end, held, (stored, found, finished, other) in zip(ends, planned, answers,
                                                                strict=False):
            if held or text(found):
                self._follow_up_then_ack(end.message.raw, end.inflight, text(found) or "")
            ours = bool(stored) or (bool(finished) and
                                    text(finished) == end.fields.get("finished_at"))
            if not ours:
                self.note_late_run(end.message.id, end.fields, end.inflight,
                                   text(other) or text(finished))
            outcomes.append(ours)
        return outcomes, answers[-1] if fetch else NOT_SENT

    _drop_record = Script.load("drop_record")

    def note_late_run(self, task_id: str, fields: Mapping[str, str], run: str,
                      why: str | None) -> None:
        """A run that ended after its task was taken from it (its worker was presumed
        dead: another run owns the task, or ended it) keeps what it found in the
        record's field ``late_run``, rather than throwing it away."""
        if not why:
            return
        outcome = fields.get("result") if fields.get("status") == states.SUCCESS else \
            f"{fields.get('exc_type', '')}: {fields.get('exc_message', '')}"
        note = json.dumps({"status": fields.get("status"), "outcome": outcome, "run": run,
                           "finished_at": fields.get("finished_at")})
        self._run(("HSET", self.keys.task(task_id), "late_run", note))

    def _store_then_ack(self, store: Command, raw: bytes, inflight: str, *,
                        beside: Sequence[Command] = (), ack_too: Sequence[Command] = (),
                        held: bool = False) -> list[Any]:
        """The one path from a task's end to its acknowledgement: stage one stores the
        state (``store``, with ``beside``: commands of other slots that go with it),
        stage two removes the message from the in-flight list (with ``ack_too``).

        When the record holds a follow-up plan, this store's own (``held``: the
        message waits for it) or an earlier finish's that crashed, the plan runs
        before the message goes. Returns the answers of both stages.
        """
        ack = [("LREM", inflight, 1, raw), *ack_too]
        answers = self._in_stages([store, *beside], [] if held else ack)
        plan = text(answers[0][1])
        if held or plan:
            self._follow_up_then_ack(raw, inflight, plan or "")
        return answers

    def _follow_up_then_ack(self, raw: bytes, inflight: str, plan: str) -> None:
        """Run the follow-up plan a final record holds ('' = none), clear it, then drop
        the message from its in-flight list. The plan is the canvas's commands and
        the one that clears it (HDEL of ``after``, or DEL of an ignored result)."""
        if not plan:
            self._run(("LREM", inflight, 1, raw))
            return
        stages, clear = _parse_plan(plan)
        if self._apply(stages):
            self._in_stages([clear, ("LREM", inflight, 1, raw)])
        else:  # kept whole, plan and all: `asyncq dead requeue` applies it again
            self._in_stages([("LPUSH", self.keys.dead_letters(), raw)],
                            [("LREM", inflight, 1, raw)])

    def _follow_up(self, plan: str) -> None:
        """Run a plan whose task holds no message here (a revoke): a crash before it is
        cleared leaves it for whoever takes the task's message."""
        if plan:
            stages, clear = _parse_plan(plan)
            if self._apply(stages):
                self._run(clear)

    def _apply(self, stages: list[list[Command]]) -> bool:
        """Run a plan's stages; clear it only once every command worked. (On a single
        Redis a pipeline runs all its commands even after one fails: a refused push
        must not be followed by clearing the plan that holds it.) A command that
        Redis refuses for good (a damaged key) leaves the plan in the record, logged."""
        try:
            for answer in self._in_stages(*stages):
                if isinstance(answer, Exception):
                    raise answer
        except redis.ResponseError as exc:
            if is_refusal(exc):
                raise  # full or busy: the caller's outage handling tries again
            log.error("a canvas follow-up failed (%s): its message is kept as a dead letter "
                      "with the plan in its record; `asyncq dead requeue` tries again", exc)
            return False
        return True

    _reschedule = Script.load("reschedule")

    def retry(self, message: Message, inflight: str, eta: float,
              fields: Mapping[str, str]) -> bool:
        """Store RETRY, then schedule the next try and ack (one script on the queue's
        slot); False if the task was already final (then it is only acked).

        The queue part depends on the record part's answer, so they are two round
        trips. A crash in between leaves RETRY stored without a started_at and the
        message held: recovery puts it back on its queue, and the try is made again.
        """
        stored = self._run(self._store_state(message.id, fields, self.record_ttl, "update",
                                             owner=inflight))[0]
        self._run(self._reschedule.command([inflight, self.keys.scheduled(message.queue)],
                                           [message.raw, stored, message.retried(), eta]))
        return bool(stored)

    def revoke(self, task_id: str, fields: Mapping[str, str]) -> bool:
        """End a task REVOKED unless it is already final; False if it was. A revoked
        task keeps its record, and so its revocation, for the record TTL: a worker
        that takes its message later sees the final state and drops it."""
        plan = self._plan(task_id, None, fields)
        stored = self._run(self._store_state(task_id, fields, self.record_ttl, plan=plan))[0]
        if not stored:
            return False
        self._follow_up(plan)
        name = text(self.client.hget(self.keys.task(task_id), "task"))
        self.events.note("revoked", task_id, name or "?", count=states.REVOKED,
                         reason=fields.get("exc_message"))
        self.events.flush(self.client)
        return True

    def acknowledge(self, message: Message, inflight: str) -> None:
        """Drop the message from its in-flight list, storing nothing (a task that
        raised Ignore keeps whatever state it set itself)."""
        self._run(("LREM", inflight, 1, message.raw))

    def put_back(self, message: Message, inflight: str) -> bool:
        """Move a held message back to the head of its queue (Reject(requeue=True));
        False if it was no longer held."""
        queue = self.keys.queue(message.queue, message.priority)
        return bool(self._run(self._put_back.command([inflight, queue], [message.raw])))

    def dead_letter(self, raw: bytes, inflight: str, failure: Mapping[str, str] | None,
                    task_id: str | None, then: str | None = None, run: str = "") -> bool:
        """Set an unrunnable message aside, and fail its task where the id is known
        (unless that task already has a final state: this message is then a stray copy).
        The message is on the dead-letter list before it leaves the in-flight list.
        Returns whether the task was failed here."""
        aside = ("LPUSH", self.keys.dead_letters(), raw)
        if not (task_id and failure):
            self._in_stages([aside], [("LREM", inflight, 1, raw)])
            return False
        plan = self._plan(task_id, then, failure)
        answers = self._store_then_ack(
            self._store_state(task_id, failure, self.result_ttl, plan=plan, owner=run),
            raw, inflight,
            beside=[aside], held=bool(plan))
        return bool(answers[0][0])

    # -- 5. recover a dead child's messages ---------------------------------
    _put_back = Script.load("put_back")
    _requeued = Script.load("requeued")

    def recover(self, message: Message, inflight: str, owner: str, mode: str,
                redelivery_limit: int, failure: Mapping[str, str]) -> str:
        """Requeue or fail one message a dead child held.

        Modes: 'lost' (a child or host died: acks-late tasks come back, counted
        against ``redelivery_limit``), 'shutdown' (cold shutdown: the same, not
        counted), 'timeout' (hard time limit: the task fails). With 'lost', a live
        owner (``owner``, its heartbeat key, exists) is left alone, so a worker that
        came back is not robbed; pass ``inflight`` itself as ``owner`` when the
        caller is that worker. Returns 'alive', 'missing' (another recoverer took
        it), 'gone' (already final), 'requeued' or 'failed'.

        The record is read, then the message is moved (only by whoever takes it
        from the in-flight list), then the record is updated (only if it did not
        change meanwhile). A failure is stored before the message is removed.
        """
        if mode == "lost" and owner != inflight and self.client.exists(owner):
            return "alive"
        record = self.keys.task(message.id)
        status, started, acks_late, redelivered, plan, then = texts(self.client.hmget(
            record, "status", "started_at", "acks_late", "redeliveries", "after", "then"))
        if status in states.READY_STATES:
            self._follow_up_then_ack(message.raw, inflight, plan or "")
            return "gone"
        counted = acks_late == "1" and mode == "lost" and started is not None
        if started is None or (acks_late == "1" and mode == "shutdown") or (
                counted and int(redelivered or 0) < redelivery_limit):
            queue = self.keys.queue(message.queue, message.priority)
            if not self._run(self._put_back.command([inflight, queue], [message.raw])):
                return "missing"
            self._run(self._requeued.command([record], [started or "", int(counted)]))
            return "requeued"
        # The failure first, then the message goes: a crash between leaves a held
        # message whose task is final, which the next recoverer drops ('gone').
        plan = self._plan(message.id, then or "", failure)
        answers = self._store_then_ack(
            self._store_state(message.id, failure, self.result_ttl, plan=plan),
            message.raw, inflight, held=bool(plan))
        return "failed" if answers[0][0] else "missing"

    def inflight_messages(self, inflight: str) -> list[bytes]:
        return raw_list(self.client.lrange(inflight, 0, -1))

    # -- reading records: results, waiters, monitoring ----------------------
    def record(self, task_id: str) -> dict[str, str]:
        """The task's record as text, or {} when there is none."""
        return text_map(self.client.hgetall(self.keys.task(task_id)))

    def status(self, task_id: str) -> str:
        return text(self.client.hget(self.keys.task(task_id), "status")) or states.UNKNOWN

    def results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The stored results (JSON) of many tasks, None where there is none."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.keys.task(task_id), "result")
        return [None if raw is None else bytes(raw) for raw in pipe.execute()]

    def waiter(self) -> redis.client.PubSub:
        """This thread's pub/sub connection for ``AsyncResult.get``, kept open: a new
        one per call would cost a TCP connect and handshake each time."""
        channel = getattr(self._waiters, "channel", None)
        if channel is None:
            pubsub: Callable[..., redis.client.PubSub] = self.client.pubsub  # untyped in redis-py
            channel = self._waiters.channel = pubsub(ignore_subscribe_messages=True)
        return cast(redis.client.PubSub, channel)

    def forget(self, task_id: str) -> None:
        self.client.delete(self.keys.task(task_id))

    def purge(self, queue: str) -> int:
        """Delete every message waiting in a queue (all priorities); returns how many."""
        lists = [self.keys.queue(queue, priority) for priority in PRIORITIES]
        pipe = self.client.pipeline(transaction=True)  # one queue: one slot
        for key in lists:
            pipe.llen(key)
        pipe.delete(*lists)
        return sum(pipe.execute()[:-1])

    def queue_lengths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting per queue, all priorities counted."""
        pipe = self.client.pipeline(transaction=False)
        names = list(queues)
        for name in names:
            for priority in PRIORITIES:
                pipe.llen(self.keys.queue(name, priority))
        counts, per_queue = pipe.execute(), len(PRIORITIES)
        return {name: sum(counts[i * per_queue:(i + 1) * per_queue])
                for i, name in enumerate(names)}

    def scheduled_count(self, queues: Iterable[str]) -> int:
        """Messages due later (countdown, ETA, retries) in the scheduled sets of ``queues``."""
        pipe = self.client.pipeline(transaction=False)
        for name in queues:
            pipe.zcard(self.keys.scheduled(name))
        return sum(pipe.execute())

"""The life of a task in Redis: enqueue, fetch, start, finish (store + ack), recover.

Read this file top to bottom to follow one task. The keys are laid out for
Redis Cluster (see ``keys.py``): a task's record lives in a slot of its own,
tagged by its id, and a queue's lists, in-flight lists and scheduled set share
the queue's slot. So every script touches one slot, and a step that
changes both a record and a queue is two parts, a record part and a queue
part, ordered so that a crash between them loses nothing:

1. ``enqueue``  - write the PENDING record, then push the message.
2. ``fetch``    - move messages of one queue into the child's in-flight list
                  for that queue; they stay there until acknowledged.
3. ``start``    - mark the record STARTED, or skip the message if its task
                  already has a final state (a duplicate delivery).
4. ``finish``   - store the final state, then remove the message from the
                  in-flight list (the acknowledgement). A crash in between
                  leaves a final record and a held message: the message is
                  redelivered or recovered, finds the final state, and is
                  dropped.
5. ``recover``  - a child died holding a message: put it back on its queue
                  (acks-late, or never started) or end it FAILURE WorkerLostError.

How the parts travel (``Broker._in_stages``): on a single Redis, the parts of a
step go in one pipeline, run in order on one connection: one round trip. On a
cluster they go one stage after the other, each stage a pipeline, because a
cluster pipeline sends to every node at once and the nodes run their parts in
no set order.

A canvas step's follow-ups (queue the next step of a chain, count a chord
member and queue the body when complete, fail the rest after a failed step)
live in other slots. The record part of ``finish`` stores them in the record
(field ``after``) together with the final state, and only if it stored the
final state; the worker then applies them, each on its own slot, and last
clears ``after`` and acknowledges. Whoever finds a final record still holding
``after`` (a redelivered copy at ``start``, a recoverer, a retried ``finish``)
applies the follow-ups again and clears them: after a crash, a follow-up may
happen twice (a chain's next step queued twice, which its own record then
runs once in all but a narrow race), but it is never lost. A chord member is
counted in a set, so counting it twice is harmless.

Celery's counterpart is kombu's Redis transport plus its Redis result backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.cluster import RedisCluster

from asyncq import states
from asyncq.connection import RedisClient
from asyncq.events import Events
from asyncq.keys import PRIORITIES, Keys
from asyncq.message import Message
from asyncq.serialization import dumps

if TYPE_CHECKING:
    from redis.commands.core import Script

    from asyncq.canvas import FollowUps

# One Redis command, as a tuple of its words: ("LREM", key, 1, message).
Command = tuple[Any, ...]

# Marks a task record as final in Lua; the same set as states.READY_STATES.
_LUA_IS_FINAL = """
local function is_final(status)
  return status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
end
"""

# -- record scripts: KEYS[1] is a task record, and no other key ---------------

# ARGV: task name, queue name, now, record ttl, due time ('' = now), '1' to
# clear a record already under this id (a task_id given again).
_PENDING = """
if ARGV[6] == '1' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'status', 'PENDING', 'task', ARGV[1], 'queue', ARGV[2],
           'submitted_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'eta', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
"""

# ARGV: message, worker id, now, record ttl, acks_late flag, status to show
# ('STARTED', or '' to leave it as it is), the call's args and kwargs as JSON
# to keep in the record ('' = don't: result_extended is off).  Returns false, or when
# the task is already final {status, follow-ups not yet applied ('' = none)}.
_START = _LUA_IS_FINAL + """
local status, after = unpack(redis.call('HMGET', KEYS[1], 'status', 'after'))
if is_final(status) then return {status, after or ''} end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'worker', ARGV[2], 'started_at', ARGV[3], 'acks_late', ARGV[5],
             'status', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'worker', ARGV[2], 'started_at', ARGV[3], 'acks_late', ARGV[5])
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'call', ARGV[7]) end
if not status then redis.call('EXPIRE', KEYS[1], ARGV[4]) end  -- else it kept its TTL
return false
"""

# ARGV: ttl, channel, the notice for it, the
# follow-ups as JSON ('' = none), then the record's new field/value pairs.
# Stores the final state unless one is there.  Returns {1 if it stored, the
# follow-ups the record now holds ('' = none: this call's own when it stored,
# else any an earlier finish stored but did not get to apply), and when it did
# not store, the final record's finished_at (to spot this call's own lost try)}.
_STORE = _LUA_IS_FINAL + """
local status, after, finished = unpack(
  redis.call('HMGET', KEYS[1], 'status', 'after', 'finished_at'))
if is_final(status) then return {0, after or '', finished or ''} end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'after', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, ARGV[4], ''}
"""

# ARGV: record ttl, channel, then the RETRY field/value pairs.  Returns 1 if it
# stored RETRY, 0 if the task is already final.
_RETRY = _LUA_IS_FINAL + """
if is_final(redis.call('HGET', KEYS[1], 'status')) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HDEL', KEYS[1], 'started_at')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'update')
return 1
"""

# ARGV: ttl, channel, then field/value pairs.  Ends a task that is not running
# here (revoked; the rest of a failed chain; a dead letter; a lost task).  A
# revoked task keeps its record, and so its revocation, for the record ttl: a
# worker that takes its message later sees the final state and drops it.
_END = _LUA_IS_FINAL + """
if is_final(redis.call('HGET', KEYS[1], 'status')) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'final')
return 1
"""

# ARGV: channel, then field/value pairs.  A custom state such as PROGRESS;
# never overwrites a final state, never creates a record.
_UPDATE = _LUA_IS_FINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return 0 end  -- no record: none is made (no TTL)
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', ARGV[1], 'update')
return 1
"""

# ARGV: the started_at the recoverer read ('' = none), '1' to count a
# redelivery.  After a recovered message went back on its queue: PENDING
# again, unless the task is final meanwhile or a new start already happened
# (its started_at differs), which must not be undone.
_REQUEUED = _LUA_IS_FINAL + """
local status, started = unpack(redis.call('HMGET', KEYS[1], 'status', 'started_at'))
if not status or is_final(status) then return 0 end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'redeliveries', 1) end
if (started or '') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'PENDING')
  redis.call('HDEL', KEYS[1], 'started_at')
end
return 1
"""

# -- queue scripts: every key carries one queue's hash tag ------------------

# KEYS: in-flight list, then the queue's lists p9..p1 and its own list.  ARGV:
# how many to take at most, how many children share the work.  Takes the
# oldest messages of the highest priorities; one EXISTS skips the priority
# lists when all are empty.  A child takes no more than its fair share of what
# waits in a list, so a shallow queue is spread over the children rather than
# hoarded by one.  Returns the messages in the order they should run.
_TAKE = """
local held = redis.call('LLEN', KEYS[1])
if held > 0 then return held end  -- leftovers: the caller holds nothing between batches
local want, share, taken = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
local function take_from(list)
  local waiting = redis.call('LLEN', list)
  if waiting == 0 then return end
  local limit = math.min(want, #taken + math.max(1, math.floor(waiting / share)))
  while #taken < limit do
    local raw = redis.call('LMOVE', list, KEYS[1], 'RIGHT', 'LEFT')
    if not raw then return end
    taken[#taken + 1] = raw
  end
end
if redis.call('EXISTS', unpack(KEYS, 2, 10)) > 0 then
  for i = 2, 10 do take_from(KEYS[i]) end
end
take_from(KEYS[11])
return taken
"""

# KEYS: in-flight list, scheduled set.  ARGV: message, '1' if the record part
# stored RETRY, the next try's message, its due time.  Schedules the next try
# (only if RETRY was stored: a final task tries no more) and acks, in one step.
_RESCHEDULE = """
if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('LREM', KEYS[1], 1, ARGV[1])
"""

# KEYS: in-flight list, queue.  ARGV: message.  Puts a recovered message back
# at the head of its queue, only if this call took it from the in-flight list:
# of two recoverers, one moves it.  Returns 1 if it moved it.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# KEYS: scheduled set, queue.  ARGV: message.  Whichever worker removes a due
# message from the set is the one that queues it: it moves once.
_MOVE_DUE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: the chord's member set, the body's queue list (both of the body's
# queue).  ARGV: member id, ttl, chord size, body message.  Counts a member
# that succeeded; the member that completes the set queues the body, once.
_CHORD = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if added == 1 and redis.call('SCARD', KEYS[1]) == tonumber(ARGV[3]) then
  redis.call('LPUSH', KEYS[2], ARGV[4])
end
"""

class LeftoversHeld(Exception):
    """The child's in-flight list holds messages between batches: an answer lost on
    the way (a BLMOVE retried by the client, an ack lost in a failover). The child
    recovers them (``Child.reclaim``) before it takes more."""

    def __init__(self, inflight: str):
        super().__init__(inflight)
        self.inflight = inflight


# A waiter told "SUCCESS <result JSON>" has its answer without reading the record.
SUCCESS_NOTICE = b"SUCCESS "
NOTICE_MAX_RESULT = 64 * 1024  # larger results are read from the record instead


def final_notice(fields: Mapping[str, str]) -> str:
    """What the task's channel is told: the result itself when it succeeded (and is small)."""
    result = fields.get("result")
    if fields.get("status") == states.SUCCESS and result is not None \
            and len(result) <= NOTICE_MAX_RESULT:
        return SUCCESS_NOTICE.decode() + result
    return "final"


def flat(fields: Mapping[str, str]) -> list[str]:
    """Field/value pairs as Redis takes them: [field, value, field, value, ...]."""
    return [item for pair in fields.items() for item in pair]


def now() -> str:
    """Timestamps are stored as Unix seconds with microseconds."""
    return f"{time.time():.6f}"


def registration(raw: bytes | str) -> tuple[int, list[str]]:
    """A worker registry entry, JSON {"concurrency", "queues"}: what the worker's
    children may hold, one in-flight list per queue and child."""
    entry = json.loads(raw)
    if isinstance(entry, int):  # written by an asyncq before queues had slots of their own
        return entry, []
    return int(entry["concurrency"]), [str(queue) for queue in entry["queues"]]


class Broker:
    """All of asyncq's Redis traffic: queues (lists) and task records (hashes)."""

    def __init__(self, client: RedisClient, keys: Keys, record_ttl: int,
                 result_ttl: int, events_max_length: int = 0):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.keys = keys
        self.record_ttl = record_ttl  # safety TTL while a task is queued or running
        self.result_ttl = result_ttl  # how long final results are kept
        self.events = Events(client, keys, events_max_length)  # notes sent in batches
        self._announced: set[str] = set()  # queues this process added to keys.queues()
        self._waiters = threading.local()  # one pub/sub connection per thread, for get()
        self._pending = client.register_script(_PENDING)
        self._start = client.register_script(_START)
        self._store = client.register_script(_STORE)
        self._update = client.register_script(_UPDATE)
        self._retry = client.register_script(_RETRY)
        self._end = client.register_script(_END)
        self._requeued = client.register_script(_REQUEUED)
        self._take = client.register_script(_TAKE)
        self._reschedule = client.register_script(_RESCHEDULE)
        self._put_back = client.register_script(_PUT_BACK)
        self._move_due = client.register_script(_MOVE_DUE)
        self._chord = client.register_script(_CHORD)

    # -- how the parts of a step travel --------------------------------------
    def _in_stages(self, *stages: Sequence[Command]) -> list[Any]:
        """Run commands stage by stage; returns their answers, in order.

        Within a stage, order does not matter; each stage must be done before the
        next begins. On a single Redis all stages go in one pipeline: one
        connection runs them in order, in one round trip. (No MULTI: the steps
        are ordered so that stopping between two parts is safe, as it must be on
        a cluster, and MULTI/EXEC would double the commands per step.) On a
        cluster each stage is one pipeline, sent when the one before has
        answered: a cluster pipeline writes to every node at once.
        """
        if not self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for command in (command for stage in stages for command in stage):
                pipe.execute_command(*command)
            return pipe.execute()
        answers: list[Any] = []
        for stage in stages:
            if len(stage) == 1:  # alone: a cluster pipeline would first ask COMMAND GETKEYS
                answers.append(self.client.execute_command(*stage[0]))
                continue
            pipe = self.client.pipeline(transaction=False)
            for command in stage:
                pipe.execute_command(*command)
            answers.extend(pipe.execute())
        return answers

    @staticmethod
    def _eval(script: Script, keys: list[str], args: list[Any]) -> Command:
        """A script as a command for ``_in_stages``: EVAL with its text, not EVALSHA, so
        that a Redis that has forgotten its scripts (restarted, failed over) cannot
        fail one part of a step and run the others."""
        return ("EVAL", script.script, len(keys), *keys, *args)

    def _record_end(self, task_id: str, pairs: list[str], ttl: int) -> Command:
        """The command that ends a task (unless it is final) with the field/value ``pairs``."""
        return self._eval(self._end, [self.keys.task(task_id)],
                          [ttl, self.keys.done_channel(task_id), *pairs])

    # -- 1. enqueue ---------------------------------------------------------
    def enqueue(self, task_id: str, task: str, queue: str, message: bytes,
                eta: float | None = None, priority: int = 0, fresh: bool = False) -> None:
        """Write the PENDING record, then queue the message (or schedule it): a worker
        that takes the message always finds the record. ``fresh`` first clears a
        record left under this id (a task_id given again)."""
        later = eta is not None and eta > time.time()
        record = self._eval(self._pending, [self.keys.task(task_id)],
                            [task, queue, now(), self.record_ttl, f"{eta:.6f}" if later else "",
                             int(fresh)])
        push = ("ZADD", self.keys.scheduled(queue), f"{eta:.6f}", message) if later \
            else ("LPUSH", self.keys.queue(queue, priority), message)
        self._in_stages([record], [push, *self._announce([queue])])

    def _announce(self, queues: Iterable[str]) -> list[Command]:
        """Add queues new to this process to the app's set of queue names (for the
        monitor): one SADD the first time a process sends to a queue, none after."""
        new = set(queues) - self._announced
        self._announced |= new
        return [("SADD", self.keys.queues(), *sorted(new))] if new else []

    def enqueue_all(self, entries: list[tuple[str, str, str, bytes | None, int]]) -> None:
        """Many tasks: (id, task, queue, message or None, priority) each; a None message
        writes the PENDING record only (a later step of a canvas). All records are
        written before any message is queued."""
        records = [self._eval(self._pending, [self.keys.task(task_id)],
                              [task, queue, now(), self.record_ttl, "", 1])
                   for task_id, task, queue, _, _ in entries]
        pushes = [("LPUSH", self.keys.queue(queue, priority), message)
                  for _, _, queue, message, priority in entries if message is not None]
        self._in_stages(records, pushes + self._announce(entry[2] for entry in entries))

    def move_due(self, queues: Iterable[str], limit: int = 500) -> float | None:
        """Queue the scheduled messages of ``queues`` now due; returns when the next
        one is due. Each queue's set and lists share a slot: one script per message."""
        upcoming: list[tuple[bytes, float]] = []
        for queue in queues:
            scheduled = self.keys.scheduled(queue)
            due = cast(list[bytes],
                       self.client.zrangebyscore(scheduled, "-inf", time.time(), 0, limit))
            for raw in due:
                try:
                    message = Message.decode(raw)
                except ValueError:  # cannot happen for messages we wrote: set aside
                    if self.client.zrem(scheduled, raw):  # whoever removes it keeps it
                        self.client.lpush(self.keys.dead_letters(), raw)
                    continue
                self._move_due(keys=[scheduled, self.keys.queue(queue, message.priority)],
                               args=[raw])
            upcoming += cast(list[tuple[bytes, float]],
                             self.client.zrange(scheduled, 0, 0, withscores=True))
        return min((score for _, score in upcoming), default=None)

    # -- 2. fetch -----------------------------------------------------------
    def fetch(self, queues: list[str], worker_id: str, slot: int, timeout: float,
              prefetch: int = 1, share: int = 1) -> tuple[str, list[bytes]]:
        """Move up to ``prefetch`` messages of one queue into the child's in-flight list
        for that queue; returns that list's key and the messages, in the order to
        run them. The first queue that has messages gives them all, highest
        priority first.

        A message is never only in a Python variable: it is either on its queue or
        on an in-flight list, so a crash here loses nothing (taken but not started,
        it goes back to its queue). ``share``, the number of children of the worker,
        keeps one child from taking more than its part of a short queue. When every
        list is empty, block (BLMOVE) on the first queue's own list for up to ``timeout``.
        """
        for queue in queues:
            inflight = self.keys.inflight(queue, worker_id, slot)
            lists = [self.keys.queue(queue, priority) for priority in reversed(PRIORITIES)]
            taken = self._take(keys=[inflight, *lists], args=[prefetch, share])
            if isinstance(taken, int):
                raise LeftoversHeld(inflight)
            if taken:
                return inflight, taken
        inflight = self.keys.inflight(queues[0], worker_id, slot)
        # BLMOVE takes a timeout in seconds as a float (Redis 6+); redis-py's hint says
        # int, but it sends the value as is. Rounding would change its meaning (0 blocks
        # forever), so the float goes through unchanged.
        raw = cast("bytes | None", self.client.blmove(
            self.keys.queue(queues[0]), inflight, cast(int, timeout), "RIGHT", "LEFT"))
        return inflight, [raw] if raw is not None else []

    # -- 3. start -----------------------------------------------------------
    def start(self, message: Message, inflight: str, worker_id: str, acks_late: bool,
              track_started: bool, extended: bool = False) -> str | None:
        """Record that a child began the task; returns the final state instead if it has
        one, after dropping the message (and applying follow-ups a crash left undone)."""
        final = self._start(
            keys=[self.keys.task(message.id)],
            args=[message.raw, worker_id, now(), self.record_ttl, int(acks_late),
                  states.STARTED if track_started else "",
                  json.dumps({"args": message.args, "kwargs": message.kwargs}) if extended
                  else ""])
        if not final:
            return None
        status, after = final
        self._ack(message, inflight, after)
        return status.decode()

    def update_state(self, task_id: str, state: str, meta: Any) -> bool:
        """Store a custom state (such as PROGRESS) and its meta as their own fields.

        Final states come only from the task's return or exception, so that each
        task has exactly one, with a result or an error to match it.
        """
        if state in states.READY_STATES:
            raise ValueError(f"update_state cannot set the final state {state}: "
                             "return a value or raise an exception instead")
        fields = ["status", state, "meta", dumps(meta, f"the meta of state {state!r}")]
        return bool(self._update(keys=[self.keys.task(task_id)],
                                 args=[self.keys.done_channel(task_id), *fields]))

    # -- 4. finish: store the final state and acknowledge -------------------
    def finish(self, message: Message, inflight: str, fields: Mapping[str, str],
               keep_result: bool = True, after: FollowUps | None = None) -> bool:
        """Store the final state, then ack; False if a final state was there.

        ``after`` holds a canvas step's follow-ups: they are stored with the final
        state, applied, and cleared before the ack (see the module docstring).
        """
        plan = self._follow_up_plan(after, keep_result) if after else ""
        # Without a result to keep (ignore_result) the final record still goes first,
        # and is deleted with the ack: a copy redelivered after a crash between the
        # two finds the final state, as any other would, rather than no record.
        ttl = self.result_ttl if keep_result else self.record_ttl
        record = self.keys.task(message.id)
        pairs = flat(fields)
        store = self._eval(self._store, [record],
                           [ttl, self.keys.done_channel(message.id), final_notice(fields), plan,
                            *pairs])
        if plan:
            stored, pending, finished = self._in_stages([store])[0]
            self._ack(message, inflight, pending)
        else:
            ack: list[Command] = [("LREM", inflight, 1, message.raw)]
            if not keep_result:
                ack.append(("DEL", record))
            (stored, pending, finished), *_ = self._in_stages([store], ack)
            if pending:  # an earlier finish of this task stored follow-ups and crashed
                self._ack(message, inflight, pending)
        # Stored now, or by this very call's earlier try whose answer was lost (the
        # same finished_at): either way this call's outcome is the task's.
        return bool(stored) or (bool(finished) and
                                finished.decode() == fields.get("finished_at"))

    def _ack(self, message: Message, inflight: str, pending: bytes | str) -> None:
        """Drop the message from its in-flight list, first applying the follow-ups
        ``pending`` (JSON, '' = none) that its final record holds, and clearing them."""
        if not pending:
            # redis-py hints LREM's value as str; a message is bytes, sent as is.
            self.client.lrem(inflight, 1, message.raw)  # type: ignore[arg-type]
            return
        plan = json.loads(pending)
        record = self.keys.task(message.id)
        apply: list[Command] = [("LPUSH", key, body) for key, body in plan["push"]]
        apply += [self._record_end(task_id, pairs, self.result_ttl)
                  for task_id, pairs in plan["fail"]]
        if plan.get("chord"):
            members, member, size, body_queue, body = plan["chord"]
            apply.append(self._eval(self._chord, [members, body_queue],
                                    [member, self.record_ttl, size, body]))
        clear = ("DEL", record) if plan.get("forget") else ("HDEL", record, "after")
        self._in_stages(apply, [clear, ("LREM", inflight, 1, message.raw)])

    def _follow_up_plan(self, after: FollowUps, keep_result: bool) -> str:
        """The follow-ups as JSON, as the record holds them until they are applied."""
        if not (after.push or after.fail or after.chord_member):
            return ""
        plan: dict[str, Any] = {
            "push": [[key, body.decode()] for key, body in after.push],
            "fail": [[task_id, flat(failure)] for task_id, failure in after.fail]}
        if after.chord_member:
            members, member, size, body_queue, body = after.chord_member
            plan["chord"] = [members, member, size, body_queue, body.decode()]
        if not keep_result:
            plan["forget"] = True  # delete the record once they are applied
        return json.dumps(plan)

    def retry(self, message: Message, inflight: str, eta: float,
              fields: Mapping[str, str]) -> bool:
        """Store RETRY, then schedule the next try and ack (one script on the queue's
        slot); False if the task was already final (then it is only acked).

        A crash in between leaves RETRY stored without a started_at and the message
        held: recovery puts it back on its queue, and the try is made again.
        """
        pairs = flat(fields)
        stored = self._retry(keys=[self.keys.task(message.id)],
                             args=[self.record_ttl, self.keys.done_channel(message.id), *pairs])
        self._reschedule(keys=[inflight, self.keys.scheduled(message.queue)],
                         args=[message.raw, stored, message.retried(), eta])
        return bool(stored)

    def revoke(self, task_id: str, fields: Mapping[str, str]) -> bool:
        """End a task REVOKED unless it is already final; False if it was."""
        if not self._end(keys=[self.keys.task(task_id)],
                         args=[self.record_ttl, self.keys.done_channel(task_id),
                               *flat(fields)]):
            return False
        name = cast("bytes | None", self.client.hget(self.keys.task(task_id), "task"))
        self.events.note("revoked", task_id, name.decode() if name else "?",
                         count=states.REVOKED, reason=fields.get("exc_message"))
        self.events.flush(self.client)
        return True

    def dead_letter(self, raw: bytes, inflight: str, failure: Mapping[str, str] | None,
                    task_id: str | None) -> bool:
        """Set an unrunnable message aside, and fail its task where the id is known
        (unless that task already has a final state: this message is then a stray copy).
        The message is on the dead-letter list before it leaves the in-flight list.
        Returns whether the task was failed here."""
        aside: list[Command] = [("LPUSH", self.keys.dead_letters(), raw)]
        if task_id and failure:
            aside.append(self._record_end(task_id, flat(failure), self.result_ttl))
        answers = self._in_stages(aside, [("LREM", inflight, 1, raw)])
        return len(aside) == 2 and bool(answers[1])

    # -- 5. recover a dead child's messages ---------------------------------
    def inflight_messages(self, inflight: str) -> list[bytes]:
        return cast(list[bytes], self.client.lrange(inflight, 0, -1))

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
        values = cast("list[bytes | None]", self.client.hmget(
            record, "status", "started_at", "acks_late", "redeliveries", "after"))
        status, started, acks_late, redelivered, after = (
            value.decode() if value is not None else None for value in values)
        if status in states.READY_STATES:
            self._ack(message, inflight, after or "")
            return "gone"
        counted = acks_late == "1" and mode == "lost" and started is not None
        if started is None or (acks_late == "1" and mode == "shutdown") or (
                counted and int(redelivered or 0) < redelivery_limit):
            queue = self.keys.queue(message.queue, message.priority)
            if not self._put_back(keys=[inflight, queue], args=[message.raw]):
                return "missing"
            self._requeued(keys=[record], args=[started or "", int(counted)])
            return "requeued"
        # The failure first, then the message goes: a crash between leaves a held
        # message whose task is final, which the next recoverer drops ('gone').
        self._end(keys=[record], args=[self.result_ttl, self.keys.done_channel(message.id),
                                       *flat(failure)])
        if not self.client.lrem(inflight, 1, message.raw):  # type: ignore[arg-type]  # as in _ack
            return "missing"
        return "failed"

    # -- reading records ----------------------------------------------------
    def waiter(self) -> redis.client.PubSub:
        """This thread's pub/sub connection for ``AsyncResult.get``, kept open: a new
        one per call would cost a TCP connect and handshake each time."""
        channel = getattr(self._waiters, "channel", None)
        if channel is None:
            channel = self._waiters.channel = self.client.pubsub(ignore_subscribe_messages=True)
        return channel

    def record(self, task_id: str) -> dict[str, str]:
        """The task's record as text, or {} when there is none."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.task(task_id)))
        return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}

    def status(self, task_id: str) -> str:
        value = cast("bytes | None", self.client.hget(self.keys.task(task_id), "status"))
        return value.decode() if value else states.UNKNOWN

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

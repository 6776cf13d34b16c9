"""The life of a task in Redis: enqueue, fetch, start, finish (store + ack), recover.

Read this file top to bottom to follow one task. Each step that changes more
than one key is a single MULTI or Lua script, so no crash between two Redis
commands can leave a task half-moved:

1. ``enqueue``  - write the PENDING record and push the message (MULTI).
2. ``fetch``    - BLMOVE the message from the queue into the child's own
                  in-flight list; it stays there until acknowledged.
3. ``start``    - mark the record STARTED, or skip the message if its task
                  already has a final state (a duplicate delivery).
4. ``finish``   - store the final state and remove the message from the
                  in-flight list: the acknowledgement and the store are one step.
5. ``recover``  - a child died holding a message: put it back on its queue
                  (acks-late, or never started) or end it FAILURE WorkerLostError.

Celery's counterpart is kombu's Redis transport plus its Redis result backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from asyncq import states
from asyncq.events import Events
from asyncq.keys import PRIORITIES, Keys
from asyncq.serialization import dumps

if TYPE_CHECKING:
    from redis.client import Pipeline
    from redis.commands.core import Script

    from asyncq.canvas import FollowUps

# Marks a task record as final in Lua; the same set as states.READY_STATES.
_LUA_IS_FINAL = """
local function is_final(status)
  return status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
end
"""

# KEYS: record, queue list (or the scheduled set when due later).  ARGV:
# message, task name, queue name, now, record ttl, due time ('' = now),
# '1' to clear a record already under this id (a task_id given again).
_ENQUEUE = """
if ARGV[7] == '1' then redis.call('DEL', KEYS[1]) end
if ARGV[6] == '' then
  redis.call('HSET', KEYS[1], 'status', 'PENDING', 'task', ARGV[2], 'queue', ARGV[3],
             'submitted_at', ARGV[4])
  redis.call('LPUSH', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', 'PENDING', 'task', ARGV[2], 'queue', ARGV[3],
             'submitted_at', ARGV[4], 'eta', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
"""

# KEYS: record, in-flight list.  ARGV: message, worker id, now, record ttl,
# acks_late flag, status to show ('STARTED', or '' to leave it as it is), '1' to
# keep the message in the record (result_extended: args for the dashboard).
_START = _LUA_IS_FINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if is_final(status) then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  return status
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'worker', ARGV[2], 'started_at', ARGV[3], 'acks_late', ARGV[5],
             'status', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'worker', ARGV[2], 'started_at', ARGV[3], 'acks_late', ARGV[5])
end
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'message', ARGV[1]) end
if not status then redis.call('EXPIRE', KEYS[1], ARGV[4]) end  -- else it kept its TTL
return false
"""

# KEYS: record, in-flight list, then the keys the follow-ups name.  ARGV:
# message, result ttl (0 = delete the record), channel, the notice for it, a
# canvas step's follow-ups as JSON ('' = none), then the record's new
# field/value pairs.  The follow-ups (queue the next step of a chain, count a
# chord member and queue its body when complete, fail the rest after a failed
# step) happen only if this call stored the final state: a stray copy of the
# message, or a step revoked while it ran, sets nothing in motion.
_FINISH = _LUA_IS_FINAL + """
local function follow(after)
  for _, push in ipairs(after.push) do redis.call('LPUSH', KEYS[push[1]], push[2]) end
  for _, fail in ipairs(after.fail) do
    local key = KEYS[fail[1]]
    if not is_final(redis.call('HGET', key, 'status')) then
      redis.call('HSET', key, unpack(fail[2]))
      redis.call('EXPIRE', key, fail[3])
      redis.call('PUBLISH', fail[4], 'final')
    end
  end
  local chord = after.chord  -- {members set, member id, ttl, size, body queue, body}
  if chord then
    local added = redis.call('SADD', KEYS[chord[1]], chord[2])
    redis.call('EXPIRE', KEYS[chord[1]], chord[3])
    if added == 1 and redis.call('SCARD', KEYS[chord[1]]) == chord[4] then
      redis.call('LPUSH', KEYS[chord[5]], chord[6])
    end
  end
end
local stored = 0
if not is_final(redis.call('HGET', KEYS[1], 'status')) then
  if ARGV[2] == '0' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], unpack(ARGV, 6))
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  if ARGV[5] ~= '' then follow(cjson.decode(ARGV[5])) end
  stored = 1
end
redis.call('LREM', KEYS[2], 1, ARGV[1])
return stored
"""

# KEYS: dead-letter list, in-flight list, record.  ARGV: message, result ttl,
# channel, then the failure's field/value pairs (none when the id is unknown).
_DEAD_LETTER = _LUA_IS_FINAL + """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LREM', KEYS[2], 1, ARGV[1])
if #ARGV > 3 and not is_final(redis.call('HGET', KEYS[3], 'status')) then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[3], ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'final')
end
"""

# KEYS: record, in-flight list, scheduled set.  ARGV: message, next try's
# message, its due time, record ttl, channel, then the RETRY field/value pairs.
# The RETRY state, the next try's schedule and the ack are one step.
_RETRY = _LUA_IS_FINAL + """
if is_final(redis.call('HGET', KEYS[1], 'status')) then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HDEL', KEYS[1], 'started_at')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('PUBLISH', ARGV[5], 'update')
return 1
"""

# KEYS: in-flight list, then for each queue in turn its lists p9..p1 and its
# own list.  ARGV: how many to take at most, how many children share the work.
# Takes the oldest messages of the highest priorities, first queue first; one
# EXISTS skips a queue's priority lists when all are empty.  A child takes no
# more than its fair share of what waits in a list, so a shallow queue is
# spread over the children rather than hoarded by one.  Returns the messages
# in the order they should run.  (Ten lists per queue: keys.PRIORITIES.)
_TAKE = """
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
for first = 2, #KEYS, 10 do
  if redis.call('EXISTS', unpack(KEYS, first, first + 8)) > 0 then
    for i = first, first + 8 do take_from(KEYS[i]) end
  end
  take_from(KEYS[first + 9])
  if #taken >= want then break end
end
return taken
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

# KEYS: record.  ARGV: ttl, channel, then field/value pairs.  Ends a task that
# is not running here (revoked; or the rest of a failed chain).  A revoked task
# keeps its record, and so its revocation, for the record ttl: a worker that
# takes its message later sees the final state and drops it.
_END = _LUA_IS_FINAL + """
if is_final(redis.call('HGET', KEYS[1], 'status')) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'final')
return 1
"""

# KEYS: record.  ARGV: channel, then field/value pairs.  A custom state such as
# PROGRESS; never overwrites a final state, never creates a record.
_UPDATE = _LUA_IS_FINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return 0 end  -- no record: none is made (no TTL)
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', ARGV[1], 'update')
return 1
"""

# KEYS: in-flight list, queue, record, owner's heartbeat key.  ARGV: message,
# redelivery limit, mode, failure fields as JSON, channel, result ttl.
# Modes: 'lost' (a child or host died: acks-late tasks come back, counted),
# 'shutdown' (cold shutdown: the same, not counted), 'timeout' (hard time
# limit: the task fails).  With 'lost', a live owner (fresh heartbeat) is left
# alone, so two recoverers, or a worker that came back, never race.
# Returns 'alive', 'missing' (another recoverer took it), 'gone' (already
# final), 'requeued' or 'failed'.
_RECOVER = _LUA_IS_FINAL + """
if ARGV[3] == 'lost' and KEYS[4] ~= KEYS[1] and redis.call('EXISTS', KEYS[4]) == 1 then
  return 'alive'
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 'missing' end
local status, started, acks_late = unpack(
  redis.call('HMGET', KEYS[3], 'status', 'started_at', 'acks_late'))
if is_final(status) then return 'gone' end
local function requeue()
  redis.call('RPUSH', KEYS[2], ARGV[1])
  if status then
    redis.call('HSET', KEYS[3], 'status', 'PENDING')
    redis.call('HDEL', KEYS[3], 'started_at')
  end
  return 'requeued'
end
if not started then return requeue() end
if acks_late == '1' and ARGV[3] == 'shutdown' then return requeue() end
if acks_late == '1' and ARGV[3] == 'lost' then
  local redelivered = tonumber(redis.call('HGET', KEYS[3], 'redeliveries') or '0')
  if redelivered < tonumber(ARGV[2]) then
    redis.call('HINCRBY', KEYS[3], 'redeliveries', 1)
    return requeue()
  end
end
local fields = cjson.decode(ARGV[4])
for field, value in pairs(fields) do redis.call('HSET', KEYS[3], field, value) end
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[5], 'final')
return 'failed'
"""


@dataclass(frozen=True)
class Message:
    """A decoded queue message: JSON ``{"id", "task", "args", "kwargs", "queue"}``, and
    when set, ``retries`` (tries so far), ``eta`` and ``expires`` (Unix seconds)."""

    raw: bytes
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    body: dict[str, Any]

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        """Parse a message, raising ValueError with the reason if it is not one of ours."""
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        for field, kind in _REQUIRED.items():
            if not isinstance(body.get(field), kind):
                raise ValueError(f"field {field!r} missing or not a {kind.__name__}")
        for field in ("id", "task", "queue"):  # they become Redis keys: valid UTF-8 only
            if not body[field] or not _encodable(body[field]):
                raise ValueError(f"field {field!r} is empty or not valid text")
        if len(body["id"].encode()) > MAX_ID_BYTES:
            raise ValueError(f"field 'id' is longer than {MAX_ID_BYTES} bytes")
        if body.get("priority") is not None and body["priority"] not in PRIORITIES:
            raise ValueError("field 'priority' is not one of 0-9")
        for field, kinds in _OPTIONAL.items():
            if body.get(field) is not None and not isinstance(body[field], kinds):
                raise ValueError(f"field {field!r} has the wrong type")
        return cls(raw, body["id"], body["task"], body["args"], body["kwargs"], body["queue"],
                   body)

    @property
    def retries(self) -> int:
        return int(self.body.get("retries") or 0)

    @property
    def priority(self) -> int:
        return int(self.body.get("priority") or 0)

    @property
    def expires(self) -> float | None:
        return self.body.get("expires")

    def retried(self) -> bytes:
        """The message for the next try: the same, with ``retries`` one higher."""
        return encode_body({**self.body, "retries": self.retries + 1})


def parse_json(raw: bytes) -> Any:
    """json.loads, with every way it can fail (bad UTF-8, deep nesting) as ValueError."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError includes UnicodeDecodeError
        raise ValueError(f"not JSON: {type(exc).__name__}: {exc}"[:300]) from None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


MAX_ID_BYTES = 64  # task ids up to this size (a uuid4 is 36); workers share them in memory

_REQUIRED = {"id": str, "task": str, "args": list, "kwargs": dict, "queue": str}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "retries": int, "eta": (int, float), "expires": (int, float), "priority": int}


def encode_message(task_id: str, task: str, args: list, kwargs: dict, queue: str,
                   **options: Any) -> bytes:
    """The wire format: compact JSON, never pickle. Options that are None are left out."""
    body = {"id": task_id, "task": task, "args": args, "kwargs": kwargs, "queue": queue}
    body.update((k, v) for k, v in options.items() if v is not None)
    return encode_body(body)


def encode_body(body: dict[str, Any]) -> bytes:
    return dumps(body, f"the arguments of task {body['task']!r}").encode()


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


def now() -> str:
    """Timestamps are stored as Unix seconds with microseconds."""
    return f"{time.time():.6f}"


class Broker:
    """All of asyncq's Redis traffic: queues (lists) and task records (hashes)."""

    def __init__(self, client: redis.Redis, keys: Keys, record_ttl: int, result_ttl: int,
                 events_max_length: int = 0):
        self.client = client
        self.keys = keys
        self.record_ttl = record_ttl  # safety TTL while a task is queued or running
        self.result_ttl = result_ttl  # how long final results are kept
        self.events = Events(client, keys, events_max_length)  # notes ride along with fetch
        self._waiters = threading.local()  # one pub/sub connection per thread, for get()
        self._enqueue = client.register_script(_ENQUEUE)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._update = client.register_script(_UPDATE)
        self._recover = client.register_script(_RECOVER)
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._retry = client.register_script(_RETRY)
        self._move_due = client.register_script(_MOVE_DUE)
        self._end = client.register_script(_END)
        self._take = client.register_script(_TAKE)

    # -- 1. enqueue ---------------------------------------------------------
    def enqueue(self, task_id: str, task: str, queue: str, message: bytes,
                eta: float | None = None, priority: int = 0, fresh: bool = False) -> None:
        """Write the PENDING record and queue the message (or schedule it), in one script.
        ``fresh`` first clears a record left under this id (a task_id given again)."""
        later = eta is not None and eta > time.time()
        target = self.keys.scheduled() if later else self.keys.queue(queue, priority)
        self._enqueue(keys=[self.keys.task(task_id), target],
                      args=[message, task, queue, now(), self.record_ttl,
                            f"{eta:.6f}" if later else "", int(fresh)])

    def enqueue_all(self, entries: list[tuple[str, str, str, bytes | None, int]]) -> None:
        """Many tasks in one MULTI: (id, task, queue, message or None, priority) each;
        a None message writes the PENDING record only (a later step of a canvas)."""
        pipe = self.client.pipeline(transaction=True)
        for task_id, task, queue, message, priority in entries:
            self._write_pending(pipe, task_id, task, queue)
            if message is not None:
                pipe.lpush(self.keys.queue(queue, priority), message)
        pipe.execute()

    def _write_pending(self, pipe: Pipeline, task_id: str, task: str, queue: str) -> None:
        """The PENDING record, as _ENQUEUE writes it, for a MULTI of many tasks."""
        record = self.keys.task(task_id)
        fields = {"status": states.PENDING, "task": task, "queue": queue, "submitted_at": now()}
        pipe.delete(record)
        pipe.hset(record, mapping=fields)
        pipe.expire(record, self.record_ttl)

    def move_due(self, limit: int = 500) -> float | None:
        """Queue the scheduled messages now due; returns when the next one is due."""
        scheduled = self.keys.scheduled()
        for raw in self.client.zrangebyscore(scheduled, "-inf", time.time(), 0, limit):
            try:
                message = Message.decode(raw)
            except ValueError:  # cannot happen for messages we wrote; set aside, atomically
                pipe = self.client.pipeline(transaction=True)
                pipe.zrem(scheduled, raw)
                pipe.lpush(self.keys.dead_letters(), raw)
                pipe.execute()
                continue
            target = self.keys.queue(message.queue, message.priority)
            self._move_due(keys=[scheduled, target], args=[raw])
        upcoming = self.client.zrange(scheduled, 0, 0, withscores=True)
        return upcoming[0][1] if upcoming else None

    # -- 2. fetch -----------------------------------------------------------
    def fetch(self, queues: list[str], inflight: str, timeout: float,
              prefetch: int = 1, share: int = 1) -> list[bytes]:
        """Move up to ``prefetch`` messages into ``inflight``, in the order to run them:
        from the first queue that has some, and within a queue highest priority first.

        A message is never only in a Python variable: it is either on its queue or
        on the in-flight list, so a crash here loses nothing (taken but not started,
        it goes back to its queue). ``share``, the number of children of the worker,
        keeps one child from taking more than its part of a short queue. When every
        list is empty, block (BLMOVE) on the first queue's own list for up to ``timeout``.
        """
        lists = [self.keys.queue(queue, priority) for queue in queues
                 for priority in reversed(PRIORITIES)]
        taken = self.run_with_events(self._take, [inflight, *lists], [prefetch, share])
        if taken:
            return taken
        raw = self.client.blmove(self.keys.queue(queues[0]), inflight, timeout, "RIGHT", "LEFT")
        return [raw] if raw is not None else []

    # -- 3. start -----------------------------------------------------------
    def start(self, message: Message, inflight: str, worker_id: str, acks_late: bool,
              track_started: bool, extended: bool = False) -> str | None:
        """Record that a child began the task; returns the final state instead if it has one."""
        final = self.run_with_events(
            self._start, [self.keys.task(message.id), inflight],
            [message.raw, worker_id, now(), self.record_ttl, int(acks_late),
             states.STARTED if track_started else "", int(extended)])
        return final.decode() if final else None

    def run_with_events(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script, sending this process's task events in the same round trip.

        EVALSHA in a plain pipeline: redis-py's own script-in-pipeline support
        asks SCRIPT EXISTS first, which would cost the round trip we save. A
        script Redis has forgotten (it restarted) is loaded and run again.
        """
        if not self.events.notes:
            return script(keys=keys, args=args)
        pipe = self.client.pipeline(transaction=False)
        sending = self.events.send_in(pipe)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        observed, result = pipe.execute(raise_on_error=False)
        if isinstance(observed, redis.exceptions.NoScriptError):
            self.events.flush(self.client)  # Script objects load themselves when called
        elif isinstance(observed, Exception):
            raise observed
        else:
            self.events.sent(sending)
        if isinstance(result, redis.exceptions.NoScriptError):
            return script(keys=keys, args=args)
        if isinstance(result, Exception):
            raise result
        return result

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
        """Store the final state and ack in one script; False if a final state was there.

        ``after`` holds a canvas step's follow-ups; the same script applies them, and
        only when it stored this step's final state (see ``_FINISH``).
        """
        keys = [self.keys.task(message.id), inflight]
        plan = self._follow_up_plan(after, keys) if after else ""
        pairs = [item for pair in fields.items() for item in pair]
        return bool(self._finish(
            keys=keys,
            args=[message.raw, self.result_ttl if keep_result else 0,
                  self.keys.done_channel(message.id), final_notice(fields), plan, *pairs]))

    def _follow_up_plan(self, after: FollowUps, keys: list[str]) -> str:
        """The follow-ups as JSON for ``_FINISH``, naming keys by their place in ``keys``
        (which it extends), so that the script touches only keys it was given."""
        def place(key: str) -> int:
            keys.append(key)
            return len(keys)

        plan: dict[str, Any] = {
            "push": [[place(key), body.decode()] for key, body in after.push],
            "fail": [[place(self.keys.task(task_id)),
                      [item for pair in failure.items() for item in pair],
                      self.result_ttl, self.keys.done_channel(task_id)]
                     for task_id, failure in after.fail]}
        if after.chord_member:
            members, member, size, body_queue, body = after.chord_member
            plan["chord"] = [place(members), member, self.record_ttl, size, place(body_queue),
                             body.decode()]
        return json.dumps(plan)

    def _end_with(self, client: Any, task_id: str, fields: Mapping[str, str], ttl: int) -> Any:
        pairs = [item for pair in fields.items() for item in pair]
        return self._end(keys=[self.keys.task(task_id)],
                         args=[ttl, self.keys.done_channel(task_id), *pairs], client=client)

    def retry(self, message: Message, inflight: str, eta: float,
              fields: Mapping[str, str]) -> bool:
        """Store RETRY, schedule the next try and ack, in one script."""
        pairs = [item for pair in fields.items() for item in pair]
        return bool(self._retry(
            keys=[self.keys.task(message.id), inflight, self.keys.scheduled()],
            args=[message.raw, message.retried(), eta, self.record_ttl,
                  self.keys.done_channel(message.id), *pairs]))

    def revoke(self, task_id: str, fields: Mapping[str, str]) -> bool:
        """End a task REVOKED unless it is already final; False if it was."""
        if not self._end_with(self.client, task_id, fields, self.record_ttl):
            return False
        name = self.client.hget(self.keys.task(task_id), "task")
        self.events.note("revoked", task_id, name.decode() if name else "?",
                         count=states.REVOKED, reason=fields.get("exc_message"))
        self.events.flush(self.client)
        return True

    def dead_letter(self, raw: bytes, inflight: str, failure: Mapping[str, str] | None,
                    task_id: str | None) -> None:
        """Set an unrunnable message aside, and fail its task where the id is known
        (unless that task already has a final state: this message is then a stray copy)."""
        pairs = [item for pair in (failure or {}).items() for item in pair] if task_id else []
        self._dead_letter(
            keys=[self.keys.dead_letters(), inflight, self.keys.task(task_id or "-")],
            args=[raw, self.result_ttl, self.keys.done_channel(task_id or "-"), *pairs])

    # -- 5. recover a dead child's messages ---------------------------------
    def inflight_messages(self, inflight: str) -> list[bytes]:
        return self.client.lrange(inflight, 0, -1)

    def recover(self, message: Message, inflight: str, owner: str, mode: str,
                redelivery_limit: int, failure: Mapping[str, str]) -> str:
        """Requeue or fail one message a dead child held; see ``_RECOVER`` for the rules.

        ``owner`` is the heartbeat key of the worker that held it; pass ``inflight``
        itself when the caller is that worker.
        """
        result = self._recover(
            keys=[inflight, self.keys.queue(message.queue, message.priority),
                  self.keys.task(message.id), owner],
            args=[message.raw, redelivery_limit, mode, json.dumps(dict(failure)),
                  self.keys.done_channel(message.id), self.result_ttl],
        )
        return result.decode()

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
        raw = self.client.hgetall(self.keys.task(task_id))
        return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}

    def status(self, task_id: str) -> str:
        value = self.client.hget(self.keys.task(task_id), "status")
        return value.decode() if value else states.UNKNOWN

    def forget(self, task_id: str) -> None:
        self.client.delete(self.keys.task(task_id))

    def purge(self, queue: str) -> int:
        """Delete every message waiting in a queue (all priorities); returns how many."""
        lists = [self.keys.queue(queue, priority) for priority in PRIORITIES]
        pipe = self.client.pipeline(transaction=True)
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

"""What is going on, read from Redis: workers, queues, counters, recent tasks, events.

One reader for every view: ``asyncq inspect`` and ``GET /inspect`` show
``Monitor.snapshot()``, the dashboard polls it, ``asyncq events`` and the
dashboard's task list read the event stream, and /metrics renders the counters.
Nothing here writes; each view costs a few pipelined reads. What Redis holds
that no asyncq wrote (a damaged entry, a key of the wrong type) is left out of
a view, logged once (``asyncq.damage``) and listed in ``Monitor.skipped``.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

import redis

from asyncq import damage, states
from asyncq.beat import Beat
from asyncq.connection import eviction_risk
from asyncq.events import SLICE
from asyncq.keys import PRIORITIES
from asyncq.message import Message
from asyncq.recovery import registered_workers
from asyncq.replies import text_map, texts

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

# A stream entry as the client answers it (decode_responses is off: all bytes):
# (entry id, {field: value}).
StreamEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]
T = TypeVar("T")


@dataclass
class Counters:
    """The counters hash, parsed: cumulative since the counters were last reset."""

    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, state) -> n
    runtime_buckets: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> le -> n
    runtime_sums: dict[str, float] = field(default_factory=dict)  # name -> seconds
    done: dict[str, int] = field(default_factory=dict)  # worker id -> tasks ended

    def add(self, kind: str, parts: list[str], value: str) -> None:
        """One field of the counters hash: its kind, the rest of its tab-separated name
        and its value; ValueError when the value is damaged. Other fields are ignored."""
        if kind == "tasks" and len(parts) == 2:
            self.tasks[(parts[0], parts[1])] = damage.whole(value)
        elif kind == "runtime" and len(parts) == 2:
            self.runtime_buckets.setdefault(parts[0], {})[parts[1]] = damage.whole(value)
        elif kind == "runtime_sum" and len(parts) == 1:
            self.runtime_sums[parts[0]] = damage.finite(value)
        elif kind == "done" and len(parts) == 1:
            self.done[parts[0]] = damage.whole(value)

    def by_state(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for (_, state), count in self.tasks.items():
            totals[state] += count
        return dict(totals)


class Monitor:
    """Reads the state of one app's queues and workers."""

    def __init__(self, app: AsyncQ):
        self.app = app
        self.keys = app.keys
        self.client = app.broker.client
        self.skipped: list[damage.Skipped] = []  # damaged entries left out, each logged once

    # -- damaged data: left out, logged once -------------------------------------
    def skipped_entries(self) -> list[dict[str, str]]:
        """The damaged entries this reader has left out so far, each once."""
        return [skipped.as_json() for skipped in dict.fromkeys(self.skipped)]

    def _skip(self, key: str, entry: str, reason: str) -> None:
        self.skipped.append(damage.skip(key, entry, reason))

    def _unpacked(self, key: str, entry_id: bytes,
                  fields: dict[bytes, bytes]) -> list[dict[str, str]]:
        """``_unpack``; a damaged entry is left out, logged once."""
        try:
            return _unpack(entry_id, fields)
        except ValueError as exc:
            self._skip(key, entry_id.decode(errors="replace"), str(exc))
            return []

    def _read(self, key: str, read: Callable[[], T]) -> T | None:
        """``read()``, a command on ``key``; None if the key holds another type."""
        try:
            return read()
        except redis.ResponseError as exc:
            self._skip(key, "", damage.wrong_type(exc))
            return None

    def _answer(self, key: str, answer: Any, empty: Any) -> Any:
        """One answer of a pipeline run with ``raise_on_error=False``: ``empty`` in place
        of the error for a key that holds another type."""
        if isinstance(answer, Exception):
            self._skip(key, "", damage.wrong_type(answer))
            return empty
        return answer

    def _parsed(self, key: str, entry: str, value: str | None, parse: Callable[[str], T],
                name: str = "") -> T | None:
        """``parse(value)``; None when the value is missing or damaged (then the entry,
        a hash field or a stream entry's field ``name``, is skipped)."""
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self._skip(key, entry, f"{name}: {exc}" if name else str(exc))
            return None

    # -- workers ------------------------------------------------------------
    def workers(self, counters: Counters | None = None) -> list[dict[str, Any]]:
        """Known workers with their heartbeat, and the tasks each holds (active or reserved)."""
        known = registered_workers(self.client, self.keys, self.skipped)
        lists = {worker_id: registration.inflight_lists(self.keys, worker_id)
                 for worker_id, registration in known.items()}
        pipe = self.client.pipeline(transaction=False)
        for worker_id in sorted(known):  # one order, both loops
            pipe.hgetall(self.keys.worker(worker_id))
            for inflight in lists[worker_id]:
                pipe.lrange(inflight, 0, -1)
        answers = iter(pipe.execute(raise_on_error=False))
        counters = counters or self.counters()
        found = []
        for worker_id in sorted(known):
            concurrency = known[worker_id].concurrency
            beat = text_map(self._answer(self.keys.worker(worker_id), next(answers), {}))
            held = [raw for inflight in lists[worker_id]
                    for raw in self._answer(inflight, next(answers), [])]
            found.append(self._describe_worker(worker_id, concurrency, beat, held, counters))
        self._add_task_states(found)
        return found

    def _describe_worker(self, worker_id: str, concurrency: int, beat: dict[str, str],
                         held: list[bytes], counters: Counters) -> dict[str, Any]:
        key = self.keys.worker(worker_id)
        heartbeat = self._parsed(key, "heartbeat", beat.get("heartbeat"), damage.finite)
        pid = self._parsed(key, "pid", beat.get("pid"), damage.whole)
        announced = self._parsed(key, "concurrency", beat.get("concurrency"), damage.whole)
        tasks = []
        for raw in held:
            try:
                message = Message.decode(raw)
            except ValueError:
                continue
            tasks.append({"id": message.id, "name": message.task, "queue": message.queue})
        return {"id": worker_id, "alive": bool(beat), "hostname": beat.get("hostname", ""),
                "pid": pid, "concurrency": concurrency if announced is None else announced,
                "queues": [q for q in beat.get("queues", "").split(",") if q],
                "tasks": [t for t in beat.get("tasks", "").split(",") if t],
                "heartbeat": heartbeat,
                "heartbeat_age": None if heartbeat is None else round(time.time() - heartbeat,
                                                                      3),
                "done": counters.done.get(worker_id, 0), "active": [], "reserved": [],
                "_held": tasks}

    def _add_task_states(self, workers: list[dict[str, Any]]) -> None:
        """Split each worker's held tasks into active (running) and reserved (prefetched)."""
        pipe = self.client.pipeline(transaction=False)
        held = [(worker, task) for worker in workers for task in worker["_held"]]
        for _, task in held:
            pipe.hmget(self.keys.task(task["id"]), "status", "started_at", "worker")
        now = time.time()
        answers = pipe.execute(raise_on_error=False)
        for (worker, task), answer in zip(held, answers, strict=True):
            key = self.keys.task(task["id"])
            status, started, owner = texts(self._answer(key, answer, [states.UNKNOWN, None,
                                                                       None]))
            task["state"] = status or states.PENDING
            started_at = self._parsed(key, "started_at", started, damage.finite)
            if started_at is not None and owner == worker["id"]:
                task["started_at"] = started_at
                task["runtime"] = round(now - started_at, 3)
                worker["active"].append(task)
            else:
                worker["reserved"].append(task)
        for worker in workers:
            del worker["_held"]

    def periodic(self) -> list[dict[str, Any]]:
        """The periodic tasks with their last and next run; [] when the app has none
        (or its schedule cannot be read, which the scheduler itself reports)."""
        if not self.app.conf.beat_schedule:
            return []
        try:
            rows = Beat(self.app).listing()
        except ValueError:
            return []
        except (TypeError, AttributeError, redis.ResponseError) as exc:  # a damaged state
            if isinstance(exc, redis.ResponseError):
                damage.wrong_type(exc)
            self._skip(self.keys.beat("*"), "", f"the periodic tasks' state cannot be read "
                                                f"({type(exc).__name__}: {exc})")
            return []
        for row in rows:
            for name in ("last_run", "next_run"):
                if row[name] is not None and not _finite_number(row[name]):
                    self._skip(self.keys.beat("*"), row["name"], f"{name} is not a time")
                    row[name] = None
        return rows

    # -- queues -------------------------------------------------------------
    def queue_names(self, workers: list[dict[str, Any]] | None = None) -> list[str]:
        """The default queue, routed queues, queues workers consume, and every queue a
        message was sent to (``keys.queues()``: no scan of the keyspace)."""
        names = {self.app.conf.task_default_queue}
        for target in self.app.conf.task_routes.values():
            names.add(target["queue"] if isinstance(target, dict) else str(target))
        for worker in workers or []:
            names.update(worker["queues"])
        key = self.keys.queues()
        sent_to = self._read(key, lambda: cast(set[bytes], self.client.smembers(key))) or set()
        names.update(name.decode(errors="replace") for name in sent_to)
        return sorted(names)

    def queue_lengths(self, names: list[str]) -> dict[str, int]:
        """Messages waiting per queue, all priorities counted (a list of the wrong type
        counts none, and is skipped)."""
        keys = {name: [self.keys.queue(name, priority) for priority in PRIORITIES]
                for name in names}
        pipe = self.client.pipeline(transaction=False)
        for key in (key for lists in keys.values() for key in lists):
            pipe.llen(key)
        answers = iter(pipe.execute(raise_on_error=False))
        return {name: sum(int(self._answer(key, next(answers), 0)) for key in lists)
                for name, lists in keys.items()}

    def scheduled_count(self, names: list[str]) -> int:
        """Messages due later (countdown, ETA, retries) in the scheduled sets of ``names``."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zcard(self.keys.scheduled(name))
        return sum(int(self._answer(self.keys.scheduled(name), answer, 0))
                   for name, answer in zip(names, pipe.execute(raise_on_error=False),
                                           strict=True))

    # -- counters and throughput --------------------------------------------
    def counters(self) -> Counters:
        """The counters hash, parsed; a damaged field is left out."""
        parsed = Counters()
        key = self.keys.counters()
        raw = self._read(key, lambda: text_map(self.client.hgetall(key))) or {}
        for name, value in raw.items():
            kind, *parts = name.split("\t")
            try:
                parsed.add(kind, parts, value)
            except ValueError as exc:
                self._skip(key, name, str(exc))
        return parsed

    def throughput(self, seconds: int = 600) -> list[dict[str, Any]]:
        """Tasks ended per second, by outcome, in 5-second slices over the last ``seconds``."""
        last = int(time.time()) // SLICE * SLICE
        starts = list(range(last - seconds + SLICE, last + SLICE, SLICE))
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self.keys.throughput(start))
        series = []
        for start, answer in zip(starts, pipe.execute(raise_on_error=False), strict=True):
            key = self.keys.throughput(start)
            counts = {}
            for name, value in text_map(self._answer(key, answer, {})).items():
                count = self._parsed(key, name, value, damage.whole)
                if count is not None:
                    counts[name] = count
            series.append({"time": start,
                           "succeeded": counts.get(states.SUCCESS, 0) / SLICE,
                           "failed": counts.get(states.FAILURE, 0) / SLICE,
                           "retried": counts.get(states.RETRY, 0) / SLICE})
        return series

    # -- tasks and events ---------------------------------------------------
    def events(self, after: str = "-", count: int = 100) -> list[dict[str, str]]:
        """Up to ``count`` events after ``after`` (an event's ``stream_id``, a stream
        entry's id, or '-' for the oldest), oldest first; each has its ``stream_id``."""
        entry, seen = _cursor(after)
        start = "-" if after == "-" else entry if seen is not None else f"({entry}"
        key = self.keys.events()
        entries = self._read(key, lambda: cast(list[StreamEntry], self.client.xrange(
            key, start, "+", count=count))) or []
        found: list[dict[str, str]] = []
        for entry_id, fields in entries:
            events = self._unpacked(key, entry_id, fields)
            if seen is not None and entry_id.decode() == entry:
                events = events[seen + 1:]  # the cursor's own entry: its events after the cursor
            found += events
        return found[:count]

    def follow(self, after: str = "$", block_ms: int = 1000,
               count: int = 100) -> list[dict[str, str]]:
        """Wait up to ``block_ms`` for events newer than ``after`` ('$' = from now on)."""
        key = self.keys.events()
        entry, seen = _cursor(after)
        if seen is not None:  # the rest of that entry first, then what comes after it
            rest = self.events(after, count)
            if rest:
                return rest
            after = entry
        try:
            answer = cast("list[tuple[bytes, list[StreamEntry]]] | None", self.client.xread(
                {key: after}, count=count, block=block_ms))
        except redis.ResponseError as exc:
            self._skip(key, "", damage.wrong_type(exc))
            time.sleep(block_ms / 1000)  # no event can come: wait as XREAD would have
            return []
        return [event for _, entries in answer or [] for entry_id, fields in entries
                for event in self._unpacked(key, entry_id, fields)]

    def last_event_id(self) -> str:
        key = self.keys.events()
        newest = self._read(key, lambda: cast(list[StreamEntry], self.client.xrevrange(
            key, "+", "-", count=1))) or []
        return newest[0][0].decode() if newest else "0-0"

    def recent_tasks(self, limit: int = 30, scan: int = 1000) -> list[dict[str, Any]]:
        """The tasks named by the newest events, newest first, with their records' state."""
        seen: dict[str, dict[str, Any]] = {}
        key = self.keys.events()
        entries = self._read(key, lambda: cast(list[StreamEntry], self.client.xrevrange(
            key, "+", "-", count=scan))) or []
        newest_first = (event for entry_id, fields in entries
                        for event in reversed(self._unpacked(key, entry_id, fields)))
        for event in newest_first:
            if not event.get("id") or event["id"] in seen:
                continue
            when = self._parsed(key, event["stream_id"], event.get("time", "0"), damage.finite,
                                "time")
            if when is None:
                continue  # an older event may name the task
            seen[event["id"]] = {"id": event["id"], "name": event.get("name", ""),
                                 "last_event": event.get("type", ""), "time": when,
                                 "worker": event.get("worker", "")}
            if len(seen) >= limit:
                break
        tasks = list(seen.values())
        self._add_record_states(tasks)
        return tasks

    def _add_record_states(self, tasks: list[dict[str, Any]]) -> None:
        """Each task's state and runtime, from its record."""
        pipe = self.client.pipeline(transaction=False)
        for task in tasks:
            pipe.hmget(self.keys.task(task["id"]), "status", "started_at", "finished_at",
                       "runtime")
        for task, answer in zip(tasks, pipe.execute(raise_on_error=False), strict=True):
            key = self.keys.task(task["id"])
            status, started, finished, runtime = texts(self._answer(key, answer, [None] * 4))
            task["state"] = status or states.UNKNOWN
            took = self._parsed(key, "runtime", runtime or None, damage.finite)
            if runtime is None and started and finished:
                began = self._parsed(key, "started_at", started, damage.finite)
                ended = self._parsed(key, "finished_at", finished, damage.finite)
                took = None if began is None or ended is None else round(ended - began, 6)
            task["runtime"] = took

    # -- everything at once -------------------------------------------------
    def snapshot(self, counters: Counters | None = None) -> dict[str, Any]:
        """What ``asyncq inspect --json`` prints and ``GET /inspect`` returns (and what
        /metrics renders, with the ``counters`` it has read already)."""
        counters = counters or self.counters()
        workers = self.workers(counters)
        names = self.queue_names(workers)
        dead = self.keys.dead_letters()
        return {"time": time.time(), "workers": workers,
                "queues": self.queue_lengths(names),
                "scheduled": self.scheduled_count(names),
                "periodic": self.periodic(),
                "dead_letters": self._read(dead, lambda: int(self.client.llen(dead))) or 0,
                "tasks_by_state": counters.by_state(),
                "warnings": self.warnings(),
                "skipped": self.skipped_entries()}  # last: what the reads above left out

    def warnings(self) -> list[str]:
        """What puts tasks at risk, though workers were allowed to go on: a Redis that
        may evict keys when full (``broker_allow_eviction``)."""
        try:
            risk = eviction_risk(self.client)
        except redis.RedisError:  # INFO refused: nothing to go on
            return []
        return [f"{risk}: tasks and results may be lost"] if risk else []


def _cursor(after: str) -> tuple[str, int | None]:
    """A reader's position: a stream entry's id, and the index of the last event seen
    in it (None: the whole entry was seen, or the position is '-' or '$')."""
    entry, dot, index = after.partition(".")
    return entry, int(index) if dot else None


def _unpack(entry_id: bytes, fields: dict[bytes, bytes]) -> list[dict[str, str]]:
    """The events of one stream entry: a batch (field ``events``, a JSON array of
    objects; the ``stream_id`` of its i-th event is the entry's id, a dot and i), or
    one event as the entry's own fields (as written before batches, or by hand).
    ValueError for an ``events`` field that no asyncq wrote."""
    entry = entry_id.decode()
    packed = fields.get(b"events")
    if packed is None:
        return [{**text_map(fields), "stream_id": entry}]
    try:
        items = json.loads(packed)
    except (ValueError, UnicodeDecodeError):
        items = None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("field 'events' is not a JSON array of objects")
    return [{**{str(k): str(v) for k, v in item.items()}, "stream_id": f"{entry}.{index}"}
            for index, item in enumerate(items)]


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


# Fields of a record shown as they are, each with what it must be (None: any text).
_RECORD_FIELDS: dict[str, Callable[[str], object] | None] = {
    "queue": None, "worker": None, "submitted_at": damage.finite, "started_at": damage.finite,
    "finished_at": damage.finite, "runtime": damage.finite, "redeliveries": damage.whole,
    "retries": damage.whole}


def describe(task_id: str, record: Mapping[str, str], key: str = "") -> dict[str, Any]:
    """A task as the REST API and ``asyncq status --json`` show it: its state and, by
    state, its result, error or meta. Values stay as JSON has them (a datetime result
    shows as its tagged object), so the view can be written out as JSON again.

    A field no asyncq wrote (a result that is not JSON, a time that is not a number)
    is left out, logged once, and named in "skipped"; ``key`` is the record's key."""
    where = key or f"the record of task {task_id}"
    skipped: list[damage.Skipped] = []
    state = record.get("status", states.UNKNOWN)
    view: dict[str, Any] = {"task_id": task_id, "task": record.get("task"), "state": state}
    if state == states.SUCCESS:
        _put_json(view, "result", record.get("result"), where, skipped)
    elif "exc_type" in record:
        view["error"] = {"type": record["exc_type"], "message": record.get("exc_message", ""),
                         "traceback": record.get("traceback", "")}
    if "meta" in record:
        _put_json(view, "meta", record["meta"], where, skipped)
    for name, parse in _RECORD_FIELDS.items():
        if name not in record:
            continue
        try:
            if parse is not None:
                parse(record[name])
            view[name] = record[name]
        except ValueError as exc:
            skipped.append(damage.skip(where, name, str(exc)))
    view.update(call_of(record))
    if skipped:
        view["skipped"] = [entry.as_json() for entry in skipped]
    return view


def _put_json(view: dict[str, Any], name: str, text: str | None, where: str,
              skipped: list[damage.Skipped]) -> None:
    try:
        view[name] = None if text is None else json.loads(text)
    except (ValueError, RecursionError):
        skipped.append(damage.skip(where, name, "not JSON"))


def call_of(record: Mapping[str, str]) -> dict[str, Any]:
    """The task's args and kwargs, kept in the record when ``result_extended`` is on."""
    try:
        call = json.loads(record["call"]) if "call" in record else None
    except ValueError:
        return {}
    if not isinstance(call, dict):
        return {}
    return {key: call[key] for key in ("args", "kwargs") if key in call}


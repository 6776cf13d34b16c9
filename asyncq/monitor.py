"""What is going on, read from Redis: workers, queues, counters, recent tasks, events.

One reader for every view: ``asyncq inspect`` and ``GET /inspect`` show
``Monitor.snapshot()``, the dashboard polls it, ``asyncq events`` and the
dashboard's task list read the event stream, and /metrics renders the counters.
Nothing here writes; each view costs a few pipelined reads.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from asyncq import states
from asyncq.beat import Beat
from asyncq.events import SLICE
from asyncq.message import Message
from asyncq.recovery import registered_workers

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

# A stream entry as the client answers it (decode_responses is off: all bytes):
# (entry id, {field: value}).
StreamEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]


@dataclass
class Counters:
    """The counters hash, parsed: cumulative since the counters were last reset."""

    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, state) -> n
    runtime_buckets: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> le -> n
    runtime_sums: dict[str, float] = field(default_factory=dict)  # name -> seconds
    done: dict[str, int] = field(default_factory=dict)  # worker id -> tasks ended

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

    # -- workers ------------------------------------------------------------
    def workers(self, counters: Counters | None = None) -> list[dict[str, Any]]:
        """Known workers with their heartbeat, and the tasks each holds (active or reserved)."""
        known = registered_workers(self.client, self.keys)
        lists = {worker_id: registration.inflight_lists(self.keys, worker_id)
                 for worker_id, registration in known.items()}
        pipe = self.client.pipeline(transaction=False)
        for worker_id in sorted(known):  # one order, both loops
            pipe.hgetall(self.keys.worker(worker_id))
            for inflight in lists[worker_id]:
                pipe.lrange(inflight, 0, -1)
        answers = iter(pipe.execute())
        counters = counters or self.counters()
        found = []
        for worker_id in sorted(known):
            concurrency = known[worker_id].concurrency
            beat = {k.decode(): v.decode() for k, v in next(answers).items()}
            held = [raw for _ in lists[worker_id] for raw in next(answers)]
            found.append(self._describe_worker(worker_id, concurrency, beat, held, counters))
        self._add_task_states(found)
        return found

    def _describe_worker(self, worker_id: str, concurrency: int, beat: dict[str, str],
                         held: list[bytes], counters: Counters) -> dict[str, Any]:
        heartbeat = float(beat["heartbeat"]) if "heartbeat" in beat else None
        tasks = []
        for raw in held:
            try:
                message = Message.decode(raw)
            except ValueError:
                continue
            tasks.append({"id": message.id, "name": message.task, "queue": message.queue})
        return {"id": worker_id, "alive": bool(beat), "hostname": beat.get("hostname", ""),
                "pid": int(beat["pid"]) if "pid" in beat else None,
                "concurrency": int(beat.get("concurrency", concurrency)),
                "queues": [q for q in beat.get("queues", "").split(",") if q],
                "tasks": [t for t in beat.get("tasks", "").split(",") if t],
                "heartbeat": heartbeat,
                "heartbeat_age": round(time.time() - heartbeat, 3) if heartbeat else None,
                "done": counters.done.get(worker_id, 0), "active": [], "reserved": [],
                "_held": tasks}

    def _add_task_states(self, workers: list[dict[str, Any]]) -> None:
        """Split each worker's held tasks into active (running) and reserved (prefetched)."""
        pipe = self.client.pipeline(transaction=False)
        held = [(worker, task) for worker in workers for task in worker["_held"]]
        for _, task in held:
            pipe.hmget(self.keys.task(task["id"]), "status", "started_at", "worker")
        now = time.time()
        for (worker, task), (status, started, owner) in zip(held, pipe.execute(), strict=True):
            task["state"] = status.decode() if status else states.PENDING
            if started and owner and owner.decode() == worker["id"]:
                task["started_at"] = float(started)
                task["runtime"] = round(now - float(started), 3)
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
            return Beat(self.app).listing()
        except ValueError:
            return []

    # -- queues -------------------------------------------------------------
    def queue_names(self, workers: list[dict[str, Any]] | None = None) -> list[str]:
        """The default queue, routed queues, queues workers consume, and every queue a
        message was sent to (``keys.queues()``: no scan of the keyspace)."""
        names = {self.app.conf.task_default_queue}
        for target in self.app.conf.task_routes.values():
            names.add(target["queue"] if isinstance(target, dict) else str(target))
        for worker in workers or []:
            names.update(worker["queues"])
        sent_to = cast(set[bytes], self.client.smembers(self.keys.queues()))
        names.update(name.decode(errors="replace") for name in sent_to)
        return sorted(names)

    # -- counters and throughput --------------------------------------------
    def counters(self) -> Counters:
        parsed = Counters()
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.counters()))
        for raw_field, raw_value in raw.items():
            kind, *parts = raw_field.decode().split("\t")
            value = raw_value.decode()
            if kind == "tasks" and len(parts) == 2:
                parsed.tasks[(parts[0], parts[1])] = int(value)
            elif kind == "runtime" and len(parts) == 2:
                parsed.runtime_buckets.setdefault(parts[0], {})[parts[1]] = int(value)
            elif kind == "runtime_sum" and len(parts) == 1:
                parsed.runtime_sums[parts[0]] = float(value)
            elif kind == "done" and len(parts) == 1:
                parsed.done[parts[0]] = int(value)
        return parsed

    def throughput(self, seconds: int = 600) -> list[dict[str, Any]]:
        """Tasks ended per second, by outcome, in 5-second slices over the last ``seconds``."""
        last = int(time.time()) // SLICE * SLICE
        starts = list(range(last - seconds + SLICE, last + SLICE, SLICE))
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self.keys.throughput(start))
        series = []
        for start, counts in zip(starts, pipe.execute(), strict=True):
            counts = {k.decode(): int(v) for k, v in counts.items()}
            series.append({"time": start,
                           "succeeded": counts.get(states.SUCCESS, 0) / SLICE,
                           "failed": counts.get(states.FAILURE, 0) / SLICE,
                           "retried": counts.get(states.RETRY, 0) / SLICE})
        return series

    # -- tasks and events ---------------------------------------------------
    def events(self, after: str = "-", count: int = 100) -> list[dict[str, str]]:
        """Events after the stream id ``after``, oldest first; each has its ``stream_id``."""
        start = "-" if after == "-" else f"({after}"
        entries = cast(list[StreamEntry],
                       self.client.xrange(self.keys.events(), start, "+", count=count))
        return [_event(entry_id, fields) for entry_id, fields in entries]

    def follow(self, after: str = "$", block_ms: int = 1000,
               count: int = 100) -> list[dict[str, str]]:
        """Wait up to ``block_ms`` for events newer than ``after`` ('$' = from now on)."""
        answer = cast("list[tuple[bytes, list[StreamEntry]]] | None", self.client.xread(
            {self.keys.events(): after}, count=count, block=block_ms))
        return [_event(entry_id, fields) for _, entries in answer or []
                for entry_id, fields in entries]

    def last_event_id(self) -> str:
        newest = cast(list[StreamEntry],
                      self.client.xrevrange(self.keys.events(), "+", "-", count=1))
        return newest[0][0].decode() if newest else "0-0"

    def recent_tasks(self, limit: int = 30, scan: int = 1000) -> list[dict[str, Any]]:
        """The tasks named by the newest events, newest first, with their records' state."""
        seen: dict[str, dict[str, Any]] = {}
        entries = cast(list[StreamEntry],
                       self.client.xrevrange(self.keys.events(), "+", "-", count=scan))
        for entry_id, fields in entries:
            event = _event(entry_id, fields)
            if event.get("id") and event["id"] not in seen:
                seen[event["id"]] = {"id": event["id"], "name": event.get("name", ""),
                                     "last_event": event.get("type", ""),
                                     "time": float(event.get("time", 0)),
                                     "worker": event.get("worker", "")}
                if len(seen) >= limit:
                    break
        tasks = list(seen.values())
        pipe = self.client.pipeline(transaction=False)
        for task in tasks:
            pipe.hmget(self.keys.task(task["id"]), "status", "started_at", "finished_at",
                       "runtime")
        for task, values in zip(tasks, pipe.execute(), strict=True):
            status, started, finished, runtime = (v.decode() if v else None for v in values)
            task["state"] = status or states.UNKNOWN
            if runtime is None and started and finished:
                runtime = f"{float(finished) - float(started):.6f}"
            task["runtime"] = float(runtime) if runtime else None
        return tasks

    # -- everything at once -------------------------------------------------
    def snapshot(self, counters: Counters | None = None) -> dict[str, Any]:
        """What ``asyncq inspect --json`` prints and ``GET /inspect`` returns (and what
        /metrics renders, with the ``counters`` it has read already)."""
        counters = counters or self.counters()
        workers = self.workers(counters)
        names = self.queue_names(workers)
        return {"time": time.time(), "workers": workers,
                "queues": self.app.broker.queue_lengths(names),
                "scheduled": self.app.broker.scheduled_count(names),
                "periodic": self.periodic(),
                "dead_letters": self.client.llen(self.keys.dead_letters()),
                "tasks_by_state": counters.by_state()}


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, str]:
    event = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    event["stream_id"] = entry_id.decode()
    return event


def describe(task_id: str, record: Mapping[str, str]) -> dict[str, Any]:
    """A task as the REST API and ``asyncq status --json`` show it: its state and, by
    state, its result, error or meta. Values stay as JSON has them (a datetime result
    shows as its tagged object), so the view can be written out as JSON again."""
    state = record.get("status", states.UNKNOWN)
    view: dict[str, Any] = {"task_id": task_id, "task": record.get("task"), "state": state}
    if state == states.SUCCESS:
        view["result"] = _json(record.get("result"))
    elif "exc_type" in record:
        view["error"] = {"type": record["exc_type"], "message": record.get("exc_message", ""),
                         "traceback": record.get("traceback", "")}
    if "meta" in record:
        view["meta"] = _json(record["meta"])
    for name in ("queue", "worker", "submitted_at", "started_at", "finished_at", "runtime",
                 "redeliveries", "retries"):
        if name in record:
            view[name] = record[name]
    view.update(call_of(record))
    return view


def call_of(record: Mapping[str, str]) -> dict[str, Any]:
    """The task's args and kwargs, kept in the record when ``result_extended`` is on."""
    try:
        call = json.loads(record["call"]) if "call" in record else None
    except ValueError:
        return {}
    if not isinstance(call, dict):
        return {}
    return {key: call[key] for key in ("args", "kwargs") if key in call}


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)

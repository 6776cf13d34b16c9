"""Task events and counters: what ``inspect``, ``events``, the dashboard and /metrics read.

Each child notes what happens to its tasks (received, started, succeeded,
failed, retried, revoked, ...) and sends its notes itself (``Notes``), in
batches, every ``EVENTS_FLUSH`` seconds and before it waits for work, with one
script, ``lua/observe.lua``: it
appends the batch's events to a Redis Stream capped in length, as one entry (its
field ``events``, a JSON array: one ``XADD`` per batch, not per event; readers
unpack it, ``monitor.py``), and adds the batch's summed counters: tasks per name
and state, a runtime histogram per name, tasks done per worker, and tasks per state in 5-second
slices for the dashboard's throughput chart. Other processes (the API, a
recoverer) send their few notes at once (``Events.flush``).

Counters are kept even when events are off (``worker_send_task_events``).
Celery's counterpart is its event dispatcher (``-E``) and Flower's counters.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncq.scripts import Command, Script, execute

if TYPE_CHECKING:
    from asyncq.connection import RedisClient
    from asyncq.keys import Keys

# Runtime histogram bucket bounds in seconds (each bucket counts runtimes <= its bound).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0, math.inf)
SLICE = 5  # seconds per throughput slice
SLICE_TTL = 3600  # slices older than this are gone
EVENTS_FLUSH = 0.2  # seconds a supervisor holds its children's notes, at most

_OBSERVE = Script.load("observe")  # one batch of notes: stream entries, summed counters


def bucket_of(runtime: float) -> str:
    """The histogram bucket a runtime falls in, named by its upper bound."""
    for bound in RUNTIME_BUCKETS:
        if runtime <= bound:
            return bucket_name(bound)
    return "+Inf"


def bucket_name(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


@dataclass
class Batch:
    """Notes not yet sent: the stream entries, and the counters summed."""

    events: list[dict[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    slice: Counter[str] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.events or self.counts)

    def merge(self, other: Batch) -> None:
        self.events[:0] = other.events  # older first
        self.counts.update(other.counts)
        self.slice.update(other.slice)
        for name, seconds in other.sums.items():
            self.sums[name] += seconds

    def counters_json(self) -> str:
        return json.dumps({"counts": self.counts,
                           "sums": {k: f"{v:.6f}" for k, v in self.sums.items()},
                           "slice": self.slice})

    def events_json(self) -> str:
        return json.dumps(self.events, separators=(",", ":")) if self.events else ""


class Events:
    """A process's unsent notes, and the script that sends them."""

    def __init__(self, keys: Keys, max_length: int):
        self.keys = keys
        self.max_length = max_length  # 0: counters only, no stream
        self.notes = Batch()

    def note(self, kind: str, task_id: str, name: str, worker: str = "",
             count: str | None = None, runtime: float | None = None,
             at: float | None = None, **details: Any) -> None:
        """Keep an event for the next send; ``count`` names the state to count it under."""
        fields = {"type": kind, "id": task_id, "name": name, "worker": worker,
                  "time": f"{at or time.time():.6f}"}
        fields.update((k, str(v)) for k, v in details.items() if v is not None)
        if runtime is not None:
            fields["runtime"] = f"{runtime:.6f}"
        if self.max_length:
            self.notes.events.append(fields)
        if count:
            self.notes.counts[f"tasks\t{name}\t{count}"] += 1
            self.notes.slice[count] += 1
            if worker:
                self.notes.counts[f"done\t{worker}"] += 1
            if runtime is not None:
                self.notes.counts[f"runtime\t{name}\t{bucket_of(runtime)}"] += 1
                self.notes.sums[f"runtime_sum\t{name}"] += runtime

    def take(self) -> Batch:
        """The notes so far, to send; ``restore`` them if the send fails."""
        batch, self.notes = self.notes, Batch()
        return batch

    def restore(self, batch: Batch) -> None:
        batch.merge(self.notes)
        self.notes = batch

    def flush(self, client: RedisClient) -> None:
        """Send the notes now (a supervisor, the API, a recoverer)."""
        if not self.notes:
            return
        batch = self.take()
        try:
            execute(client, self.command(batch))
        except BaseException:
            self.restore(batch)
            raise

    def command(self, batch: Batch) -> Command:
        """The script call that sends ``batch``."""
        slice_key = self.keys.throughput(int(time.time()) // SLICE * SLICE)
        return _OBSERVE.command([self.keys.events(), self.keys.counters(), slice_key],
                                [self.max_length, SLICE_TTL, batch.counters_json(),
                                 batch.events_json(), len(batch.events)])


class Notes:
    """A child's notes: kept in its own ``Events`` and sent by the child itself, in one
    script call for all the tasks that ended meanwhile: before it waits for work, when
    it exits, and, from a small thread (``watch``), every EVENTS_FLUSH seconds while
    it works (so a long task's ``started`` shows while it runs). A child that dies
    loses its unsent notes (at most EVENTS_FLUSH seconds of them); its tasks are
    recovered all the same."""

    def __init__(self, events: Events, client: Callable[[], RedisClient],
                 log: logging.Logger):
        self.events = events
        self.client = client  # the child's connection, made after the fork
        self.log = log
        self.sent_at = time.monotonic()
        self.lock = threading.Lock()  # the child's main thread notes, ``watch`` sends too

    def note(self, kind: str, task_id: str, name: str, worker: str = "",
             count: str | None = None, runtime: float | None = None,
             **details: Any) -> None:
        with self.lock:
            self.events.note(kind, task_id, name, worker, count, runtime, **details)

    def flush(self, now: bool = False) -> None:
        """Send the notes if EVENTS_FLUSH seconds went by since the last send (or ``now``).
        Events are best effort: an error is logged and the notes kept for the next try."""
        with self.lock:
            if not self.events.notes or (
                    not now and time.monotonic() - self.sent_at < EVENTS_FLUSH):
                return
            self.sent_at = time.monotonic()
            batch = self.events.take()
        try:
            execute(self.client(), self.events.command(batch))
        except Exception as exc:
            with self.lock:
                self.events.restore(batch)
            self.log.warning("task events not sent yet (%s): kept for the next try", exc)

    def watch(self) -> None:
        """A thread: sends the notes every EVENTS_FLUSH seconds, whatever the child does."""
        while True:
            time.sleep(EVENTS_FLUSH)
            self.flush()

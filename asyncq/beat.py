"""Periodic tasks (Celery beat), kept in Redis: any number of schedulers, each run sent once.

Celery's beat is one process whose schedule lives in a local file; two of them send
every entry twice. Here every scheduler (``asyncq beat``, ``asyncq worker -B``) reads
the same state from Redis and races for each due run; one script decides:

1. Each entry's state is a field of a hash on its queue's slot
   (``keys.beat(queue)``): its next run, its last run, and a fingerprint of its
   definition, as one JSON string.
2. A scheduler that finds a run due writes the run's PENDING record (its task id is
   derived from the entry and the due time, so every scheduler would write the same
   one, and only if there is none yet), then runs ``beat.lua``: if the entry's state
   is still the string this scheduler read, it stores the next state and pushes the
   message, in one step; if not, another scheduler sent this run first.
3. Nothing is locked: a scheduler that dies holds nothing, and the others (or the next
   one started) carry on. A run missed while every scheduler was down is sent once
   when one comes back, as Celery does; the runs between are skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from asyncq import signals
from asyncq.keys import check_priority
from asyncq.message import as_timestamp, encode_message
from asyncq.replies import text
from asyncq.schedules import BaseSchedule, maybe_schedule
from asyncq.scripts import Script

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

log = logging.getLogger("asyncq.beat")

_IDS = uuid.UUID("6f1d1c1e-4b7a-4c8e-9a52-0c7d2f3b9e10")  # namespace of periodic run ids
MAX_SLEEP = 1.0  # seconds: how often a scheduler looks again at most


@dataclass
class Entry:
    """One periodic task, as ``beat_schedule`` or ``add_periodic_task`` describes it."""

    name: str
    task: str
    schedule: BaseSchedule
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_setting(cls, name: str, spec: dict[str, Any]) -> Entry:
        """``{'task': ..., 'schedule': ..., 'args': ..., 'kwargs': ..., 'options': ...}``."""
        unknown = set(spec) - {"task", "schedule", "args", "kwargs", "options", "relative"}
        if unknown or "task" not in spec or "schedule" not in spec:
            raise ValueError(f"beat_schedule entry {name!r} needs 'task' and 'schedule' "
                             f"(and may have args, kwargs, options); not {sorted(unknown)}")
        check_priority((spec.get("options") or {}).get("priority"))
        schedule = maybe_schedule(spec["schedule"])
        if schedule is None:
            raise ValueError(f"beat_schedule entry {name!r}: 'schedule' is None")
        return cls(name, spec["task"], schedule,
                   list(spec.get("args") or ()), dict(spec.get("kwargs") or {}),
                   dict(spec.get("options") or {}))

    @property
    def fingerprint(self) -> str:
        """Changes when the entry's definition does; its state then starts afresh."""
        return uuid.uuid5(_IDS, json.dumps(
            [self.task, repr(self.schedule), self.args, self.kwargs, self.options],
            sort_keys=True, default=str)).hex[:16]

    def run_id(self, app_name: str, due: float) -> str:
        """The same id for the same run, whichever scheduler sends it."""
        return str(uuid.uuid5(_IDS, f"{app_name}\t{self.name}\t{due:.6f}"))


def entries_of(app: AsyncQ) -> list[Entry]:
    """The app's periodic tasks: ``beat_schedule`` (``add_periodic_task`` adds to it)."""
    return [Entry.from_setting(name, spec) for name, spec in app.conf.beat_schedule.items()]


class Beat:
    """A scheduler: sends each due run of the app's entries, racing any others."""

    _beat = Script.load("beat")

    def __init__(self, app: AsyncQ, clock: Callable[[], float] = time.time):
        self.app = app
        self.clock = clock  # the time source, Unix seconds (tests may turn it)
        self.zone = ZoneInfo(app.conf.timezone)

    def states(self, entries: list[Entry]) -> list[str]:
        """Each entry's state string as Redis holds it ('' when it has none yet)."""
        pipe = self.app.broker.client.pipeline(transaction=False)
        for entry in entries:
            pipe.hget(self.app.keys.beat(self.queue(entry)), entry.name)
        return [text(answer) or "" for answer in pipe.execute()]

    def queue(self, entry: Entry) -> str:
        return str(entry.options.get("queue") or self.app.route(entry.task))

    def tick(self) -> float:
        """Send what is due now; returns the seconds until the next run is due."""
        self.app.finalize()  # on_after_configure receivers may add entries
        entries = entries_of(self.app)
        now = self.clock()
        upcoming = [now + MAX_SLEEP]
        for entry, state in zip(entries, self.states(entries), strict=True):
            upcoming.append(self.advance(entry, state, now))
        return max(0.0, min(upcoming) - self.clock())

    def advance(self, entry: Entry, state: str, now: float) -> float:
        """Start, refresh or send one entry; returns when it is next due."""
        current = json.loads(state) if state else None
        if current is None or current.get("fingerprint") != entry.fingerprint:
            next_run = self.next_after(entry, now)
            self.claim(entry, state, {"next": next_run, "last": None}, None)
            return next_run
        due = float(current["next"])
        if due > now:
            return due
        next_run = self.next_after(entry, max(now, due))
        if self.claim(entry, state, {"next": next_run, "last": due}, due):
            log.info("Scheduler: sending due task %s (%s)", entry.name, entry.task)
        return next_run

    def next_after(self, entry: Entry, moment: float) -> float:
        when = datetime.fromtimestamp(moment, timezone.utc)
        return entry.schedule.next_after(when, self.zone).timestamp()

    def claim(self, entry: Entry, expected: str, new: dict[str, Any],
              due: float | None) -> bool:
        """Store the entry's next state if it is still ``expected``; with ``due``, also
        send that run (its record first, then the message in the same step as the
        state). False when another scheduler got there first."""
        broker, queue = self.app.broker, self.queue(entry)
        state = json.dumps({**new, "fingerprint": entry.fingerprint})
        priority = int(entry.options.get("priority") or 0)
        task_id, message = "", b""
        if due is not None:
            task_id = entry.run_id(self.app.main, due)
            expires = entry.options.get("expires")
            deadline = (self.clock() + expires if isinstance(expires, int | float)
                        else as_timestamp(expires) if expires is not None else None)
            message = encode_message(task_id, entry.task, entry.args, entry.kwargs, queue,
                                     expires=deadline, priority=priority or None)
            broker.record_if_new(task_id, entry.task, queue)
        keep = max(7 * 86400, int(new["next"] - self.clock()) + 86400)
        won = broker.run_script(self._beat, [self.app.keys.beat(queue),
                                             self.app.keys.queue(queue, priority)],
                                [entry.name, expected, state, message, keep])
        if won and task_id:
            broker.events.note("sent", task_id, entry.task, entry=entry.name)
            broker.events.flush(broker.client)
        return bool(won)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; a Redis outage is waited out."""
        log.info("Scheduler: %d entries", len(entries_of(self.app)))
        signals.beat_init.send(sender=self)
        while not stop.is_set():
            try:
                pause = self.tick()
            except Exception as exc:
                log.warning("Scheduler: %s: %s; trying again", type(exc).__name__, exc)
                pause = MAX_SLEEP
            stop.wait(min(pause, MAX_SLEEP))

    def listing(self) -> list[dict[str, Any]]:
        """Each entry with its schedule, last run and next run (``beat --list``)."""
        entries = entries_of(self.app)
        rows = []
        for entry, state in zip(entries, self.states(entries), strict=True):
            current = json.loads(state) if state else {}
            fresh = current.get("fingerprint") == entry.fingerprint
            rows.append({"name": entry.name, "task": entry.task,
                         "schedule": repr(entry.schedule), "queue": self.queue(entry),
                         "last_run": current.get("last") if fresh else None,
                         "next_run": current.get("next") if fresh else None})
        return rows

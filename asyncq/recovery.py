"""Who may hold which messages, and getting them back when the holder dies.

The registry (``Keys.workers``): every worker registers what its children may
hold (a ``Registration``: its concurrency and queues, so one in-flight list
per queue and child) and keeps a heartbeat key alive (``Presence``). A worker
whose heartbeat key lapsed while its registration stayed is dead, and any live
worker recovers its lists; the monitor reads the same registry to show what
each worker holds.

Recovery of one in-flight list is ``recover_list`` (the rules per message are
``Broker.recover``): a supervisor runs it for a dead child, for its own
leftovers at start and for dead workers (``Recovery``); a child runs it for a
list an outage left holding messages (``Child.reclaim``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import redis
from redis.exceptions import ResponseError

from asyncq import damage, states
from asyncq.broker import failure_fields, now
from asyncq.connection import is_refusal, is_transient
from asyncq.exceptions import WorkerLostError
from asyncq.message import Message
from asyncq.replies import text

if TYPE_CHECKING:
    from asyncq.app import AsyncQ
    from asyncq.connection import RedisClient
    from asyncq.keys import Keys
    from asyncq.outage import Outage

log = logging.getLogger("asyncq.worker")

MAX_INFLIGHT_LISTS = 100_000  # per registry entry: an entry that names more is damaged


@dataclass(frozen=True)
class Registration:
    """A worker registry entry, JSON {"concurrency", "queues"}: what the worker's
    children may hold, one in-flight list per queue and child."""

    concurrency: int = 0
    queues: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | bytes) -> Registration:
        """An entry as the registry holds it; ValueError if no worker wrote it."""
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # ValueError includes bad UTF-8
            raise ValueError(f"not JSON ({type(exc).__name__})") from None
        if isinstance(entry, int) and not isinstance(entry, bool):
            # written by an asyncq before queues had slots of their own
            entry = {"concurrency": entry, "queues": []}
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
        concurrency, queues = entry.get("concurrency"), entry.get("queues")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 0:
            raise ValueError("'concurrency' is not a whole number")
        if not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues):
            raise ValueError("'queues' is not a list of queue names")
        if concurrency * len(queues) > MAX_INFLIGHT_LISTS:
            raise ValueError(f"{concurrency} children and {len(queues)} queues: more in-flight "
                             "lists than a worker would have")
        return cls(concurrency, queues)

    def as_json(self) -> str:
        return json.dumps({"concurrency": self.concurrency, "queues": self.queues})

    def inflight_lists(self, keys: Keys, worker_id: str) -> list[str]:
        """The in-flight lists the worker's children may hold."""
        return [keys.inflight(queue, worker_id, slot)
                for queue in self.queues for slot in range(self.concurrency)]


def registered_workers(client: RedisClient, keys: Keys,
                       skipped: list[damage.Skipped] | None = None) -> dict[str, Registration]:
    """Every worker that may hold messages, dead or alive. A damaged entry (or a registry
    of the wrong type) is left out, logged once, and added to ``skipped``: what it holds
    cannot be known, and every other worker is still recovered and shown."""
    found = [] if skipped is None else skipped
    try:
        entries = cast(dict[bytes, bytes], client.hgetall(keys.workers()))
    except redis.ResponseError as exc:
        found.append(damage.skip(keys.workers(), "", damage.wrong_type(exc)))
        return {}
    known = {}
    for raw_id, raw in entries.items():
        try:
            worker_id = raw_id.decode()
        except UnicodeDecodeError:  # such a name names none of a worker's keys
            found.append(damage.skip(keys.workers(), str(text(raw_id)),
                                     "the worker id is not UTF-8 text"))
            continue
        try:
            known[worker_id] = Registration.parse(raw)
        except ValueError as exc:
            found.append(damage.skip(keys.workers(), worker_id,
                                     f"{exc}; the in-flight lists it names cannot be known"))
    return known


def any_exists(client: RedisClient, keys: list[str]) -> bool:
    """Whether any of ``keys`` exists (one EXISTS each: on a cluster they spread)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return any(pipe.execute())


def recover_list(app: AsyncQ, inflight: str, owner: str, mode: str, error: Exception,
                 worker_id: str, ran: dict[str, str] | None = None) -> int:
    """Requeue or fail the messages of one in-flight list held by ``worker_id``;
    returns how many it handled. See ``Broker.recover`` for the rules. ``ran``: where
    it is known (a child of this worker), the tasks its child ran, each with the mode
    to recover it in; the other messages were taken or started with their batch but
    never run, so they go back uncounted (as in a cold shutdown)."""
    broker = app.broker
    failure = failure_fields(error)
    handled = 0
    try:
        held = broker.inflight_messages(inflight)
    except ResponseError as exc:
        if is_refusal(exc):
            raise  # Redis full or busy: the caller tries again later
        log.error("in-flight list %s is damaged (%s): skipped", inflight, exc)
        return 0
    for raw in held:
        try:
            message = Message.decode(raw)
        except ValueError as exc:
            broker.dead_letter(raw, inflight, None, None)
            log.error("garbled in-flight message set aside: %s", exc)
            continue
        how = mode if ran is None else ran.get(message.id, "shutdown")
        try:
            outcome = broker.recover(message, inflight, owner, how,
                                     app.conf.task_redelivery_limit, failure)
        except ResponseError as exc:  # its record is damaged (WRONGTYPE, a bad field)
            if is_refusal(exc):
                raise
            broker.dead_letter(raw, inflight, None, None)
            log.error("Task %s[%s] held by a lost child has a damaged record (%s): its "
                      "message is set aside as a dead letter", message.task, message.id, exc)
            continue
        log.warning("Task %s[%s] held by a lost child: %s", message.task, message.id, outcome)
        if outcome in ("requeued", "failed"):
            handled += 1
            failed = outcome == "failed"
            broker.events.note(outcome, message.id, message.task, worker_id,
                               count=states.FAILURE if failed else None,
                               exception=f"{type(error).__name__}: {error}" if failed else None)
    broker.events.flush(broker.client)
    return handled


class Presence:
    """This worker in the registry: its heartbeat, and its entry while it may hold
    messages (its in-flight lists follow from the entry)."""

    def __init__(self, app: AsyncQ, worker_id: str, registration: Registration,
                 outage: Outage):
        self.app = app
        self.worker_id = worker_id
        self.registration = registration
        self.outage = outage
        # Since when Redis has answered without a break. Dead workers are reaped only
        # once every live worker has had time to beat again (see Recovery.dead_workers).
        self.connected_since: float | None = None

    def name_taken(self) -> bool:
        """Two live workers must never share an id: they would share in-flight lists."""
        if self.app.broker.client.exists(self.app.keys.worker(self.worker_id)):
            log.critical("a worker named %s is already running (its heartbeat is fresh); "
                         "give this one another name with -n", self.worker_id)
            return True
        return False

    def previous(self) -> Registration:
        """What a previous run under this worker's name registered (empty if none):
        the in-flight lists it may have left behind follow from it. A damaged entry
        (or registry) is skipped, logged once: then only the lists of this run's own
        registration are taken back at start."""
        key = self.app.keys.workers()
        try:
            entry = self.app.broker.client.hget(key, self.worker_id)
        except redis.ResponseError as exc:
            damage.skip(key, "", damage.wrong_type(exc))
            return Registration()
        try:
            return Registration.parse(entry) if entry else Registration()
        except ValueError as exc:
            damage.skip(key, self.worker_id, f"{exc}; what the previous run held cannot be "
                                             "known")
            return Registration()

    def beat(self) -> None:
        """Announce this worker; if the beats stop, the key lapses and others recover its work."""
        if not self.outage.once(self._beat):
            self.connected_since = None
        elif self.connected_since is None:
            self.connected_since = time.monotonic()

    def _beat(self) -> None:
        keys, conf = self.app.keys, self.app.conf
        pipe = self.app.broker.client.pipeline(transaction=True)  # all {prefix}: one slot
        pipe.hset(keys.worker(self.worker_id), mapping={
            "id": self.worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "concurrency": self.registration.concurrency,
            "queues": ",".join(self.registration.queues), "heartbeat": now(),
            "tasks": ",".join(self.app.task_names())})
        pipe.expire(keys.worker(self.worker_id), max(1, round(conf.worker_lost_after)))
        pipe.hset(keys.workers(), self.worker_id, self.registration.as_json())
        pipe.execute()

    def leave(self) -> None:
        """Drop the heartbeat; leave the registry too, unless messages are still held
        (then others recover them)."""
        keys, client = self.app.keys, self.app.broker.client
        held = any_exists(client, self.registration.inflight_lists(keys, self.worker_id))
        pipe = client.pipeline(transaction=True)
        pipe.delete(keys.worker(self.worker_id))
        if not held:
            pipe.hdel(keys.workers(), self.worker_id)
            pipe.hdel(keys.counters(), f"done\t{self.worker_id}")
        pipe.execute()


class Recovery:
    """A supervisor's recovery: its own leftovers at start, a dead child's lists, and
    the lists of dead workers."""

    def __init__(self, app: AsyncQ, worker_id: str, registration: Registration,
                 outage: Outage):
        self.app = app
        self.worker_id = worker_id
        self.registration = registration
        self.outage = outage

    def own_leftovers(self, previous: Registration) -> None:
        """A worker restarted under the same name first takes back what it held, in the
        lists its previous run registered and in the ones it uses now."""
        keys = self.app.keys
        held = previous.inflight_lists(keys, self.worker_id)
        held += self.registration.inflight_lists(keys, self.worker_id)
        error = WorkerLostError("Worker restarted while running the task")
        for inflight in dict.fromkeys(held):
            recover_list(self.app, inflight, inflight, "lost", error, self.worker_id)

    def dead_child(self, slot: int, mode: str, error: Exception, running: str = "",
                   ended: Sequence[str] = ()) -> None:
        """What the child in ``slot`` held, one in-flight list per queue. ``running``:
        the task it was running ('' = none), recovered in ``mode``; ``ended``: tasks it
        ran whose ends it still held, which count a redelivery (a time limit was not
        theirs); the rest it never ran."""
        ran = {task_id: "shutdown" if mode == "shutdown" else "lost" for task_id in ended}
        if running:
            ran[running] = mode
        for queue in self.registration.queues:
            inflight = self.app.keys.inflight(queue, self.worker_id, slot)
            recover_list(self.app, inflight, inflight, mode, error, self.worker_id, ran)

    def dead_workers(self, connected_since: float | None) -> None:
        """Recover the work of workers whose heartbeat has lapsed (a host died).

        Every live worker does this; recovery moves each message at most once and
        leaves a worker alone again as soon as its heartbeat is back. After an
        outage every heartbeat may have lapsed: the others are given two
        heartbeats and the longest backoff to beat again first.
        """
        settle = 2 * self.app.conf.worker_heartbeat_interval + self.outage.max_delay
        if connected_since is None or time.monotonic() - connected_since < settle:
            return
        try:
            self.outage.once(self._reap)
        except Exception:  # a bug here must not take this worker down with the dead one
            log.exception("recovering dead workers failed; will try again")

    def _reap(self) -> None:
        keys, client = self.app.keys, self.app.broker.client
        known = registered_workers(client, keys)
        known.pop(self.worker_id, None)
        pipe = client.pipeline(transaction=False)
        for worker_id in known:
            pipe.exists(keys.worker(worker_id))
        alive = pipe.execute()
        for (worker_id, registration), is_alive in zip(known.items(), alive, strict=True):
            if not is_alive:
                self._dead_worker_apart(worker_id, registration)

    def _dead_worker_apart(self, worker_id: str, registration: Registration) -> None:
        """Recover one dead worker; if that fails (a list of its own is damaged), say so
        once and go on to the others. Redis being away ends the round: it is retried."""
        try:
            self._dead_worker(worker_id, registration)
        except Exception as exc:
            if is_transient(exc):
                raise
            damage.skip(self.app.keys.workers(), worker_id,
                        f"recovering its tasks failed: {type(exc).__name__}: {exc}",
                        exc_info=not isinstance(exc, redis.ResponseError))  # a bug: show where

    def _dead_worker(self, worker_id: str, registration: Registration) -> None:
        keys, client = self.app.keys, self.app.broker.client
        owner = keys.worker(worker_id)
        error = WorkerLostError(f"Worker {worker_id} stopped sending heartbeats")
        held = registration.inflight_lists(keys, worker_id)
        handled = sum(recover_list(self.app, inflight, owner, "lost", error, worker_id)
                      for inflight in held)
        if client.exists(owner):
            return  # it came back meanwhile
        if not any_exists(client, held):
            pipe = client.pipeline(transaction=False)
            pipe.hdel(keys.workers(), worker_id)
            pipe.hdel(keys.counters(), f"done\t{worker_id}")  # its tally goes with it
            pipe.execute(raise_on_error=False)  # a counters key of the wrong type keeps it
        log.warning("worker %s lost its heartbeat: recovered %d task(s)", worker_id, handled)

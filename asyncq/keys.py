"""Every Redis key asyncq uses, in one place.

Keys are laid out for Redis Cluster: every script touches the keys of one hash
tag (one slot) only, and queues spread over the cluster's masters.
With the prefix ``P`` (the setting ``key_prefix``, "asyncq" by default):

- per queue ``Q``, tag ``{P:Q}``: its lists (one per priority), the in-flight
  lists of the children consuming it, its scheduled set, and the member sets
  of chords whose body goes to ``Q``;
- per task, tagged by its id: its record ``P:task:{id}`` and its channel, so
  that a record is found from the id alone;
- tag ``{P}``: the worker registry and heartbeats, dead letters, the event
  stream and the counters.

``redis-cli --scan --pattern '*asyncq*'`` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

# Message priorities: 0 (each queue's own list) to 9, higher runs first.
PRIORITIES = range(10)


def check_priority(priority: object) -> None:
    """A priority is a whole number from 0 to 9 (or None: the queue's own list)."""
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)
                                 or priority not in PRIORITIES):
        raise ValueError(f"priority must be a whole number from 0 to 9, not {priority!r}")


@dataclass(frozen=True)
class Keys:
    """Builds key names for one key prefix (the setting ``key_prefix``)."""

    prefix: str = "asyncq"

    @property
    def tag(self) -> str:
        """The hash tag of the keys shared by the whole app (workers, dead letters, events)."""
        return "{" + self.prefix + "}"

    def queue_tag(self, name: str) -> str:
        """The hash tag of everything that belongs to one queue."""
        return "{" + self.prefix + ":" + name + "}"

    # -- per queue ----------------------------------------------------------
    def queue(self, name: str, priority: int = 0) -> str:
        """List of JSON messages waiting to run: LPUSH to enqueue, taken from the right.
        Priorities 1-9 have a list each beside the queue's own (priority 0)."""
        base = f"{self.queue_tag(name)}:queue"
        return f"{base}:p{priority}" if priority else base

    def inflight(self, queue: str, worker_id: str, slot: int) -> str:
        """List of messages of ``queue`` one child process has taken but not yet
        acknowledged (a child has one per queue it consumes)."""
        return f"{self.queue_tag(queue)}:inflight:{worker_id}:{slot}"

    def scheduled(self, queue: str) -> str:
        """Sorted set of the queue's messages due later (countdown, ETA, retries),
        scored by due time."""
        return f"{self.queue_tag(queue)}:scheduled"

    def rate(self, queue: str, task: str) -> str:
        """When the next free slot of a rate-limited task on this queue starts (a
        number, expiring once it is past): shared by every worker of the queue.
        Beside it, ``<this key>:taken``: the slots its waiting messages hold."""
        return f"{self.queue_tag(queue)}:rate:{task}"

    def beat(self, queue: str) -> str:
        """Hash of the periodic entries sent to this queue: entry name -> JSON state
        (next run, last run, fingerprint). One field per entry; kept a week past use."""
        return f"{self.queue_tag(queue)}:beat"

    def chord(self, body_queue: str, body_id: str) -> str:
        """Set of a chord's members that succeeded; when full, the body is queued.
        It lives beside the body's queue, so that counting and queueing are one step."""
        return f"{self.queue_tag(body_queue)}:chord:{body_id}"

    def chord_bodies(self, body_queue: str, body_id: str) -> str:
        """The messages of a chord's body, written once when the chord is sent, beside
        its member set: what completing the chord queues."""
        return f"{self.chord(body_queue, body_id)}:bodies"

    # -- per task -----------------------------------------------------------
    def task(self, task_id: str) -> str:
        """Hash holding one task's record: status, result, error, timestamps, meta."""
        return f"{self.prefix}:task:{{{task_id}}}"

    def done_channel(self, task_id: str) -> str:
        """Pub/sub channel told of custom and final states, so waiters need not poll."""
        return f"{self.prefix}:done:{{{task_id}}}"

    # -- the whole app ------------------------------------------------------
    def worker(self, worker_id: str) -> str:
        """Hash describing a live worker; its TTL is the heartbeat."""
        return f"{self.tag}:worker:{worker_id}"

    def workers(self) -> str:
        """Hash of worker id -> JSON {"concurrency", "queues"} for every worker that may
        hold messages (its in-flight lists follow from it); an entry whose heartbeat
        key has lapsed marks a dead worker to recover."""
        return f"{self.tag}:workers"

    def dead_letters(self) -> str:
        """List of messages that could not be run (garbled, unregistered task)."""
        return f"{self.tag}:dead"

    def queues(self) -> str:
        """Set of the queue names messages were sent to: how the monitor finds queues
        without scanning the keyspace."""
        return f"{self.tag}:queues"

    def events(self) -> str:
        """Stream of task events (received, started, succeeded, ...), capped in length."""
        return f"{self.tag}:events"

    def counters(self) -> str:
        """Hash of counters: tasks per name and state, runtime buckets, tasks per worker."""
        return f"{self.tag}:counters"

    def throughput(self, slice_start: int) -> str:
        """Hash of tasks per state that ended in one 5-second slice (Unix time it starts)."""
        return f"{self.tag}:throughput:{slice_start}"

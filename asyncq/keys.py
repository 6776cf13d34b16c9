"""Every Redis key asyncq uses, in one place.

All keys of one app share the hash tag ``{prefix}`` so that every script and
MULTI touches a single Redis Cluster slot. ``redis-cli --scan --pattern
'{asyncq}:*'`` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

# Message priorities: 0 (each queue's own list) to 9, higher runs first.
PRIORITIES = range(10)


@dataclass(frozen=True)
class Keys:
    """Builds key names for one key prefix (the setting ``key_prefix``)."""

    prefix: str = "asyncq"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    def queue(self, name: str, priority: int = 0) -> str:
        """List of JSON messages waiting to run: LPUSH to enqueue, taken from the right.
        Priorities 1-9 have a list each beside the queue's own (priority 0)."""
        base = f"{self.tag}:queue:{name}"
        return f"{base}:p{priority}" if priority else base

    def task(self, task_id: str) -> str:
        """Hash holding one task's record: status, result, error, timestamps, meta."""
        return f"{self.tag}:task:{task_id}"

    def done_channel(self, task_id: str) -> str:
        """Pub/sub channel told of custom and final states, so waiters need not poll."""
        return f"{self.tag}:done:{task_id}"

    def inflight(self, worker_id: str, slot: int) -> str:
        """List of messages one child process has taken but not yet acknowledged."""
        return f"{self.tag}:inflight:{worker_id}:{slot}"

    def inflight_owner(self, inflight: str) -> str:
        """The worker id in an in-flight list's key."""
        return inflight[len(f"{self.tag}:inflight:"):].rsplit(":", 1)[0]

    def worker(self, worker_id: str) -> str:
        """Hash describing a live worker; its TTL is the heartbeat."""
        return f"{self.tag}:worker:{worker_id}"

    def workers(self) -> str:
        """Hash of worker id -> concurrency for every worker that may hold messages;
        an entry whose heartbeat key has lapsed marks a dead worker to recover."""
        return f"{self.tag}:workers"

    def chord(self, body_id: str) -> str:
        """Set of a chord's members that succeeded; when full, the body is queued."""
        return f"{self.tag}:chord:{body_id}"

    def scheduled(self) -> str:
        """Sorted set of messages due later (countdown, ETA, retries), scored by due time."""
        return f"{self.tag}:scheduled"

    def dead_letters(self) -> str:
        """List of messages that could not be run (garbled, unregistered task)."""
        return f"{self.tag}:dead"

    def events(self) -> str:
        """Stream of task events (received, started, succeeded, ...), capped in length."""
        return f"{self.tag}:events"

    def counters(self) -> str:
        """Hash of counters: tasks per name and state, runtime buckets, tasks per worker."""
        return f"{self.tag}:counters"

    def throughput(self, slice_start: int) -> str:
        """Hash of tasks per state that ended in one 5-second slice (Unix time it starts)."""
        return f"{self.tag}:throughput:{slice_start}"

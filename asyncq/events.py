"""Task events and counters: what ``inspect``, ``events``, the dashboard and /metrics read.

A worker notes what happens to each task (received, started, succeeded,
failed, retried, revoked, ...) and sends its notes along with the next Redis
call it makes anyway (``Broker.fetch`` and ``Broker.start`` pipeline them), so
watching costs no extra round trip. One script, ``_OBSERVE``, appends the notes
to a Redis Stream capped in length (``XADD MAXLEN ~``) and bumps counters:
tasks per name and state, a runtime histogram per name, tasks done per worker,
and tasks per state in 5-second slices for the dashboard's throughput chart.

Counters are kept even when events are off (``worker_send_task_events``).
Celery's counterpart is its event dispatcher (``-E``) and Flower's counters.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

    from asyncq.keys import Keys

# Runtime histogram bucket bounds in seconds (each bucket counts runtimes <= its bound).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0, math.inf)
SLICE = 5  # seconds per throughput slice
SLICE_TTL = 3600  # slices older than this are gone

# The event types, as in Celery (``task-received`` and so on, without the prefix).
EVENT_TYPES = ("received", "started", "succeeded", "failed", "retried", "revoked",
               "rejected", "requeued")

# KEYS: events stream, counters hash, this slice's hash.  ARGV: stream length
# (0 = no events, counters only), slice TTL, the notes as a JSON array of
# {event = flat field/value list, name, count = state to count or absent,
# worker, bucket = runtime bucket, runtime}.
_OBSERVE = """
local maxlen = tonumber(ARGV[1])
for _, note in ipairs(cjson.decode(ARGV[3])) do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(note.event))
  end
  if note.count then
    redis.call('HINCRBY', KEYS[2], 'tasks\\t' .. note.name .. '\\t' .. note.count, 1)
    redis.call('HINCRBY', KEYS[3], note.count, 1)
    if note.worker then redis.call('HINCRBY', KEYS[2], 'done\\t' .. note.worker, 1) end
    if note.bucket then
      redis.call('HINCRBY', KEYS[2], 'runtime\\t' .. note.name .. '\\t' .. note.bucket, 1)
      redis.call('HINCRBYFLOAT', KEYS[2], 'runtime_sum\\t' .. note.name, note.runtime)
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[2])
"""


def bucket_of(runtime: float) -> str:
    """The histogram bucket a runtime falls in, named by its upper bound."""
    for bound in RUNTIME_BUCKETS:
        if runtime <= bound:
            return bucket_name(bound)
    return "+Inf"


def bucket_name(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class Events:
    """A process's unsent notes, and the script that sends them."""

    def __init__(self, client: redis.Redis, keys: Keys, max_length: int):
        self.keys = keys
        self.max_length = max_length  # 0: counters only, no stream
        self.notes: list[dict[str, Any]] = []
        self._observe = client.register_script(_OBSERVE)

    def note(self, kind: str, task_id: str, name: str, worker: str = "",
             count: str | None = None, runtime: float | None = None,
             **details: Any) -> None:
        """Keep an event for the next send; ``count`` names the state to count it under."""
        fields = {"type": kind, "id": task_id, "name": name, "worker": worker,
                  "time": f"{time.time():.6f}"}
        fields.update((k, str(v)) for k, v in details.items() if v is not None)
        if runtime is not None:
            fields["runtime"] = f"{runtime:.6f}"
        note: dict[str, Any] = {"event": [x for pair in fields.items() for x in pair],
                                "name": name}
        if count:
            note["count"] = count
            if worker:
                note["worker"] = worker
            if runtime is not None:
                note["bucket"], note["runtime"] = bucket_of(runtime), f"{runtime:.6f}"
        self.notes.append(note)

    def send_in(self, pipe: Pipeline) -> int:
        """Queue the notes into ``pipe`` as an EVALSHA; returns how many. Call ``sent``
        once the pipeline has run, so that a failed send keeps them."""
        if not self.notes:
            return 0
        keys, args = self._call()
        pipe.execute_command("EVALSHA", self._observe.sha, len(keys), *keys, *args)
        return len(self.notes)

    def sent(self, how_many: int) -> None:
        del self.notes[:how_many]

    def flush(self, client: redis.Redis) -> None:
        """Send the notes now (a supervisor, the API, a child about to exit)."""
        if self.notes:
            sending = len(self.notes)
            keys, args = self._call()
            self._observe(keys=keys, args=args, client=client)
            self.sent(sending)

    def _call(self) -> tuple[list[str], list[Any]]:
        slice_key = self.keys.throughput(int(time.time()) // SLICE * SLICE)
        return ([self.keys.events(), self.keys.counters(), slice_key],
                [self.max_length, SLICE_TTL, json.dumps(self.notes)])

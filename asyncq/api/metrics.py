"""GET /metrics: the counters in Prometheus's text format, written directly.

The format is small enough not to need ``prometheus_client``: a HELP and TYPE
line per metric, then one line per label set. Counts come from the counters
the workers keep in Redis (see ``asyncq.events``), so every API process
reports the same totals.
"""

from __future__ import annotations

from collections.abc import Iterable

from asyncq.events import RUNTIME_BUCKETS, bucket_name
from asyncq.monitor import Monitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(monitor: Monitor) -> str:
    """Every metric, as one text document."""
    counters = monitor.counters()
    snapshot = monitor.snapshot(counters)  # one read of the counters hash for both
    workers = snapshot["workers"]
    lines: list[str] = []
    lines += _metric("asyncq_tasks_total", "counter", "Tasks that reached a state, by task "
                     "name and state (final states and retries).",
                     ((_labels(task=name, state=state), count)
                      for (name, state), count in sorted(counters.tasks.items())))
    lines += _histogram(counters.runtime_buckets, counters.runtime_sums)
    lines += _metric("asyncq_queue_length", "gauge", "Messages waiting in a queue.",
                     ((_labels(queue=name), depth)
                      for name, depth in snapshot["queues"].items()))
    lines += _metric("asyncq_workers_alive", "gauge", "Workers whose heartbeat is fresh.",
                     [("", sum(1 for worker in workers if worker["alive"]))])
    lines += _metric("asyncq_tasks_active", "gauge", "Tasks running now, per worker.",
                     ((_labels(worker=worker["id"]), len(worker["active"]))
                      for worker in workers if worker["alive"]))
    lines += _metric("asyncq_scheduled_tasks", "gauge", "Messages waiting for their ETA.",
                     [("", snapshot["scheduled"])])
    lines += _metric("asyncq_dead_letters", "gauge", "Messages set aside as unrunnable.",
                     [("", snapshot["dead_letters"])])
    lines += _metric("asyncq_damaged_entries", "gauge", "Damaged entries in Redis this "
                     "scrape left out (each logged once by the API).",
                     [("", len(snapshot["skipped"]))])
    return "\n".join(lines) + "\n"


def _histogram(buckets: dict[str, dict[str, int]], sums: dict[str, float]) -> list[str]:
    """Runtime histogram per task; Redis keeps per-bucket counts, Prometheus wants them
    cumulative."""
    name = "asyncq_task_runtime_seconds"
    lines = [f"# HELP {name} Time tasks ran, by task name.", f"# TYPE {name} histogram"]
    for task in sorted(buckets):
        total = 0
        for bound in RUNTIME_BUCKETS:
            le = bucket_name(bound)
            total += buckets[task].get(le, 0)
            lines.append(f"{name}_bucket{_labels(task=task, le=le)} {total}")
        lines.append(f"{name}_sum{_labels(task=task)} {sums.get(task, 0.0)!r}")
        lines.append(f"{name}_count{_labels(task=task)} {total}")
    return lines


def _metric(name: str, kind: str, help_text: str,
            samples: Iterable[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(f"{name}{labels} {value}" for labels, value in samples)]


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    """Label values escape backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

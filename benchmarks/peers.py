"""Reference rows for the fastest Python peers, each with its own minimal task module on
the same Redis: drain throughput of a no-op and of a 10 ms sleep under Dramatiq
(benchmarks/peer_dramatiq_tasks.py) and RQ (benchmarks/peer_rq_tasks.py).

Each measurement flushes the given database, queues N messages one by one from this
process (timed on its own), then starts the workers and waits until all N are done.
Completion and its timing are read from each system's own state, as benchmarks/measure.py
does for asyncq and Celery:

* Dramatiq: a message is done once acked, i.e. gone from the broker's ``<queue>.msgs``
  hash (it is acked only after the Results middleware has stored its result), so the
  poll is one HLEN. Afterwards every message's result key must exist; its store time is
  recovered from the key's remaining TTL (Dramatiq sets it with PEXPIRE right as it
  stores the result): stored = now - (result_ttl - PTTL), to the millisecond.
* RQ: a job is done once in the queue's FinishedJobRegistry (one ZCARD per poll); the
  FailedJobRegistry must stay empty. Its store time is the ID of the entry RQ XADDs to
  ``rq:results:<job id>``, which Redis stamps with its clock in milliseconds.

``python -m benchmarks.peers`` runs every row against a private redis-server.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/asyncq-bench"))
TIMEOUT = 300.0  # seconds; every wait here is bounded by it
POLL = 0.05  # seconds between two completion checks (one O(1) Redis command each)
TASKS = ("noop", "sleep10")


# -- shared machinery -----------------------------------------------------------
def _tasks(module: str, url: str) -> ModuleType:
    """A peer's task module, imported afresh against ``url``."""
    os.environ["BENCH_REDIS_URL"] = url
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")


class _Workers:
    """Worker processes of one peer, output to a log file, stopped cleanly at the end."""

    def __init__(self, name: str, url: str, commands: Sequence[list[str]]):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"peer-{name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "BENCH_REDIS_URL": url}
        self.launched = time.time()
        self.processes = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log,
                             stderr=subprocess.STDOUT, start_new_session=True)
            for command in commands]

    def all_exited(self) -> bool:
        return all(p.poll() is not None for p in self.processes)

    def failed(self) -> bool:
        return any(p.poll() not in (None, 0) for p in self.processes)

    def stop(self, grace: float = 30.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.log.close()


def _wait_done(label: str, n: int, done: Callable[[], int], failed: Callable[[], int],
               workers: _Workers, timeout: float = TIMEOUT) -> None:
    """Poll ``done()`` until it reaches ``n``; raise on failures, dead workers, timeout."""
    deadline = time.monotonic() + timeout
    while True:
        count = done()
        if count >= n:
            return
        if failed():
            raise RuntimeError(f"{label}: {failed()} task(s) failed; see {workers.log_path}")
        if workers.failed() or (workers.all_exited() and done() < n):
            raise RuntimeError(f"{label}: workers exited after {count}/{n} tasks; "
                               f"see {workers.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: only {count}/{n} tasks done after {timeout:.0f}s; "
                               f"see {workers.log_path}")
        time.sleep(POLL)


def _row(system: str, n: int, enqueue_s: float, launched: float, stored: list[float],
         versions: str) -> dict[str, Any]:
    """The result row, from the launch time and every task's result-store time."""
    drain_s = max(stored) - launched
    first_done_s = min(stored) - launched
    return {"system": system, "tasks": n, "drain_s": round(drain_s, 3),
            "tasks_per_s": round(n / drain_s, 1), "enqueue_per_s": round(n / enqueue_s, 1),
            "first_done_s": round(first_done_s, 3),
            "steady_tasks_per_s": round(n / (drain_s - first_done_s), 1),
            "versions": versions}


def _chunks(items: Sequence[str], size: int = 1000):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- Dramatiq -------------------------------------------------------------------
def _dramatiq_store_times(client: redis.Redis, keys: Sequence[str], ttl_ms: int) -> list[float]:
    """When each result key was stored (Unix seconds), from its remaining TTL."""
    stored: list[float] = []
    for chunk in _chunks(keys):
        pipe = client.pipeline(transaction=False)
        pipe.time()
        for key in chunk:
            pipe.pttl(key)
        pipe.time()
        before, *pttls, after = pipe.execute()
        now = (before[0] + before[1] / 1e6 + after[0] + after[1] / 1e6) / 2
        missing = sum(1 for p in pttls if p < 0)
        if missing:
            raise RuntimeError(f"dramatiq: {missing} result(s) missing after the drain")
        stored += [now - (ttl_ms - p) / 1000 for p in pttls]
    return stored


def drain_dramatiq(redis_url: str, n: int, task: str, processes: int, threads: int) -> dict:
    """Dramatiq ``--processes P --threads T`` draining N queued messages of ``task``."""
    import dramatiq

    _check_task(task)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    tasks = _tasks("benchmarks.peer_dramatiq_tasks", redis_url)
    actor = getattr(tasks, task)
    started = time.perf_counter()
    messages = [actor.send() for _ in range(n)]
    enqueue_s = time.perf_counter() - started
    result_keys = [tasks.backend.build_message_key(m) for m in messages]
    pending_key = f"{tasks.broker.namespace}:{tasks.QUEUE}.msgs"  # unacked messages
    dead_key = f"{tasks.broker.namespace}:{tasks.QUEUE}.XQ"  # dead-lettered ones
    system = f"dramatiq {processes}x{threads}"
    workers = _Workers(f"dramatiq-{processes}x{threads}", redis_url, [[
        sys.executable, "-m", "dramatiq", "benchmarks.peer_dramatiq_tasks",
        "--processes", str(processes), "--threads", str(threads)]])
    try:
        _wait_done(system, n, lambda: n - client.hlen(pending_key),
                   lambda: client.zcard(dead_key), workers)
        stored = _dramatiq_store_times(client, result_keys, tasks.RESULT_TTL_MS)
    finally:
        workers.stop()
        client.close()
    return _row(system, n, enqueue_s, workers.launched, stored,
                f"dramatiq {dramatiq.__version__}")


# -- RQ -------------------------------------------------------------------------
def _rq_store_times(client: redis.Redis, job_ids: Sequence[str]) -> list[float]:
    """When each job's result was stored (Unix seconds), from its result stream entry."""
    from rq.results import Result

    stored: list[float] = []
    for chunk in _chunks(job_ids):
        pipe = client.pipeline(transaction=False)
        for job_id in chunk:
            pipe.xrevrange(Result.get_key(job_id), count=1)
        for entries in pipe.execute():
            if not entries:
                raise RuntimeError("rq: a job's result is missing after the drain")
            stored.append(int(entries[0][0].split(b"-")[0]) / 1000)
    return stored


def drain_rq(redis_url: str, n: int, task: str, workers: int) -> dict:
    """``workers`` RQ SimpleWorkers (burst mode) draining N queued jobs of ``task``."""
    import rq

    _check_task(task)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    tasks = _tasks("benchmarks.peer_rq_tasks", redis_url)
    queue, func = tasks.queue(), getattr(tasks, task)
    started = time.perf_counter()
    job_ids = [queue.enqueue(func).id for _ in range(n)]
    enqueue_s = time.perf_counter() - started
    finished_key = queue.finished_job_registry.key
    failed_key = queue.failed_job_registry.key
    system = f"rq {workers}x SimpleWorker"
    command = [sys.executable, "-m", "rq.cli", "worker", "--worker-class",
               "rq.worker.SimpleWorker", "--url", redis_url, "--burst",
               "--logging_level", "WARNING", tasks.QUEUE]
    procs = _Workers(f"rq-{workers}", redis_url, [command] * workers)
    try:
        _wait_done(system, n, lambda: client.zcard(finished_key),
                   lambda: client.zcard(failed_key), procs)
        stored = _rq_store_times(client, job_ids)
    finally:
        procs.stop()
        queue.connection.close()
        client.close()
    return _row(system, n, enqueue_s, procs.launched, stored, f"rq {rq.__version__}")


# -- standalone check -----------------------------------------------------------
def main() -> None:
    from asyncq.cli.localredis import LocalRedis

    with tempfile.TemporaryDirectory(prefix="peers-redis-") as tmp:
        server = LocalRedis(tmp).start()
        try:
            for task, n in (("noop", 20000), ("sleep10", 2000)):
                for processes, threads in ((2, 8), (2, 1)):
                    print(drain_dramatiq(server.url, n, task, processes, threads), flush=True)
                print(drain_rq(server.url, n, task, 2), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

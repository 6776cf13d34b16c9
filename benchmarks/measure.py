"""One measurement each, for asyncq or Celery, on the same Redis and the same tasks.

Every function takes the system's name ("asyncq" or "celery") and a Redis URL of a
database it may flush; the task code is benchmarks/bench_tasks.py, imported under
the system being measured (the import is the only difference).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/asyncq-bench"))
# Seconds to wait after the last final state before counting commands: asyncq's
# supervisor sends its children's task events every 0.2 s, so the last batch counts.
SETTLE = 0.5


def tasks_for(system: str, url: str) -> ModuleType:
    """benchmarks.bench_tasks, imported afresh under ``system``."""
    os.environ["BENCH_SYSTEM"], os.environ["BENCH_REDIS_URL"] = system, url
    sys.modules.pop("benchmarks.bench_tasks", None)
    return importlib.import_module("benchmarks.bench_tasks")


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls of every command since Redis started (INFO commandstats), by name.
    Redis counts the commands its scripts call too, each under its own name."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(values["calls"])
                    for name, values in stats.items()})


def calls_per_task(before: Counter[str], after: Counter[str], n: int,
                   own: Counter[str] | dict[str, int]) -> dict[str, float]:
    """Commands Redis executed per task between two ``command_calls``, by name, less
    the benchmark's ``own`` (its completion polls, and the first INFO: an INFO is
    counted once it has answered, so ``after`` holds ``before``'s, not its own)."""
    delta = after - before
    delta.subtract(own)
    return {name: count / n for name, count in delta.most_common() if count > 0}


def worker_command(system: str, concurrency: int) -> list[str]:
    if system == "celery":
        return [sys.executable, "-m", "celery", "-A", "benchmarks.bench_tasks", "worker",
                f"--concurrency={concurrency}", "--pool=prefork", "--loglevel=WARNING"]
    return [sys.executable, "-m", "asyncq", "-A", "benchmarks.bench_tasks", "worker",
            f"--concurrency={concurrency}", "--loglevel=WARNING"]


class Worker:
    """A worker process of either system, stopped cleanly at the end."""

    def __init__(self, system: str, url: str, concurrency: int, prefetch: int | None = None):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = open(LOG_DIR / f"{system}-worker.log", "ab")  # noqa: SIM115 - kept open
        env = {**os.environ, "BENCH_SYSTEM": system, "BENCH_REDIS_URL": url}
        if prefetch is not None:  # else each system's default (4 for both)
            env["BENCH_PREFETCH"] = str(prefetch)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(worker_command(system, concurrency), cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def pids(self) -> list[int]:
        """The worker's process and all its descendants (the supervisor's children)."""
        return [self.process.pid, *_descendants(self.process.pid)]

    def rss_bytes(self) -> int:
        """Resident memory of the worker and all its descendants."""
        return sum(_rss(pid) for pid in self.pids())

    def pss_bytes(self) -> int:
        """Proportional share: pages shared after fork counted once, not per process."""
        return sum(_pss(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [d for c in children for d in _descendants(c)]


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def flush(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    client.flushdb()
    return client


# -- completion, read from each system's own result store -------------------
def finish_times(system: str, client: redis.Redis, ids: list[str],
                 tally: Counter[str] | None = None) -> list[float | None]:
    """When each task reached its final state (Unix seconds), None if not yet.
    ``tally`` counts the commands this sends, to take them out of Redis's counts."""
    if tally is not None:
        tally["get" if system == "celery" else "hmget"] += len(ids)
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        if system == "celery":
            pipe.get(f"celery-task-meta-{task_id}")
        else:
            pipe.hmget(f"asyncq:task:{{{task_id}}}", "status", "finished_at")
    times: list[float | None] = []
    for raw in pipe.execute():
        if system == "celery":
            meta = json.loads(raw) if raw else None
            done = meta and meta.get("status") == "SUCCESS" and meta.get("date_done")
            times.append(_iso(done) if done else None)
        else:
            status, finished = raw
            times.append(float(finished) if status == b"SUCCESS" and finished else None)
    return times


def _iso(text: str) -> float:
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def wait_all_done(system: str, client: redis.Redis, ids: list[str],
                  timeout: float = 600.0, tally: Counter[str] | None = None) -> list[float]:
    """Block until every task is final; checks the tail first, then everything."""
    deadline = time.monotonic() + timeout
    while True:
        if all(t is not None for t in finish_times(system, client, ids[-200:], tally)):
            times = finish_times(system, client, ids, tally)
            if all(t is not None for t in times):
                return [t for t in times if t is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system}: tasks not all done after {timeout}s")
        time.sleep(0.05)  # a poll of the result store, the same for both systems


# -- the measurements ---------------------------------------------------------
def enqueue_rate(system: str, url: str, n: int, batched: bool) -> float:
    """Tasks queued per second from one client: one by one, or as one group."""
    flush(url)
    tasks = tasks_for(system, url)
    if batched:
        group = importlib.import_module("celery" if system == "celery" else "asyncq").group
        started = time.perf_counter()
        group(tasks.noop.s() for _ in range(n)).apply_async()
    else:
        started = time.perf_counter()
        for _ in range(n):
            tasks.noop.delay()
    return n / (time.perf_counter() - started)


def round_trip_floor(url: str, n: int) -> float:
    """One redis-py client's round trips per second, one LPUSH each: what enqueueing
    one by one (one round trip a task) could reach at best."""
    client = flush(url)
    started = time.perf_counter()
    for index in range(n):
        client.lpush("floor:queue", index)
    return n / (time.perf_counter() - started)


def drain(system: str, url: str, n: int, task: str, concurrency: int,
          prefetch: int | None = None) -> dict[str, Any]:
    """N tasks already queued, then a worker starts: throughput from the first final
    state to the last, and from the worker's launch to the last; RSS and PSS after
    the drain; the commands Redis executed per task meanwhile (INFO commandstats,
    from before the launch to SETTLE after the last final state), by name and in all."""
    client = flush(url)
    tasks = tasks_for(system, url)
    ids = [getattr(tasks, task).delay().id for _ in range(n)]
    tally: Counter[str] = Counter(info=1)
    before = command_calls(client)
    worker = Worker(system, url, concurrency, prefetch)
    launched = time.time()
    try:
        times = wait_all_done(system, client, ids, tally=tally)
        time.sleep(SETTLE)
        executed = calls_per_task(before, command_calls(client), n, tally)
        after_rss, after_pss = worker.rss_bytes(), worker.pss_bytes()
    finally:
        worker.stop()
    first, last = min(times), max(times)
    return {"tasks_per_s": n / (last - first), "with_start_per_s": n / (last - launched),
            "after_rss": after_rss, "after_pss": after_pss,
            "executed_per_task": sum(executed.values()), "executed_by_command": executed}


def idle_memory(system: str, url: str, concurrency: int) -> dict[str, int]:
    """Resident memory (RSS) and proportional share (PSS) of a started, idle worker
    (all its processes), in bytes."""
    client = flush(url)
    tasks_for(system, url)
    worker = Worker(system, url, concurrency)
    try:
        _wait_ready(system, client, worker)
        time.sleep(0.5)  # let it settle after its first task
        return {"rss": worker.rss_bytes(), "pss": worker.pss_bytes()}
    finally:
        worker.stop()


def _wait_ready(system: str, client: redis.Redis, worker: Worker) -> None:
    """A worker is ready once it has run a task: the same test for both systems."""
    tasks = sys.modules["benchmarks.bench_tasks"]
    probe = tasks.noop.delay()
    deadline = time.monotonic() + 120
    while finish_times(system, client, [probe.id])[0] is None:
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{system} worker did not start; see {worker.log.name}")
        time.sleep(0.02)
    client.delete(f"celery-task-meta-{probe.id}", f"asyncq:task:{{{probe.id}}}")


def latency(system: str, url: str, n: int) -> dict[str, float]:
    """Submit and wait for the result, one at a time, with an idle worker: p50 and p99."""
    client = flush(url)
    tasks = tasks_for(system, url)
    worker = Worker(system, url, 1)
    samples = []
    try:
        _wait_ready(system, client, worker)
        for _ in range(n):
            started = time.perf_counter()
            tasks.noop.delay().get(timeout=30)
            samples.append(time.perf_counter() - started)
    finally:
        worker.stop()
    samples.sort()
    return {"p50_ms": 1000 * statistics.median(samples),
            "p99_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))]}


def redis_commands(system: str, url: str, n: int) -> dict[str, float]:
    """Redis commands per no-op task (enqueue, run, store, read the last result), counted
    by MONITOR: all that Redis executed, and those clients sent (the rest ran in Lua)."""
    client = flush(url)
    tasks = tasks_for(system, url)
    worker = Worker(system, url, 1)  # one child: FIFO, so the last result means all done
    try:
        _wait_ready(system, client, worker)

        def submit_and_wait() -> None:
            results = [tasks.noop.delay() for _ in range(n)]
            results[-1].get(timeout=300)

        sent, total = _monitor_count(url, submit_and_wait)
    finally:
        worker.stop()
    return {"sent_per_task": sent / n, "executed_per_task": total / n}


def drain_commands(system: str, url: str, n: int, concurrency: int) -> dict[str, float]:
    """Redis commands per task while a worker drains N queued no-op tasks, counted by
    MONITOR from before its launch to SETTLE after the last final state: those clients sent, and
    all that Redis executed (MONITOR shows a script's inner calls as from "lua").
    MONITOR slows Redis down, so this is a run of its own, not a timed drain."""
    client = flush(url)
    tasks = tasks_for(system, url)
    ids = [tasks.noop.delay().id for _ in range(n)]
    tally: Counter[str] = Counter()
    workers: list[Worker] = []

    def drain_it() -> None:
        workers.append(Worker(system, url, concurrency))
        wait_all_done(system, client, ids, tally=tally)
        time.sleep(SETTLE)

    try:
        sent, total = _monitor_count(url, drain_it)
    finally:
        for worker in workers:
            worker.stop()
    own = sum(tally.values())
    return {"sent_per_task": (sent - own) / n, "executed_per_task": (total - own) / n}


def _monitor_count(url: str, action: Any) -> tuple[int, int]:
    """Run ``action`` in a thread while MONITOR counts every command (and those from
    Lua) until the action is done; its end is marked by an ECHO, not counted."""
    done = threading.Event()
    failure: list[BaseException] = []
    marker = f"benchmark-end-{os.getpid()}-{time.monotonic_ns()}"

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # re-raised below, in the caller
            failure.append(exc)
        finally:
            done.set()
            redis.Redis.from_url(url).echo(marker)  # the last command counted

    sent = total = 0
    with redis.Redis.from_url(url).monitor() as monitor:
        threading.Thread(target=run, daemon=True).start()
        while True:
            info = monitor.next_command()
            if done.is_set() and marker in info.get("command", ""):
                break
            total += 1
            sent += info.get("client_type") != "lua"
    if failure:
        raise failure[0]
    return sent, total

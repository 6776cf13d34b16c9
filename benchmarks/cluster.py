"""asyncq on a real Redis Cluster of 1, 2 and 3 masters, and on a plain redis-server:
``python -m benchmarks.cluster``.

The same workload each time: N no-op tasks (``bench.noop`` of benchmarks/bench_tasks.py)
spread evenly over three queues, all queued first; then one worker
(``asyncq worker -c 2 -Q <the three queues>``) starts and is timed until every task is
SUCCESS. The queue names are chosen so that their hash tags land on three different
masters of the 3-master cluster. Each deployment is measured ``--repeat`` times (the
median is reported); it writes benchmarks/CLUSTER.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from asyncq.cli.localredis import LocalRedis
from asyncq.keys import Keys
from benchmarks import measure
from benchmarks.run import machine, versions
from tests.topologies import CLUSTER_SLOTS, RedisCluster3

HERE = Path(__file__).resolve().parent
KEYS = Keys()
COUNTER = "tasks\tbench.noop\tSUCCESS"  # the counters hash field of finished no-op tasks


def owner(slot: int, masters: int) -> int:
    """Which master of RedisCluster3(size=masters) holds ``slot`` (its slots are split
    evenly, in order)."""
    return next(i for i in range(masters)
                if slot < CLUSTER_SLOTS * (i + 1) // masters)


def queue_slot(name: str) -> int:
    return key_slot(KEYS.queue_tag(name).encode())


def pick_queues() -> list[str]:
    """Three queue names whose hash tags fall on masters 0, 1 and 2 of a 3-master cluster."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"bench-q{i}"
        found.setdefault(owner(queue_slot(name), 3), name)
        if len(found) == 3:
            return [found[master] for master in range(3)]
    raise RuntimeError("no three queue names on three masters found")


def clear(nodes: list[redis.Redis]) -> None:
    for node in nodes:
        node.flushall()
        node.close()


def start_worker(url: str, queues: list[str]) -> subprocess.Popen[bytes]:
    measure.LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_SYSTEM": "asyncq", "BENCH_REDIS_URL": url}
    command = [sys.executable, "-m", "asyncq", "-A", "benchmarks.bench_tasks", "worker",
               "-c", "2", "-Q", ",".join(queues), "--loglevel=WARNING"]
    with open(measure.LOG_DIR / "cluster-worker.log", "ab") as log:
        return subprocess.Popen(command, cwd=measure.ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_counted(client: Any, n: int, process: subprocess.Popen[bytes],
                 timeout: float = 600.0) -> None:
    """Until the counters say ``n`` no-op tasks succeeded: one HGET per poll."""
    deadline = time.monotonic() + timeout
    while int(client.hget(KEYS.counters(), COUNTER) or 0) < n:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited; see {measure.LOG_DIR}/cluster-worker.log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {n} tasks done after {timeout}s")
        time.sleep(0.02)


def one_run(url: str, nodes: list[redis.Redis], n: int, queues: list[str]) -> dict[str, float]:
    """Queue ``n`` tasks over ``queues``, start a worker, time it until all are SUCCESS."""
    clear(nodes)
    tasks = measure.tasks_for("asyncq", url)
    client = tasks.app.broker.client
    started = time.perf_counter()
    ids = [tasks.noop.apply_async(queue=queues[i % len(queues)]).id for i in range(n)]
    enqueue_per_s = n / (time.perf_counter() - started)
    launched = time.time()
    worker = start_worker(url, queues)
    try:
        wait_counted(client, n, worker)
        done = time.time()
        times = measure.finish_times("asyncq", client, ids)
    finally:
        stop_worker(worker)
    finished = [t for t in times if t is not None]
    if len(finished) != n:
        raise RuntimeError(f"{n - len(finished)} tasks counted SUCCESS but not stored so")
    return {"tasks_per_s": n / (max(finished) - min(finished)),
            "with_start_per_s": n / (done - launched), "enqueue_per_s": enqueue_per_s}


@contextmanager
def deployment(kind: str, masters: int, folder: Path) -> Iterator[tuple[str, list[Any]]]:
    """A started deployment: its URL and a way to reach each of its nodes."""
    if kind == "single":
        server = LocalRedis(folder).start()
        try:
            yield server.url, [lambda: redis.Redis.from_url(server.url)]
        finally:
            server.stop()
        return
    with RedisCluster3(folder, size=masters) as cluster:
        yield cluster.url, [server.client for server in cluster.servers]


def measure_deployment(kind: str, masters: int, n: int, repeat: int,
                       queues: list[str]) -> list[dict[str, float]]:
    runs = []
    with tempfile.TemporaryDirectory() as folder, \
            deployment(kind, masters, Path(folder)) as (url, connect):
        for _ in range(repeat):
            runs.append(one_run(url, [make() for make in connect], n, queues))
            print(f"  {label(kind, masters)}: {runs[-1]['tasks_per_s']:,.0f} tasks/s "
                  f"({runs[-1]['with_start_per_s']:,.0f} with start-up; enqueue "
                  f"{runs[-1]['enqueue_per_s']:,.0f}/s)", flush=True)
    return runs


def label(kind: str, masters: int) -> str:
    if kind == "single":
        return "plain redis-server (redis://)"
    return f"Redis Cluster, {masters} master{'s' if masters > 1 else ''}"


def placement(queues: list[str], masters: int) -> str:
    """Which master each queue (and the app-wide ``{asyncq}`` keys) lands on."""
    where = [f"`{q}` on {owner(queue_slot(q), masters) + 1}" for q in queues]
    app_wide = owner(key_slot(KEYS.tag.encode()), masters) + 1
    return ", ".join(where) + f"; `{KEYS.tag}` on {app_wide}"


def commit() -> str:
    """The short commit of the tree measured (``unknown`` outside git)."""
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=measure.ROOT,
                           capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def median_of(runs: list[dict[str, float]], what: str) -> float:
    return statistics.median(run[what] for run in runs)


def report(rows: list[tuple[str, int, list[dict[str, float]]]], n: int, repeat: int,
           queues: list[str], elapsed: float) -> str:
    v = versions()
    shown = ("asyncq", "redis", "redis-server", "python")
    out = [
        "# asyncq on Redis Cluster: drain throughput by number of masters",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`python -m benchmarks.cluster` in {elapsed:.0f} s on {machine()}.",
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in shown)
        + f" (asyncq at commit {commit()}).",
        "",
        f"Workload, the same each time: {n:,} no-op tasks (`bench.noop` of "
        "`benchmarks/bench_tasks.py`: acks-late, STARTED tracked, results stored, events and "
        f"counters on) spread evenly over three queues ({', '.join(f'`{q}`' for q in queues)}), "
        "all queued first by one client, one by one; then one worker, "
        "`python -m asyncq -A benchmarks.bench_tasks worker -c 2 -Q "
        f"{','.join(queues)} --loglevel=WARNING`, is started and timed until the counters "
        f"say every task is SUCCESS. Clusters are started by `tests.topologies.RedisCluster3` "
        "(no replicas, no persistence, slots split evenly); the single server is the same "
        "redis-server binary. Each row is the median of "
        f"{repeat} runs (each run's drain figure in the runs column); the data is flushed "
        "between runs.",
        "",
        "| deployment | drain tasks/s (first to last) | with start-up tasks/s "
        "| enqueue tasks/s | runs (drain) | queues on master |",
        "|---|---|---|---|---|---|",
    ]
    for kind, masters, runs in rows:
        spread = ", ".join(f"{run['tasks_per_s']:,.0f}" for run in runs)
        where = placement(queues, masters) if kind == "cluster" else "-"
        out.append(f"| {label(kind, masters)} | {median_of(runs, 'tasks_per_s'):,.0f} | "
                   f"{median_of(runs, 'with_start_per_s'):,.0f} | "
                   f"{median_of(runs, 'enqueue_per_s'):,.0f} | {spread} | {where} |")
    out += ["", NOTE, ""]
    return "\n".join(out)


NOTE = """\
How to read it: this machine has 2 cores, shared by every redis-server, the worker's
supervisor and its two children, and the client that queues and polls. More masters
spread the keys, not the work: they cannot add CPU here, and each extra node is one
more process competing for the same two cores. A cluster client also pays for routing
(each step's parts go stage by stage, a pipeline per stage, to the node owning each
slot: a task's record and its queue are in different slots), so the figures measure
that overhead rather than scaling. Scaling out needs masters on hosts of their own.
With redis-py 8.1, each EVAL or EVALSHA in a cluster pipeline also costs a
`COMMAND GETKEYS` round trip before it is sent (redis-py asks the server for the keys
of a command it has no routing rule for); a plain pipeline on one server does not.
A worker drains its queues in the order given (`-Q`), so at any moment one queue's
master serves the fetches; the task records are spread over all masters by their own
slots, and the app-wide `{asyncq}` keys (events, counters, worker registry) live on
one master."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=6000, help="tasks per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per deployment")
    parser.add_argument("--out", type=Path, default=HERE, help="where CLUSTER.md goes")
    options = parser.parse_args(argv)
    queues = pick_queues()
    started = time.monotonic()
    rows = []
    for kind, masters in (("single", 1), ("cluster", 1), ("cluster", 2), ("cluster", 3)):
        rows.append((kind, masters, measure_deployment(kind, masters, options.tasks,
                                                       options.repeat, queues)))
    text = report(rows, options.tasks, options.repeat, queues, time.monotonic() - started)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "CLUSTER.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

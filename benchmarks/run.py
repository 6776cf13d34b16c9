"""asyncq against Celery, side by side, in one run: ``python -m benchmarks.run``.

Starts a private redis-server, then measures each line for both systems with the
same task code (benchmarks/bench_tasks.py), alternating asyncq and Celery and
repeating each measurement; reports the median and the spread (min-max), the
ratio, and the target. Then the floor (benchmarks/floor.py: a bare consumer with
the shape of asyncq's guarantees) against asyncq at the same batch sizes, and the
fastest Python peers. Writes benchmarks/RESULTS.md, results.json and results.png.
``--quick`` runs tiny sizes (the test suite's smoke test uses it).

Redis commands per task are counted two ways. All that Redis executed (the calls
its scripts make included) comes from INFO commandstats, read before a timed drain's
worker starts and after its last task is final, less the benchmark's own completion
polls and INFO: no slowdown, so the timed drains themselves are counted. Which of
them clients sent cannot be told from commandstats (Redis counts a script's
``redis.call`` under the command's own name, and clients send the same commands
too), so a drain of its own runs under MONITOR, which marks a script's inner calls
as from "lua": sent = all it shows less those, less the benchmark's own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncq.cli.localredis import LocalRedis, find_redis_server
from benchmarks import floor, measure

HERE = Path(__file__).resolve().parent
SYSTEMS = ("asyncq", "celery")


@dataclass
class Sizes:
    repeat: int = 3
    enqueue: int = 5000
    drain: int = 20_000
    drain_c1: int = 5000
    sleep: int = 1000
    latency: int = 1000
    commands: int = 2000
    http_seconds: float = 5.0
    peers_drain: int = 5000
    floor_batches: tuple[int, ...] = floor.BATCHES  # asyncq's worker_prefetch_multiplier


QUICK = Sizes(repeat=1, enqueue=200, drain=300, drain_c1=100, sleep=50, latency=30,
              commands=50, http_seconds=1.0, peers_drain=200)
DEFAULT_BATCH = 4  # worker_prefetch_multiplier's default, in asyncq and in Celery


@dataclass
class Line:
    """One measured line: the samples of each system, and how to judge the ratio."""

    name: str
    unit: str
    higher_is_better: bool
    target: str = ""
    target_ratio: float | None = None  # asyncq/celery must reach this (or stay under it)
    target_value: float | None = None  # or asyncq's own figure must stay under this
    target_at_least: float | None = None  # or asyncq's own figure must reach this
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SYSTEMS})

    def median(self, system: str) -> float:
        return statistics.median(self.samples[system])

    def spread(self, system: str) -> str:
        values = self.samples[system]
        return f"{min(values):,.4g}-{max(values):,.4g}" if len(values) > 1 else "-"

    def ratio(self) -> float:
        return self.median("asyncq") / self.median("celery")

    def met(self) -> str:
        if self.target_value is not None:
            return "yes" if self.median("asyncq") <= self.target_value else "**no**"
        if self.target_at_least is not None:
            return "yes" if self.median("asyncq") >= self.target_at_least else "**no**"
        if self.target_ratio is None:
            return ""
        ok = (self.ratio() >= self.target_ratio if self.higher_is_better
              else self.ratio() <= self.target_ratio)
        return "yes" if ok else "**no**"


@dataclass
class FloorRow:
    """The floor and asyncq draining the same tasks with the same batch size K."""

    batch: int
    floor: list[dict[str, Any]] = field(default_factory=list)
    asyncq: list[float] = field(default_factory=list)

    def floor_median(self, key: str = "tasks_per_s") -> float:
        return float(statistics.median(row[key] for row in self.floor))


@dataclass
class Results:
    lines: list[Line]
    floor: list[FloorRow]
    peers: list[dict[str, Any]]
    executed_by_command: dict[str, dict[str, float]]  # per system, from the timed drains


def alternate(line: Line, repeat: int, measure_one: Callable[[str], float]) -> None:
    """asyncq, Celery, asyncq, Celery...: neither system always runs on a warmer machine."""
    for round_ in range(repeat):
        for system in SYSTEMS if round_ % 2 == 0 else reversed(SYSTEMS):
            line.samples[system].append(measure_one(system))
            print(f"  {line.name} [{system}]: {line.samples[system][-1]:,.4g} {line.unit}",
                  flush=True)


def run_all(url: str, sizes: Sizes) -> Results:
    lines: list[Line] = []

    def add(line: Line, fn: Callable[[str], float]) -> None:
        lines.append(line)
        alternate(line, sizes.repeat, fn)

    one_by_one = Line("enqueue rate, one client, one by one", "tasks/s", True)
    add(one_by_one, lambda s: measure.enqueue_rate(s, url, sizes.enqueue, batched=False))
    floors = [measure.round_trip_floor(url, sizes.enqueue) for _ in range(sizes.repeat)]
    floor = statistics.median(floors)
    print(f"  redis-py round-trip floor: {floor:,.0f} round trips/s", flush=True)
    one_by_one.target = f"at least 90% of one redis-py client's round trips ({floor:,.0f}/s)"
    one_by_one.target_at_least = 0.9 * floor
    add(Line("enqueue rate, one client, batched (group)", "tasks/s", True),
        lambda s: measure.enqueue_rate(s, url, sizes.enqueue, batched=True))
    drains: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}

    def drain_c2(system: str) -> float:
        result = measure.drain(system, url, sizes.drain, "noop", 2)
        drains[system].append(result)
        print(f"    after it: RSS {result['after_rss'] / 2**20:.1f} MB, PSS "
              f"{result['after_pss'] / 2**20:.1f} MB; Redis executed "
              f"{result['executed_per_task']:.2f} commands per task", flush=True)
        return float(result["tasks_per_s"])

    add(Line(f"drain {sizes.drain:,} no-op, concurrency 2", "tasks/s", True,
             "at least 10x (ahead of Dramatiq 2x8; half the floor at K=4)", 10.0), drain_c2)
    with_start = Line(f"drain {sizes.drain:,} no-op, concurrency 2, start-up included",
                      "tasks/s", True)
    rss_after = Line("worker RSS, concurrency 2, after the drain", "MB", False)
    pss_after = Line("worker PSS (shared pages counted once), after the drain", "MB", False,
                     "at most 1/2", 0.5)
    executed_drain = Line("Redis commands per task executed in the drain (INFO commandstats)",
                          "commands", False, "at most 10 (asyncq's own figure)",
                          target_value=10)
    for system in SYSTEMS:
        with_start.samples[system] = [d["with_start_per_s"] for d in drains[system]]
        rss_after.samples[system] = [d["after_rss"] / 2**20 for d in drains[system]]
        pss_after.samples[system] = [d["after_pss"] / 2**20 for d in drains[system]]
        executed_drain.samples[system] = [d["executed_per_task"] for d in drains[system]]
    lines += [with_start]
    add(Line(f"drain {sizes.drain_c1:,} no-op, concurrency 1", "tasks/s", True),
        lambda s: measure.drain(s, url, sizes.drain_c1, "noop", 1)["tasks_per_s"])
    add(Line(f"drain {sizes.sleep:,} x 10 ms sleep, concurrency 2", "tasks/s", True,
             "within 5% of the ideal 200/s", target_at_least=190.0),
        lambda s: measure.drain(s, url, sizes.sleep, "sleep10", 2)["tasks_per_s"])
    latencies: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}

    def latency(system: str) -> float:
        latencies[system].append(measure.latency(system, url, sizes.latency))
        return latencies[system][-1]["p50_ms"]

    add(Line(f"end-to-end latency p50, idle worker ({sizes.latency:,} calls)", "ms", False,
             "at most 1/3", 1 / 3), latency)
    p99 = Line("end-to-end latency p99", "ms", False)
    for system in SYSTEMS:
        p99.samples[system] = [x["p99_ms"] for x in latencies[system]]
    lines.append(p99)
    idle: dict[str, list[dict[str, int]]] = {s: [] for s in SYSTEMS}

    def idle_rss(system: str) -> float:
        idle[system].append(measure.idle_memory(system, url, 2))
        return idle[system][-1]["rss"] / 2**20

    add(Line("worker RSS, concurrency 2, idle", "MB", False), idle_rss)
    idle_pss = Line("worker PSS (shared pages counted once), idle", "MB", False)
    for system in SYSTEMS:
        idle_pss.samples[system] = [m["pss"] / 2**20 for m in idle[system]]
    lines += [idle_pss, rss_after, pss_after]
    lines += http_lines(url, sizes, add)
    counts: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}

    def commands(system: str) -> float:
        counts[system].append(measure.redis_commands(system, url, sizes.commands))
        return counts[system][-1]["sent_per_task"]

    add(Line("Redis commands per task sent by clients, enqueue to get() (no-op, acks-late)",
             "commands", False,
             "at most 6 (asyncq's own figure)", target_value=6), commands)
    executed = Line("Redis commands per task executed, enqueue to get() (Lua's inner calls "
                    "included)", "commands", False)
    for system in SYSTEMS:
        executed.samples[system] = [c["executed_per_task"] for c in counts[system]]
    lines.append(executed)
    monitored: dict[str, dict[str, float]] = {}

    def drain_sent(system: str) -> float:
        monitored[system] = measure.drain_commands(system, url, sizes.commands, 2)
        print(f"    MONITOR saw {monitored[system]['executed_per_task']:.2f} executed per task "
              "(the timed drains' commandstats should agree)", flush=True)
        return monitored[system]["sent_per_task"]

    sent_drain = Line(f"Redis commands per task sent by clients in the drain (MONITOR, "
                      f"{sizes.commands:,} tasks)", "commands", False)
    lines += [sent_drain, executed_drain]
    alternate(sent_drain, 1, drain_sent)  # one run each: counts barely vary, MONITOR is slow
    floor_rows = floor_against_asyncq(url, sizes)
    breakdown = {system: mean_by_command([d["executed_by_command"] for d in drains[system]])
                 for system in SYSTEMS}
    return Results(lines, floor_rows, peers(url, sizes), breakdown)


def http_lines(url: str, sizes: Sizes, add: Callable[[Line, Callable[[str], float]], None]
               ) -> list[Line]:
    """The tutorial's POST and GET status routes under gunicorn; the GET line is judged
    against a constant route under the same gunicorn. Returns the derived lines."""
    add(Line("HTTP POST (tutorial route) under gunicorn", "req/s", True, "at least 2x", 2.0),
        lambda s: http_rps(s, url, sizes.http_seconds))
    gets: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}

    def http_status(system: str) -> float:
        gets[system].append(http_get(system, url, sizes.http_seconds))
        print(f"    constant route: {gets[system][-1]['constant_per_s']:,.0f} req/s; "
              f"status = {gets[system][-1]['of_constant']:.3f} of it", flush=True)
        return float(gets[system][-1]["status_per_s"])

    add(Line("HTTP GET status (tutorial route) under gunicorn", "req/s", True), http_status)
    constant = Line("HTTP GET of a constant JSON route, same gunicorn (the floor)", "req/s", True)
    share = Line("HTTP GET status as a share of the constant route", "share", True,
                 "at least 0.65 (asyncq's own figure)", target_at_least=0.65)
    for system in SYSTEMS:
        constant.samples[system] = [g["constant_per_s"] for g in gets[system]]
        share.samples[system] = [g["of_constant"] for g in gets[system]]
    return [constant, share]


def mean_by_command(runs: list[dict[str, float]]) -> dict[str, float]:
    """Commands executed per task, by name, averaged over runs; most called first."""
    names = {name for run in runs for name in run}
    means = {name: sum(run.get(name, 0.0) for run in runs) / len(runs) for name in names}
    return dict(sorted(means.items(), key=lambda item: -item[1]))


def floor_against_asyncq(url: str, sizes: Sizes) -> list[FloorRow]:
    """At each batch size K: the floor's drain and asyncq's (worker_prefetch_multiplier
    = K), of the same number of no-op tasks with two consumers, alternating."""
    rows = []
    for batch in sizes.floor_batches:
        row = FloorRow(batch)
        for round_ in range(sizes.repeat):
            for who in ("floor", "asyncq") if round_ % 2 == 0 else ("asyncq", "floor"):
                if who == "floor":
                    row.floor.append(floor.drain(url, sizes.drain, batch))
                    result = row.floor[-1]
                    print(f"  floor K={batch}: {result['tasks_per_s']:,.0f} tasks/s; commands "
                          f"per task {result['sent_per_task']:.2f} sent, "
                          f"{result['executed_per_task']:.2f} executed", flush=True)
                else:
                    row.asyncq.append(measure.drain("asyncq", url, sizes.drain, "noop", 2,
                                                    prefetch=batch)["tasks_per_s"])
                    print(f"  asyncq K={batch}: {row.asyncq[-1]:,.0f} tasks/s", flush=True)
        rows.append(row)
    return rows


def http_rps(system: str, url: str, seconds: float) -> float:
    from benchmarks.http_load import http_post_benchmark

    measure.flush(url)
    return float(http_post_benchmark(system, url, seconds=seconds)["requests_per_s"])


def http_get(system: str, url: str, seconds: float) -> dict[str, Any]:
    from benchmarks.http_load import http_get_benchmark

    measure.flush(url)
    return http_get_benchmark(system, url, seconds=seconds)


def peers(url: str, sizes: Sizes) -> list[dict[str, Any]]:
    from benchmarks.peers import drain_dramatiq, drain_rq

    rows = []
    for label, run in (("Dramatiq 2x8 (its default)", lambda: drain_dramatiq(
                            url, sizes.peers_drain, "noop", 2, 8)),
                       ("Dramatiq 2x1", lambda: drain_dramatiq(url, sizes.peers_drain, "noop",
                                                               2, 1)),
                       ("RQ, 2 SimpleWorkers", lambda: drain_rq(url, sizes.peers_drain, "noop",
                                                                2))):
        result = run()
        result["label"] = label
        rows.append(result)
        print(f"  peer {label}: {result['tasks_per_s']:,.0f} tasks/s", flush=True)
    return rows


def versions() -> dict[str, str]:
    found = {}
    for name in ("asyncq", "celery", "kombu", "redis", "hiredis", "dramatiq", "rq", "gunicorn",
                 "flask"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    server = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True)
    found["redis-server"] = server.stdout.split()[2].removeprefix("v=")
    found["python"] = platform.python_version()
    return found


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import os

    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "-"


def floor_table(results: Results, sizes: Sizes) -> list[str]:
    drain = next(line for line in results.lines if line.name.startswith("drain ")
                 and "concurrency 2" in line.name)
    celery = drain.median("celery")
    out = [
        "", f"The floor (`benchmarks/floor.py`): a bare consumer that keeps the shape of "
        "asyncq's guarantees (a PENDING record per task; one script moves K messages into an "
        "in-flight list and marks them STARTED; one script, for each of K finished tasks, "
        "stores SUCCESS unless the record is final, sets its TTL, publishes a notice and "
        "removes the message from the in-flight list; two consumer processes; no events, "
        "fencing or canvas). It drains the same "
        f"{sizes.drain:,} queued no-op tasks; asyncq runs with `worker_prefetch_multiplier` = K "
        f"and concurrency 2. Median of {sizes.repeat}, the two alternating; Celery's figure is "
        f"the drain line above (K = {DEFAULT_BATCH}, its default).", "",
        "| batch K | floor tasks/s | floor spread | asyncq tasks/s | asyncq spread "
        "| asyncq / floor | Celery tasks/s | Celery / floor "
        "| floor commands per task, sent / executed |",
        "|---|---|---|---|---|---|---|---|---|"]
    for row in results.floor:
        floor_rate = row.floor_median()
        asyncq = statistics.median(row.asyncq)
        at_default = row.batch == DEFAULT_BATCH
        out.append(
            f"| {row.batch} | {floor_rate:,.0f} | "
            f"{spread([r['tasks_per_s'] for r in row.floor])} | {asyncq:,.0f} | "
            f"{spread(row.asyncq)} | {asyncq / floor_rate:.2f} | "
            f"{f'{celery:,.0f}' if at_default else ''} | "
            f"{f'{celery / floor_rate:.2f}' if at_default else ''} | "
            f"{row.floor_median('sent_per_task'):.2f} / "
            f"{row.floor_median('executed_per_task'):.2f} |")
    return out


def breakdown_lines(results: Results, sizes: Sizes) -> list[str]:
    out = ["", f"Commands Redis executed per task in the timed drains of {sizes.drain:,} "
           f"(concurrency 2, K = {DEFAULT_BATCH}; INFO commandstats, by command, mean of the "
           "runs; asyncq sends its scripts as EVAL):", ""]
    for system in SYSTEMS:
        counts = results.executed_by_command[system]
        shown = ", ".join(f"{name} {count:.2f}" for name, count in counts.items()
                          if count >= 0.005)
        out.append(f"- {system}: {shown}")
    return out


def report(results: Results, sizes: Sizes, elapsed: float) -> str:
    lines, peer_rows = results.lines, results.peers
    v = versions()
    out = [
        "# asyncq vs Celery: benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`python -m benchmarks.run` in {elapsed:.0f} s on {machine()}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "Settings, the same for both: one private redis-server (no persistence) on loopback; "
        "the same task module (`benchmarks/bench_tasks.py`, only the import differs); "
        "`task_acks_late=True`, `task_track_started=True`, results stored; prefork workers "
        "(Celery `--pool=prefork`), concurrency as stated; Celery's "
        "`worker_prefetch_multiplier=4` (its default), mingle and gossip on (its defaults); "
        "redis-py with the hiredis parser when it is installed (`make bench` installs it: "
        "both systems use it, through the same redis-py). "
        "HTTP lines: gunicorn with 2 sync workers serving `benchmarks/bench_server.py`, "
        f"loaded by {http_generator()} on the same machine. "
        f"Each line is the median of {sizes.repeat} runs, the two systems alternating; "
        "the spread is min-max. Ratio = asyncq / Celery.",
        "",
        "| measure | asyncq | Celery | ratio | target | met | asyncq spread | Celery spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        out.append(f"| {line.name} ({line.unit}) | {line.median('asyncq'):,.4g} | "
                   f"{line.median('celery'):,.4g} | {line.ratio():.2f}x | {line.target} | "
                   f"{line.met()} | {line.spread('asyncq')} | {line.spread('celery')} |")
    out += breakdown_lines(results, sizes)
    out += floor_table(results, sizes)
    out += ["", "Reference rows: the fastest Python peers, each with its own minimal no-op task "
            "module on the same Redis, results stored, one run each.", "",
            "| system | drain tasks/s (first to last) | with start-up tasks/s |", "|---|---|---|"]
    for row in peer_rows:  # peers.py reports from worker start (tasks_per_s) and steady
        steady = row.get("steady_tasks_per_s") or row["tasks_per_s"]
        out.append(f"| {row['label']} | {steady:,.0f} | {row['tasks_per_s']:,.0f} |")
    out += ["", "![asyncq vs Celery](results.png)", ""]
    return "\n".join(out)


def http_generator() -> str:
    import shutil

    if shutil.which("wrk"):
        return "wrk (2 threads, 16 connections)"
    return "the Python load generator in `benchmarks/http_load.py` (16 threads; wrk not found)"


def chart(lines: list[Line], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{line.name} ({line.unit})" for line in lines]
    # "times better than Celery": the ratio, inverted where lower is better
    better = [line.ratio() if line.higher_is_better else 1 / line.ratio() for line in lines]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(lines) + 1.5))
    colours = ["#2a9d8f" if b >= 1 else "#e76f51" for b in better]
    ax.barh(names, better, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("times better than Celery (log scale; 1 = equal)")
    ax.set_title("asyncq vs Celery, same machine, same run")
    for y, value in enumerate(better):
        ax.text(value, y, f" {value:.2f}x", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and the PNG go")
    options = parser.parse_args(argv)
    sizes = QUICK if options.quick else Sizes()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        server = LocalRedis(folder).start()
        try:
            results = run_all(server.url, sizes)
        finally:
            server.stop()
    options.out.mkdir(parents=True, exist_ok=True)
    text = report(results, sizes, time.monotonic() - started)
    (options.out / "RESULTS.md").write_text(text)
    chart(results.lines, options.out / "results.png")
    (options.out / "results.json").write_text(json.dumps(
        {line.name: line.samples for line in results.lines}
        | {"floor": [{"batch": row.batch, "floor": row.floor, "asyncq": row.asyncq}
                     for row in results.floor],
           "executed_by_command": results.executed_by_command, "peers": results.peers},
        indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

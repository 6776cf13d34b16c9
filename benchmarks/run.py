"""asyncq against Celery, side by side, in one run: ``python -m benchmarks.run``.

Starts a private redis-server, then measures each line for both systems with the
same task code (benchmarks/bench_tasks.py), alternating asyncq and Celery and
repeating each measurement; reports the median and the spread (min-max), the
ratio, and the target. Writes benchmarks/RESULTS.md and benchmarks/results.png.
``--quick`` runs tiny sizes (the test suite's smoke test uses it).
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
from benchmarks import measure

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


QUICK = Sizes(repeat=1, enqueue=200, drain=300, drain_c1=100, sleep=50, latency=30,
              commands=50, http_seconds=1.0, peers_drain=200)


@dataclass
class Line:
    """One measured line: the samples of each system, and how to judge the ratio."""

    name: str
    unit: str
    higher_is_better: bool
    target: str = ""
    target_ratio: float | None = None  # asyncq/celery must reach this (or stay under it)
    target_value: float | None = None  # or asyncq's own figure must stay under this
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
        if self.target_ratio is None:
            return ""
        ok = (self.ratio() >= self.target_ratio if self.higher_is_better
              else self.ratio() <= self.target_ratio)
        return "yes" if ok else "**no**"


def alternate(line: Line, repeat: int, measure_one: Callable[[str], float]) -> None:
    """asyncq, Celery, asyncq, Celery...: neither system always runs on a warmer machine."""
    for round_ in range(repeat):
        for system in SYSTEMS if round_ % 2 == 0 else reversed(SYSTEMS):
            line.samples[system].append(measure_one(system))
            print(f"  {line.name} [{system}]: {line.samples[system][-1]:,.4g} {line.unit}",
                  flush=True)


def run_all(url: str, sizes: Sizes) -> tuple[list[Line], list[dict[str, Any]]]:
    lines: list[Line] = []

    def add(line: Line, fn: Callable[[str], float]) -> None:
        lines.append(line)
        alternate(line, sizes.repeat, fn)

    add(Line("enqueue rate, one client, one by one", "tasks/s", True, "at least 2x", 2.0),
        lambda s: measure.enqueue_rate(s, url, sizes.enqueue, batched=False))
    add(Line("enqueue rate, one client, batched (group)", "tasks/s", True),
        lambda s: measure.enqueue_rate(s, url, sizes.enqueue, batched=True))
    drains: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}

    def drain_c2(system: str) -> float:
        result = measure.drain(system, url, sizes.drain, "noop", 2)
        drains[system].append(result)
        return result["tasks_per_s"]

    add(Line(f"drain {sizes.drain:,} no-op, concurrency 2", "tasks/s", True,
             "at least 5x (and ahead of Dramatiq 2x8)", 5.0), drain_c2)
    with_start = Line(f"drain {sizes.drain:,} no-op, concurrency 2, start-up included",
                      "tasks/s", True)
    rss_after = Line("worker RSS, concurrency 2, after the drain", "MB", False, "at most 1/2", 0.5)
    pss_after = Line("worker PSS (shared pages counted once), after the drain", "MB", False)
    for system in SYSTEMS:
        with_start.samples[system] = [d["with_start_per_s"] for d in drains[system]]
        rss_after.samples[system] = [d["after_rss"] / 2**20 for d in drains[system]]
        pss_after.samples[system] = [d["after_pss"] / 2**20 for d in drains[system]]
    lines += [with_start]
    add(Line(f"drain {sizes.drain_c1:,} no-op, concurrency 1", "tasks/s", True),
        lambda s: measure.drain(s, url, sizes.drain_c1, "noop", 1)["tasks_per_s"])
    add(Line(f"drain {sizes.sleep:,} x 10 ms sleep, concurrency 2", "tasks/s", True),
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
    add(Line("worker RSS, concurrency 2, idle", "MB", False),
        lambda s: measure.idle_rss(s, url, 2) / 2**20)
    lines += [rss_after, pss_after]
    add(Line("HTTP POST (tutorial route) under gunicorn", "req/s", True, "at least 1.5x", 1.5),
        lambda s: http_rps(s, url, sizes.http_seconds))
    counts: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}

    def commands(system: str) -> float:
        counts[system].append(measure.redis_commands(system, url, sizes.commands))
        return counts[system][-1]["sent_per_task"]

    add(Line("Redis commands per task sent by clients (no-op, acks-late)", "commands", False,
             "at most 6 (asyncq's own figure)", target_value=6), commands)
    executed = Line("Redis commands per task executed (Lua's inner calls included)", "commands",
                    False)
    for system in SYSTEMS:
        executed.samples[system] = [c["executed_per_task"] for c in counts[system]]
    lines.append(executed)
    return lines, peers(url, sizes)


def http_rps(system: str, url: str, seconds: float) -> float:
    from benchmarks.http_load import http_post_benchmark

    measure.flush(url)
    return http_post_benchmark(system, url, seconds=seconds)["requests_per_s"]


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
    for name in ("asyncq", "celery", "kombu", "redis", "dramatiq", "rq", "gunicorn", "flask"):
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


def report(lines: list[Line], peer_rows: list[dict[str, Any]], sizes: Sizes,
           elapsed: float) -> str:
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
        "`worker_prefetch_multiplier=4` (its default), mingle and gossip on (its defaults). "
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
    out += ["", "Reference rows: the fastest Python peers, each with its own minimal no-op task "
            "module on the same Redis, results stored, one run each.", "",
            "| system | drain tasks/s (first to last) | with start-up tasks/s |", "|---|---|---|"]
    for row in peer_rows:  # peers.py reports from worker start (tasks_per_s) and steady
        steady = row.get("steady_tasks_per_s") or row["tasks_per_s"]
        out.append(f"| {row['label']} | {steady:,.0f} | {row['tasks_per_s']:,.0f} |")
    out += ["", "![asyncq vs Celery](results.png)", ""]
    return "\n".join(out)


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
            lines, peer_rows = run_all(server.url, sizes)
        finally:
            server.stop()
    options.out.mkdir(parents=True, exist_ok=True)
    text = report(lines, peer_rows, sizes, time.monotonic() - started)
    (options.out / "RESULTS.md").write_text(text)
    chart(lines, options.out / "results.png")
    (options.out / "results.json").write_text(json.dumps(
        {line.name: line.samples for line in lines} | {"peers": peer_rows}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a draining asyncq worker spends its time: ``python -m benchmarks.profile``.

Starts a private redis-server, queues N no-op tasks (``bench.noop`` of
benchmarks/bench_tasks.py, under asyncq), starts a worker of concurrency 2 with the
default prefetch (4) and, once it drains steadily:

1. for ``--window`` seconds, unprofiled: the drain rate and the CPU time per task of
   each process (the supervisor, each child, redis-server), from /proc/<pid>/stat;
2. for ``--seconds`` seconds: py-spy on one child and on the supervisor, each
   recorded twice at once (``--nonblocking``, so neither pauses the worker): a flame
   graph, ``benchmarks/profiles/<child|supervisor>.svg``, and the same samples as
   collapsed stacks, ``<name>.txt`` (not kept in git), from which it prints each
   step's share and writes them to ``benchmarks/profiles/summary.md``;
3. the floor (benchmarks/floor.py) at each batch size, for its CPU per task.

Both are recorded with ``--idle``: a sample where the process waits (for Redis's
reply, or in the supervisor's ``wait``) is kept, so the shares are of wall time.
With ``--threads``, each thread is its own tower; the shares are of the main thread
(a child's other thread only sleeps, watching for a freeze). Needs py-spy
(``pip install py-spy``) and the right to read another process's memory (root, or
ptrace_scope 0). ``--summarize`` prints the shares again from the .txt files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from asyncq.cli.localredis import LocalRedis
from asyncq.keys import Keys
from benchmarks import floor, measure

OUT = Path(__file__).resolve().parent / "profiles"
RATE = 200  # py-spy samples per second
QUEUE = Keys().queue("celery")  # bench_tasks' default queue: where the drain's messages wait

# What a process's main thread does, read from each sample's stack: the first of these
# frames (in this order) that the stack holds names the step. Frames are
# "qualified name (file)", as py-spy names them on Python 3.11+.
CHILD_STEPS = [
    ("Notes.note (asyncq/events.py)", "task events noted (Notes.note)"),
    ("Child.fetch (asyncq/worker.py)", "fetch, with the held ends (Child.fetch)"),
    ("Child.start_ahead (asyncq/worker.py)", "start the batch (Child.start_ahead)"),
    ("Child.start (asyncq/worker.py)", "start: read the answer (Child.start)"),
    ("Child.execute (asyncq/worker.py)", "execute: run the task (Child.execute)"),
    ("Child.end (asyncq/worker.py)", "end: hold, or store and ack (Child.end)"),
    ("Child.call_hooks (asyncq/worker.py)", "hooks after the task (Child.call_hooks)"),
    ("Child.request (asyncq/worker.py)", "build the Request (Child.request)"),
    ("Message.decode (asyncq/message.py)", "decode the message (Message.decode)"),
    ("Signal.send (asyncq/signals.py)", "signals (task_received)"),
    ("Child.handle (asyncq/worker.py)", "the rest of Child.handle"),
    ("Child.loop (asyncq/worker.py)", "the rest of Child.loop"),
]
SUPERVISOR_STEPS = [
    ("Supervisor.send_events (asyncq/worker.py)", "sending events (Supervisor.send_events)"),
    ("Watchdog.enforce_time_limits (asyncq/worker.py)", "time limits (enforce_time_limits)"),
    ("Supervisor.tick (asyncq/worker.py)", "heartbeat, recovery, due messages (tick)"),
    ("wait (multiprocessing/connection.py)", "idle: waiting for a child, a note, a signal"),
    ("Supervisor.supervise (asyncq/worker.py)", "the rest of Supervisor.supervise"),
]
# Where, within a step, a sample is (by its innermost Python frame): sending to
# Redis (the socket write, which wakes Redis), waiting for its reply (the socket
# read), in redis-py's own Python, or elsewhere (asyncq, the task, the standard library).
SEND = "AbstractConnection.send_packed_command (redis/connection.py)"
RECEIVE = ("SocketBuffer._read_from_socket (redis/_parsers/socket.py)",  # redis-py's parser
           "_HiredisParser.read_from_socket (redis/_parsers/hiredis.py)")  # with hiredis
REDIS_PY = "(redis/"


# -- the processes' CPU time -----------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """Tasks taken and CPU spent per process over some seconds of the drain."""

    seconds: float
    tasks: int
    cpu: dict[str, float]  # process name -> CPU seconds

    def lines(self) -> list[str]:
        out = [f"drain rate {self.tasks / self.seconds:,.0f} tasks/s over {self.seconds:.1f} s "
               f"({self.tasks:,} tasks); CPU per task drained (by either child):"]
        total = sum(self.cpu.values())
        children = sum(spent for name, spent in self.cpu.items() if name.startswith("child"))
        for name, spent in [*self.cpu.items(), ("children", children)]:
            out.append(f"  {name:<12} {1e6 * spent / self.tasks:7.1f} us  "
                       f"({100 * spent / total:4.1f}% of the CPU used, "
                       f"{100 * spent / self.seconds:4.0f}% of a core)")
        return out


def measure_window(client: redis.Redis, pids: dict[str, int], seconds: float) -> Window:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    waiting, started = client.llen(QUEUE), time.monotonic()
    time.sleep(seconds)
    taken, elapsed = waiting - client.llen(QUEUE), time.monotonic() - started
    return Window(elapsed, taken,
                  {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()})


# -- py-spy -------------------------------------------------------------------------
def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


# What each process is recorded as, both at once: the flame graph, and its samples as
# collapsed stacks. (py-spy's "idle" is a sleeping thread: on a busy machine a process
# waiting for the CPU counts as active, so there is no profile of CPU time alone here;
# the CPU per task comes from /proc.)
RECORDINGS = (("{name}.svg", ["--format", "flamegraph", "--idle"]),
              ("{name}.txt", ["--format", "raw", "--nolineno", "--idle"]))


def record(pids: dict[str, int], seconds: float) -> None:
    """py-spy on each process: every one of RECORDINGS at once."""
    OUT.mkdir(exist_ok=True)
    spies = []
    for name, pid in pids.items():
        for output, how in RECORDINGS:
            spies.append(subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                 "--rate", str(RATE), "--output", str(OUT / output.format(name=name)),
                 "--threads", "--nonblocking", *how],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for spy in spies:
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")


# -- reading the collapsed stacks ----------------------------------------------------
def read_stacks(path: Path, thread_marker: str) -> Counter[tuple[str, ...]]:
    """The samples of the thread whose stacks hold ``thread_marker``: frames outermost
    first, each "function (file)" (line numbers and site-packages paths dropped)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = tuple(_plain(frame) for frame in stack.split(";"))
        if any(thread_marker in frame for frame in frames):
            stacks[frames] += int(count)
    return stacks


def _plain(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?/(site-packages|lib/python3\.\d+)/", "(", frame)


KINDS = ("send", "reply", "redis-py", "other")


def kind_of(frames: tuple[str, ...]) -> str:
    if frames[-1] == SEND:
        return "send"
    if frames[-1] in RECEIVE:
        return "reply"
    return "redis-py" if REDIS_PY in frames[-1] else "other"


def shares(stacks: Counter[tuple[str, ...]], steps: list[tuple[str, str]]) -> list[str]:
    """Each step's share of the samples (wall time), split by ``kind_of``."""
    total = sum(stacks.values())
    table: dict[str, Counter[str]] = {label: Counter() for _, label in steps}
    table["elsewhere"] = Counter()
    for frames, count in stacks.items():
        on_stack = set(frames)
        label = next((label for marker, label in steps if marker in on_stack), "elsewhere")
        table[label][kind_of(frames)] += count
    table["all"] = sum(table.values(), Counter())
    out = [f"{total:,} samples of the main thread; share of them (%), by step and by where "
           "the innermost frame is:",
           f"  {'step':<48} {'all':>5} " + " ".join(f"{kind:>8}" for kind in KINDS)]
    for label, kinds in sorted(table.items(), key=lambda item: -sum(item[1].values())):
        if kinds:
            out.append(f"  {label:<48} {_pct(sum(kinds.values()), total):>5} "
                       + " ".join(f"{_pct(kinds[kind], total):>8}" for kind in KINDS))
    return out


def hottest(stacks: Counter[tuple[str, ...]], top: int = 25) -> list[str]:
    """The functions most often on the stack (inclusive) and at its top (self)."""
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"most often on the stack (inclusive %; frames on every sample left out), of "
           f"{total:,} samples:"]
    out += [f"  {_pct(c, total):>5}  {f}"
            for f, c in [(f, c) for f, c in inclusive.most_common() if c < total][:top]]
    out += ["most often at the top of the stack (self %):"]
    out += [f"  {_pct(c, total):>5}  {f}" for f, c in own.most_common(top)]
    return out


def _pct(part: float, total: float) -> str:
    return f"{100 * part / total:.1f}" if total else "-"


def summarize(window: Window | None = None,
              floor_rows: Sequence[dict[str, Any]] = ()) -> str:
    out = ["# Profiles of a draining asyncq worker", "",
           "Written by `python -m benchmarks.profile` (see its docstring). By where the "
           "innermost Python frame is: `send` = writing to Redis's socket (redis-py's "
           "`send_packed_command`, the system call that also wakes Redis), `reply` = waiting "
           "for and reading its reply (`_read_from_socket`), `redis-py` = the rest of "
           "redis-py (packing commands, parsing replies), `other` = asyncq, the task and the "
           "standard library (a system call made there, such as a pipe write, included).",
           ""]
    if window:
        out += ["```text", *window.lines(), "```", ""]
    if floor_rows:
        out += ["The floor (benchmarks/floor.py) on the same server right after, for the "
                "same CPU figures:", "", "```text"]
        out += [f"K={row['batch']:<3} {row['tasks_per_s']:8,.0f} tasks/s; CPU per task: "
                f"consumers {row['consumer_cpu_us_per_task']:.0f} us, redis-server "
                f"{row['redis_cpu_us_per_task']:.0f} us; commands per task "
                f"{row['sent_per_task']:.2f} sent, {row['executed_per_task']:.2f} executed"
                for row in floor_rows]
        out += ["```", ""]
    for name, marker, steps in (("child", "Child.loop (asyncq/worker.py)", CHILD_STEPS),
                                ("supervisor", "Supervisor.supervise (asyncq/worker.py)",
                                 SUPERVISOR_STEPS)):
        path = OUT / f"{name}.txt"
        if path.exists():
            stacks = read_stacks(path, marker)
            out += [f"## {name} (flame graph: {name}.svg)", "",
                    "```text", *shares(stacks, steps), "", *hottest(stacks), "```", ""]
    return "\n".join(out)


# -- the run -----------------------------------------------------------------------------
def queue_tasks(url: str, n: int) -> None:
    tasks = measure.tasks_for("asyncq", url)
    from asyncq import group

    for start in range(0, n, 2000):
        group(tasks.noop.s() for _ in range(min(2000, n - start))).apply_async()


def wait_children(worker: measure.Worker, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        children = measure._descendants(worker.process.pid)
        if len(children) >= count:
            return children
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start its children; see {worker.log.name}")
        time.sleep(0.05)


def run(n: int, window: float, seconds: float) -> str:
    with tempfile.TemporaryDirectory(prefix="profile-redis-") as folder:
        server = LocalRedis(folder).start()
        try:
            client = measure.flush(server.url)
            queue_tasks(server.url, n)
            worker = measure.Worker("asyncq", server.url, 2)
            try:
                children = wait_children(worker, 2)
                while client.llen(QUEUE) > n - 500:  # past the start-up: draining steadily
                    time.sleep(0.05)
                assert server.process is not None  # started
                pids = {"supervisor": worker.process.pid, "child 0": children[0],
                        "child 1": children[1], "redis-server": server.process.pid}
                measured = measure_window(client, pids, window)
                print("\n".join(measured.lines()), flush=True)
                record({"child": children[0], "supervisor": worker.process.pid}, seconds)
                if client.llen(QUEUE) == 0:
                    print(f"warning: the drain ended within the {seconds:.0f} s profile: "
                          "raise --tasks", file=sys.stderr)
            finally:
                worker.stop()
            floor_rows = [floor.drain(server.url, min(n, 20_000), batch)
                          for batch in floor.BATCHES]
        finally:
            server.stop()
    return summarize(measured, floor_rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=140_000, help="queued no-op tasks")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds of unprofiled drain for the CPU shares")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of profile")
    parser.add_argument("--summarize", action="store_true",
                        help="only re-read benchmarks/profiles/*.txt")
    options = parser.parse_args(argv)
    if options.summarize:
        print(summarize())
        return 0
    text = run(options.tasks, options.window, options.seconds)
    (OUT / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

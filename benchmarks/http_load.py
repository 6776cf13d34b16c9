"""The tutorial's routes under gunicorn, asyncq against Celery: requests/s and p99.

``http_post_benchmark(system, redis_url)`` starts gunicorn (the same settings for
both systems) serving benchmarks/bench_server.py, warms it up, and drives it from a
load generator in a second process -- this module run as a script, stdlib only:
threads, each with its own ``http.client.HTTPConnection`` to the loopback address.
No queue workers run: the route only enqueues, so the queue just fills up (the
database is flushed at the start of each run).

``http_get_benchmark(system, redis_url)`` does the same for the tutorial's GET
status route, and, under the same gunicorn, for a route that returns a constant
JSON body without touching Redis: the most that gunicorn and Flask serve here, the
floor the status route is judged against.

    python -m benchmarks.http_load --url http://127.0.0.1:PORT/async_long_running_task \\
        --seconds 5 --concurrency 8          # the load generator; prints one JSON line
    python -m benchmarks.http_load --self-test --seconds 3   # both systems, private redis
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/asyncq-bench"))
ROUTE = "/async_long_running_task"
MAX_SECONDS = 120.0          # no single load run lasts longer than this
MAX_REQUESTS = 2_000_000     # nor sends more requests than this
MAX_CONCURRENCY = 256
WARMUP_SECONDS = 1.0         # warm-up: about a second of full load (both workers
WARMUP_REQUESTS = 20_000     # booted, connections to Redis made), at most this many
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


# -- the load generator (runs in its own process) ---------------------------
def _loopback_target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"expected http://127.0.0.1:PORT/path, got {url!r}")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing a non-loopback address: {host}")
    return host, parts.port, parts.path or "/"


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def generate_load(url: str, seconds: float, concurrency: int,
                  max_requests: int = MAX_REQUESTS, timeout: float = 10.0,
                  method: str = "POST", expect: int = 202) -> dict[str, Any]:
    """``method`` (empty body) to ``url`` from ``concurrency`` threads for ``seconds``;
    a response counts when its status is ``expect``.

    Each thread has its own connection; gunicorn's sync workers close it after each
    response and http.client reconnects on the next request, so latency includes the
    TCP connect, the same for every system. Requests started before the deadline are
    counted; the window ends when the last one finishes.
    """
    host, port, path = _loopback_target(url)
    seconds = min(max(seconds, 0.0), MAX_SECONDS)
    concurrency = min(max(concurrency, 1), MAX_CONCURRENCY)
    max_requests = min(max(max_requests, 1), MAX_REQUESTS)
    per_thread = [max_requests // concurrency + (i < max_requests % concurrency)
                  for i in range(concurrency)]
    if method not in ("GET", "POST"):
        raise ValueError(f"method must be GET or POST, not {method!r}")
    body = b"" if method == "POST" else None
    latencies: list[list[float]] = [[] for _ in range(concurrency)]  # expected status only
    counts = [[0, 0, 0] for _ in range(concurrency)]  # sent, unexpected, no response at all
    ends = [0.0] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    window: dict[str, float] = {}

    def run(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        mine, count = latencies[i], counts[i]
        barrier.wait()
        deadline = window["deadline"]
        try:
            while count[0] < per_thread[i] and time.perf_counter() < deadline:
                count[0] += 1
                began = time.perf_counter()
                try:
                    conn.request(method, path, body=body)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    count[1] += 1
                    count[2] += 1
                    time.sleep(0.01)  # no hot loop against a refusing server
                    continue
                if status == expect:
                    mine.append(time.perf_counter() - began)
                else:
                    count[1] += 1
        finally:
            ends[i] = time.perf_counter()
            conn.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    window["start"] = time.perf_counter()
    window["deadline"] = window["start"] + seconds
    barrier.wait()
    for thread in threads:
        thread.join(seconds + timeout + 30)
    after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = max(ends) - window["start"]
    ordered = sorted(x for chunk in latencies for x in chunk)
    ok = len(ordered)
    sent = sum(c[0] for c in counts)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "requests": sent, "ok": ok, "unexpected": sum(c[1] for c in counts),
        "no_response": sum(c[2] for c in counts), "elapsed_s": round(elapsed, 4),
        "requests_per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": ms(_percentile(ordered, 50)), "p99_ms": ms(_percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
        "client_cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 3),
        "concurrency": concurrency,
    }


# -- gunicorn, and one measurement ------------------------------------------
def _free_port() -> int:
    from asyncq.cli.localredis import free_port
    return free_port()


class Gunicorn:
    """gunicorn serving benchmarks.bench_server:app; the same flags for every system."""

    def __init__(self, system: str, redis_url: str, workers: int):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{system}-gunicorn.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "BENCH_SYSTEM": system, "BENCH_REDIS_URL": redis_url}
        command = [sys.executable, "-m", "gunicorn", "--workers", str(workers),
                   "--bind", f"127.0.0.1:{self.port}", "benchmarks.bench_server:app"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> None:
        """Until a worker has the app loaded and the route answers 202 (gunicorn's
        master listens before its workers have imported anything)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}); "
                                   f"see {self.log_path}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("POST", ROUTE, body=b"")
                response = conn.getresponse()
                response.read()
                if response.status == 202:
                    return
                problem = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                problem = repr(exc)
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn not serving 202s ({problem}); see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def run_load_generator(url: str, seconds: float, concurrency: int,
                       max_requests: int = MAX_REQUESTS, method: str = "POST",
                       expect: int = 202) -> dict[str, Any]:
    """wrk when it is installed (C, so the client is not the bottleneck: the Python
    generator tops out near what gunicorn serves here); else this module's CLI in a
    child process, so the load does not share the caller's GIL."""
    if shutil.which("wrk"):  # no request cap: a warm-up is short in time too
        return wrk_load(url, seconds, concurrency, method)
    command = [sys.executable, "-m", "benchmarks.http_load", "--url", url,
               "--seconds", str(seconds), "--concurrency", str(concurrency),
               "--max-requests", str(max_requests), "--method", method,
               "--expect", str(expect)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=min(seconds, MAX_SECONDS) + 90)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "generator": "python"}


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    """wrk's '812.00us', '8.31ms' or '1.20s', in ms."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return round(float(match[1]) * _WRK_UNITS[match[2]], 3)


def wrk_load(url: str, seconds: float, concurrency: int, method: str = "POST") -> dict[str, Any]:
    """``wrk`` with two threads and ``concurrency`` connections. Any 2xx counts (the
    routes answer 202 or 200); other statuses and socket errors are ``unexpected``."""
    _loopback_target(url)
    seconds = min(max(seconds, 1.0), MAX_SECONDS)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f'wrk.method = "{method}"\n')
        script.flush()
        command = ["wrk", "--threads", "2", "--connections", str(concurrency),
                   "--duration", f"{seconds:g}s", "--latency", "--script", script.name, url]
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=seconds + 60)
    out = done.stdout
    found = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out[-2000:]} {done.stderr[-2000:]}")
    requests, elapsed = int(found[1]), _wrk_ms(found[2] + found[3]) / 1000
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    unexpected = (int(non_2xx[1]) if non_2xx else 0) + (
        sum(int(n) for n in errors.groups()) if errors else 0)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    ok = max(requests - (int(non_2xx[1]) if non_2xx else 0), 0)
    return {"requests": requests, "ok": ok, "unexpected": unexpected, "no_response": 0,
            "elapsed_s": round(elapsed, 4),
            "requests_per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": _wrk_ms(p50[1]) if p50 else None,
            "p99_ms": _wrk_ms(p99[1]) if p99 else None,
            "concurrency": concurrency, "generator": "wrk"}


def _serving(system: str, redis_url: str, gunicorn_workers: int) -> Gunicorn:
    """A gunicorn of ``system`` answering on an emptied Redis database."""
    if system not in ("asyncq", "celery"):
        raise ValueError(f"system must be 'asyncq' or 'celery', not {system!r}")
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    server = Gunicorn(system, redis_url, gunicorn_workers)
    try:
        server.wait_serving()
    except BaseException:
        server.stop()
        raise
    return server


def _measure(server: Gunicorn, path: str, seconds: float, concurrency: int,
             method: str = "GET", expect: int = 200) -> dict[str, Any]:
    """Warm-up, then the measured load on one path; every answer must be ``expect``."""
    url = server.base + path
    warm = run_load_generator(url, WARMUP_SECONDS, concurrency, WARMUP_REQUESTS, method, expect)
    if warm["ok"] == 0:
        raise RuntimeError(f"warm-up of {method} {path} got no {expect}s: {warm}; "
                           f"see {server.log_path}")
    return run_load_generator(url, seconds, concurrency, method=method, expect=expect)


def http_post_benchmark(system: str, redis_url: str, seconds: float = 5.0, concurrency: int = 16,
                        gunicorn_workers: int = 2) -> dict:
    """Requests/s and latency of POST /async_long_running_task under gunicorn."""
    server = _serving(system, redis_url, gunicorn_workers)
    try:
        load = _measure(server, ROUTE, seconds, concurrency, "POST", 202)
    finally:
        server.stop()
    return {"system": system, "requests_per_s": load["requests_per_s"],
            "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"], "errors": load["unexpected"],
            "seconds": load["elapsed_s"], "concurrency": concurrency,
            "generator": load["generator"],
            "gunicorn_workers": gunicorn_workers}


def _submit_one(server: Gunicorn) -> str:
    """POST to the tutorial's route once; the new task's id."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", ROUTE, body=b"")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 202:
        raise RuntimeError(f"POST {ROUTE} answered {response.status}: {body[:200]!r}")
    return str(json.loads(body)["task_id"])


def http_get_benchmark(system: str, redis_url: str, seconds: float = 5.0, concurrency: int = 16,
                       gunicorn_workers: int = 2) -> dict:
    """Requests/s of GET /async_long_running_task/<id> (the tutorial's status route) and
    of GET /constant (the same JSON shape, no Redis) under one gunicorn, one after the
    other. The id is that of a task just submitted, so both systems read a task that no
    worker has touched (PENDING): one Redis read per request."""
    server = _serving(system, redis_url, gunicorn_workers)
    try:
        task_id = _submit_one(server)
        status = _measure(server, f"{ROUTE}/{task_id}", seconds, concurrency)
        constant = _measure(server, "/constant", seconds, concurrency)
    finally:
        server.stop()
    return {"system": system, "status_per_s": status["requests_per_s"],
            "constant_per_s": constant["requests_per_s"],
            "of_constant": round(status["requests_per_s"] / constant["requests_per_s"], 3)
            if constant["requests_per_s"] else 0.0,
            "p99_ms": status["p99_ms"], "errors": status["unexpected"] + constant["unexpected"],
            "concurrency": concurrency, "gunicorn_workers": gunicorn_workers,
            "generator": status["generator"]}


# -- CLI ----------------------------------------------------------------------
def self_test(seconds: float, concurrency: int, workers: int, systems: list[str],
              rounds: int, route: str = "post") -> None:
    """Each system ``rounds`` times on a private redis-server, alternating the order
    (A B B A ...) so neither system always runs first or on a warmer machine."""
    from asyncq.cli.localredis import LocalRedis

    results: dict[str, list[dict]] = {system: [] for system in systems}
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        server = LocalRedis(tmp).start()
        try:
            for round_ in range(max(rounds, 1)):
                for system in systems if round_ % 2 == 0 else systems[::-1]:
                    bench = http_get_benchmark if route == "get" else http_post_benchmark
                    result = bench(system, server.url, seconds, concurrency, workers)
                    results[system].append(result)
                    print(json.dumps(result), flush=True)
        finally:
            server.stop()
    key = "status_per_s" if route == "get" else "requests_per_s"
    for system, runs in results.items():
        print(json.dumps({"system": system, "runs": len(runs),
                          "median_requests_per_s": round(statistics.median(
                              r[key] for r in runs), 1),
                          "median_p99_ms": round(statistics.median(
                              r["p99_ms"] for r in runs), 3),
                          "errors": sum(r["errors"] for r in runs)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="load-generator mode: the loopback URL to load")
    parser.add_argument("--method", default="POST", choices=("GET", "POST"))
    parser.add_argument("--expect", type=int, default=202, help="the status that counts")
    parser.add_argument("--route", default="post", choices=("post", "get"),
                        help="self-test: the POST route, or GET status against /constant")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=MAX_REQUESTS)
    parser.add_argument("--self-test", action="store_true",
                        help="measure both systems on a private redis-server and print them")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (self-test)")
    parser.add_argument("--systems", default="asyncq,celery",
                        help="systems to measure (self-test), e.g. asyncq,celery")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each system, order alternating (self-test)")
    args = parser.parse_args(argv)
    if args.self_test:
        self_test(args.seconds, args.concurrency, args.workers, args.systems.split(","),
                  args.rounds, args.route)
        return 0
    if not args.url:
        parser.error("give --url (load generator) or --self-test")
    print(json.dumps(generate_load(args.url, args.seconds, args.concurrency,
                                   args.max_requests, method=args.method,
                                   expect=args.expect)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

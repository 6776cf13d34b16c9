"""Fixtures: a private redis-server for the session, real worker processes per test."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from asyncq.cli.localredis import LocalRedis

ROOT = Path(__file__).resolve().parent.parent

# A test run started in the background by a shell without job control inherits SIGINT
# ignored, and so would every process the tests start (Python keeps an ignored SIGINT):
# the tests that press Ctrl-C on a worker or `asyncq events` need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    os.environ["ASYNCQ_BROKER_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    """The private server's URL, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def app(redis_url: str):
    from tests import taskapp

    taskapp.app.reset_connection()
    yield taskapp.app
    taskapp.app.reset_connection()


@pytest.fixture
def fapp(redis_url):
    """The features app, connected afresh to the test redis-server."""
    from tests import featureapp

    featureapp.app.reset_connection()
    yield featureapp.app
    featureapp.app.reset_connection()


@pytest.fixture
def capp(redis_url):
    """The canvas app (tests/canvasapp.py), connected afresh to the test redis-server."""
    from tests import canvasapp

    canvasapp.app.reset_connection()
    yield canvasapp.app
    canvasapp.app.reset_connection()


class Process:
    """A child process whose merged output is read line by line, so tests wait on events."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.args = args
        self.popen = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # its own process group, so stop() can end all of it
        self.lines: list[str] = []
        self.closed = False
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self.closed = True
        self._new.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """Block until a line matching ``pattern`` appears (lines before ``start`` skipped)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for line in self.lines[seen:]:
                seen += 1
                if match := regex.search(line):
                    return match
            if self.closed and seen >= len(self.lines):
                raise AssertionError(f"output closed (exit {self.popen.wait()}) before a line "
                                     f"matching {pattern!r}; output:\n{self.output}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; "
                                     f"output:\n{self.output}")
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=left)

    def count(self, pattern: str) -> int:
        """How many lines read so far match ``pattern``."""
        regex = re.compile(pattern)
        return sum(1 for line in list(self.lines) if regex.search(line))

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} did not exit within {timeout}s; "
                                 f"output:\n{self.output}") from None

    def stop(self) -> None:
        """SIGTERM (after 15 s, SIGKILL to its whole process group), then release the pipe."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._reader.join(5)
        if self.popen.stdout and not self._reader.is_alive():
            self.popen.stdout.close()  # closing under a blocked reader would hang


def asyncq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "asyncq", *args]


@pytest.fixture
def start_worker(redis_url: str) -> Iterator:
    """Start ``asyncq -A tests.taskapp worker`` and wait for its ready line."""
    started: list[Process] = []

    def start(*extra: str, concurrency: int = 1, app: str = "tests.taskapp",
              wait_ready: bool = True, env: dict[str, str] | None = None) -> Process:
        worker = Process(asyncq_command("-A", app, "worker", f"--concurrency={concurrency}",
                                        "--loglevel=info", *extra),
                         env={"ASYNCQ_BROKER_URL": redis_url, **(env or {})})
        started.append(worker)
        if wait_ready:
            worker.wait_for(r" ready\.$")
        return worker

    yield start
    for worker in started:
        worker.stop()


def http(method: str, url: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    """One HTTP request; returns (status, headers, parsed JSON body or the raw text)."""
    import json
    import urllib.error
    import urllib.request

    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
        exc.close()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode(errors="replace")


def wait_until_listening(port: int, process: Process, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gunicorn not listening on {port}; output:\n{process.output}")
        time.sleep(0.05)


@pytest.fixture
def start_gunicorn(redis_url: str) -> Iterator:
    """Start gunicorn serving ``wsgi`` (such as examples.tutorial.server:app); returns its URL.
    ``args``: more gunicorn options, such as ``("-c", "python:asyncq.api.gunicorn_conf")``."""
    from asyncq.cli.localredis import free_port

    started: list[Process] = []

    def start(wsgi: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
              args: tuple[str, ...] = ()) -> str:
        port = free_port()
        server = Process([sys.executable, "-m", "gunicorn", *args, "--workers", "1", "--bind",
                          f"127.0.0.1:{port}", "--no-control-socket", wsgi], cwd=cwd,
                         env={"ASYNCQ_BROKER_URL": redis_url, **(env or {})})
        started.append(server)
        wait_until_listening(port, server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in started:
        server.stop()


# -- Redis state, read straight from the server by key name --------------------

QUEUE = "{asyncq:celery}:queue"  # the default queue's list
DEAD_LETTERS = "{asyncq}:dead"  # messages a worker could not run


def queue_key(name: str, priority: int = 0) -> str:
    return "{asyncq:" + name + "}:queue" + (f":p{priority}" if priority else "")


def scheduled_key(queue: str = "celery") -> str:
    return "{asyncq:" + queue + "}:scheduled"


def task_key(task_id: str) -> str:
    return "asyncq:task:{" + task_id + "}"


def inflight_key(worker_id: str, slot: int = 0, queue: str = "celery") -> str:
    return f"{{asyncq:{queue}}}:inflight:{worker_id}:{slot}"


def worker_key(worker_id: str) -> str:
    return "{asyncq}:worker:" + worker_id


def asyncq_keys(client: redis.Redis) -> list[bytes]:
    """Every key of the default key prefix, sorted."""
    return sorted(client.keys("*asyncq*"))


def stream_events(client: redis.Redis, key: str = "{asyncq}:events") -> list[dict[str, str]]:
    """The task events in the stream, oldest first, as a reader sees them: a batch entry
    (field ``events``, a JSON array) unpacked; an entry of one event's fields as it is."""
    import json

    events: list[dict[str, str]] = []
    for _, fields in client.xrange(key):
        if b"events" in fields:
            events += json.loads(fields[b"events"])
        else:
            events.append({k.decode(errors="replace"): v.decode(errors="replace")
                           for k, v in fields.items()})
    return events


def read_record(client: redis.Redis, task_id: str) -> dict[str, str]:
    """A task's record hash as text ({} when there is none)."""
    return {k.decode(): v.decode() for k, v in client.hgetall(task_key(task_id)).items()}


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``probe`` (a cheap Redis read) until it returns something truthy, and return it.

    For states that publish no event (such as STARTED); fails saying what never happened.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s (last probe: {value!r})")
        time.sleep(0.02)


def wait_for_state(result: Any, state: str, timeout: float = 10.0) -> None:
    """Wait until ``result.state`` is ``state``; fails naming the last state seen."""
    seen: list[str] = []

    def reached() -> bool:
        seen.append(result.state)
        return seen[-1] == state

    wait_until(reached, f"task {result.id} in state {state} (last state {seen[-1:]})", timeout)


def chain_nodes(result) -> list:
    """A chain's results from the last step back to the first, following .parent."""
    nodes = []
    while result is not None:
        nodes.append(result)
        result = result.parent
    return nodes


def wait_for_states(results: list, expected: list[str], timeout: float = 10.0) -> None:
    """Wait until ``results`` are in the states ``expected`` (in order); fails naming the
    states last seen. (A .get() may raise as soon as an earlier step ended, as Celery's
    does, a moment before the rest is marked.)"""
    seen: list[list[str]] = []

    def reached() -> bool:
        seen.append([result.state for result in results])
        return seen[-1] == expected

    try:
        wait_until(reached, f"states {expected}", timeout)
    except AssertionError:
        raise AssertionError(f"states {expected} not reached within {timeout}s; "
                             f"last seen {seen[-1]}") from None


def wait_for_progress_pid(result: Any, other_than: int | None = None,
                          timeout: float = 10.0) -> int:
    """The pid a tests.block-style task reports in its PROGRESS meta (not ``other_than``)."""

    def pid() -> int | None:
        info = result.info if result.state == "PROGRESS" else None
        found = info.get("pid") if isinstance(info, dict) else None
        return found if found != other_than else None

    return wait_until(pid, f"task {result.id} reporting a child pid other than {other_than}",
                      timeout)


def parent_pid(pid: int) -> int:
    """The parent of a running process, from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


class Gate:
    """A Redis key that tests.block, hold and report wait for; ``open`` lets them return."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.key = f"test:gate:{uuid.uuid4().hex}"

    def open(self) -> None:
        self.client.set(self.key, 1)


@pytest.fixture
def gate(client: redis.Redis, start_worker: Callable[..., Process]) -> Iterator[Gate]:
    """A closed gate, opened again at teardown (before workers stop) so no task stays blocked."""
    closed = Gate(client)
    yield closed
    closed.open()


# -- whole-worker faults ---------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """The child processes of a running process, from /proc (Linux); [] once it is gone."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_state(pid: int) -> str:
    """The state letter of a process from /proc (R, S, T stopped, Z zombie...); X once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rpartition(")")[2].split()[0]


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as gone: it runs no more code)."""
    return process_state(pid) in ("Z", "X")


def kill_worker_host(worker: Process, timeout: float = 10.0) -> list[int]:
    """Kill a worker as if its host died: supervisor and children SIGKILLed together.

    The supervisor is stopped first, so it neither recovers nor replaces a child in
    between. Returns the children's pids, once the supervisor and all of them are gone.
    """
    os.kill(worker.pid, signal.SIGSTOP)
    wait_until(lambda: process_state(worker.pid) == "T", f"worker {worker.pid} stopped", timeout)
    children = children_of(worker.pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(timeout) == -signal.SIGKILL
    wait_until(lambda: all(is_gone(pid) for pid in children),
               f"children {children} of the killed worker gone", timeout)
    return children


def run_asyncq(*args: str, broker_url: str, input: str | None = None,
               timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncq ARGS`` to completion against ``broker_url``; output as text."""
    return subprocess.run(asyncq_command(*args), cwd=ROOT, input=input, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "ASYNCQ_BROKER_URL": broker_url})

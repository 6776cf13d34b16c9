"""``asyncq dev``: the whole service on one machine with one command.

Starts a private redis-server when $ASYNCQ_BROKER_URL is not set, then the
gunicorn API and a worker; Ctrl-C (or SIGTERM) stops all three.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack

import click
import redis
from gunicorn.config import KNOWN_SETTINGS

from asyncq.app import AsyncQ
from asyncq.cli.localredis import LocalRedis, RedisNotFound
from asyncq.connection import describe_url, redis_from_url
from asyncq.loader import AppNotFound, find_app


def run_dev(app_spec: str, wsgi: str, bind: str, concurrency: int) -> int:
    """Run until interrupted; returns the exit status."""
    app, problem = load_app(app_spec)
    if app is None:
        click.echo(f"asyncq dev: {problem}", err=True)
        return 2
    env = dict(os.environ)
    with ExitStack() as cleanup:
        private = not env.get("ASYNCQ_BROKER_URL")
        if private:
            try:
                server = LocalRedis(cleanup.enter_context(tempfile.TemporaryDirectory())).start()
            except (RedisNotFound, RuntimeError, TimeoutError) as exc:
                click.echo(f"asyncq dev: {exc}", err=True)
                return 2
            cleanup.callback(server.stop)
            env["ASYNCQ_BROKER_URL"] = server.url
            click.echo(f"asyncq dev: private redis-server at {server.url}", err=True)
        worker = [sys.executable, "-m", "asyncq", "-A", app_spec, "worker",
                  f"--concurrency={concurrency}", "--loglevel=info"]
        processes = [subprocess.Popen(command, env=env, start_new_session=True)
                     for command in (worker, gunicorn_command(bind, wsgi))]
        url = env["ASYNCQ_BROKER_URL"]

        def announce() -> None:
            try:
                wait_ready(processes, bind, url, app.keys.workers())
            except (redis.RedisError, ValueError) as exc:  # only the announcement suffers
                click.echo(f"asyncq dev: cannot tell when it is ready ({exc})", err=True)
            announce_ready(bind, url, private)

        return supervise(processes, announce)


def gunicorn_command(bind: str, wsgi: str) -> list[str]:
    """gunicorn for the API, with asyncq's settings (its own error pages in JSON, see
    asyncq/api/gunicorn_conf.py); without the control socket that gunicorn 24+ opens
    under ~/.gunicorn/, which a second dev server would share (and delete on exit)."""
    command = [sys.executable, "-m", "gunicorn", "-c", "python:asyncq.api.gunicorn_conf",
               "--workers", "2", "--bind", bind]
    if any(setting.name == "control_socket" for setting in KNOWN_SETTINGS):
        command.append("--no-control-socket")
    return [*command, wsgi]


def load_app(app_spec: str) -> tuple[AsyncQ | None, str]:
    """The app, or why it cannot be loaded (said plainly, before starting anything)."""
    try:
        return find_app(app_spec), ""
    except (ImportError, AppNotFound) as exc:
        return None, (f"cannot load the app {app_spec!r} ({exc}); run this from the folder "
                      "that holds the module (for the example: the asyncq checkout)")


def wait_ready(processes: list[subprocess.Popen[bytes]], bind: str, url: str,
               workers_key: str, timeout: float = 60.0) -> None:
    """Until gunicorn accepts connections and the worker has registered in Redis
    (or one of them has ended, or ``timeout`` has passed: supervise() takes over)."""
    host, _, port = bind.rpartition(":")
    address = ("127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host.strip("[]"),
               int(port) if port.isdigit() else 0)
    client = redis_from_url(url, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            with contextlib.suppress(redis.RedisError), socket.socket() as probe:
                probe.settimeout(1)
                if (not address[1] or probe.connect_ex(address) == 0) and \
                        client.hlen(workers_key):
                    return
            time.sleep(0.1)
    finally:
        client.close()


def announce_ready(bind: str, url: str, private: bool) -> None:
    """Where to point a browser, and the line that points the other commands here."""
    click.echo(f"asyncq dev: ready. API on http://{bind}, dashboard on "
               f"http://{bind}/dashboard", err=True)
    if private:
        click.echo("asyncq dev: inspect, status, events, dead and purge read this private "
                   "Redis after, in another shell:", err=True)
        click.echo(f"    export ASYNCQ_BROKER_URL={url}", err=True)
    else:
        click.echo(f"asyncq dev: using $ASYNCQ_BROKER_URL ({describe_url(url)})", err=True)
    click.echo("asyncq dev: Ctrl-C stops everything", err=True)


class _Interrupted(Exception):
    """Raised by the signal handler to leave a blocking wait."""


def supervise(processes: list[subprocess.Popen[bytes]],
              announce: Callable[[], None] = lambda: None) -> int:
    """Wait for Ctrl-C/SIGTERM or for one process to end, then stop them all.

    The children run in sessions of their own, so a Ctrl-C reaches only this
    process, which passes on exactly one SIGTERM: a warm shutdown for the worker.
    A second Ctrl-C passes on a second SIGTERM: a cold shutdown.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    interrupted = False
    try:
        announce()
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)  # until a child exits
    except _Interrupted:
        interrupted = True
    # Each further Ctrl-C stops harder: a second SIGTERM is the worker's cold shutdown.
    for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        try:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signum)
            for process in processes:
                process.wait()
            break
        except _Interrupted:
            click.echo("asyncq dev: interrupted again, stopping harder", err=True)
    return 0 if interrupted else 1

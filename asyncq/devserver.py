"""``asyncq dev``: the whole service on one machine with one command.

Starts a private redis-server when $ASYNCQ_BROKER_URL is not set, then the
gunicorn API and a worker; Ctrl-C (or SIGTERM) stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack

import click

from asyncq.localredis import LocalRedis, RedisNotFound


def run_dev(app_spec: str, wsgi: str, bind: str, concurrency: int) -> int:
    """Run until interrupted; returns the exit status."""
    problem = check_importable(app_spec)
    if problem:
        click.echo(f"asyncq dev: {problem}", err=True)
        return 2
    env = dict(os.environ)
    with ExitStack() as cleanup:
        if not env.get("ASYNCQ_BROKER_URL"):
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
        api = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", bind, wsgi]
        processes = [subprocess.Popen(command, env=env, start_new_session=True)
                     for command in (worker, api)]
        click.echo(f"asyncq dev: API on http://{bind} - Ctrl-C stops everything", err=True)
        return supervise(processes)


def check_importable(app_spec: str) -> str | None:
    """Say plainly why the app cannot be loaded, before starting anything."""
    from asyncq.cli import find_app

    try:
        find_app(app_spec)
    except (ImportError, click.UsageError) as exc:
        return (f"cannot load the app {app_spec!r} ({exc}); run this from the folder that "
                "holds the module (for the example: the asyncq checkout)")
    return None


class _Interrupted(Exception):
    """Raised by the signal handler to leave a blocking wait."""


def supervise(processes: list[subprocess.Popen[bytes]]) -> int:
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

"""The ``asyncq`` command: ``asyncq -A module.app worker``, ``asyncq -A module dev``."""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import click

from asyncq import __version__
from asyncq.app import AsyncQ
from asyncq.worker import Supervisor, WorkerOptions

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def find_app(spec: str) -> AsyncQ:
    """Load an app the way Celery's ``-A`` does: ``pkg.module``, ``pkg.module.attr`` or
    ``pkg.module:attr``; a bare module is searched for an ``app`` or ``celery`` attribute."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like Celery: -A finds modules in this folder
    module_name, _, attr = spec.partition(":")
    if not attr:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name != spec or "." not in spec:
                raise
            module_name, _, attr = spec.rpartition(".")
        else:
            return _app_in(module, spec)
    found = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(found, AsyncQ):
        raise click.UsageError(f"{spec!r} is not an asyncq app (found {type(found).__name__})")
    return found


def _app_in(module: object, spec: str) -> AsyncQ:
    for name in ("app", "celery"):
        if isinstance(getattr(module, name, None), AsyncQ):
            return getattr(module, name)
    apps = [value for value in vars(module).values() if isinstance(value, AsyncQ)]
    if len(apps) == 1:
        return apps[0]
    raise click.UsageError(f"no asyncq app found in module {spec!r}; name it as {spec}.app")


def hide_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":**@")
    return urlunsplit(parts._replace(netloc=netloc))


def banner(app: AsyncQ, supervisor: Supervisor) -> str:
    url = hide_password(app.conf.broker)
    lines = [
        f"asyncq v{__version__} worker {supervisor.worker_id}",
        f"{platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}",
        "",
        "[config]",
        f".> app:         {app.main}:{id(app):#x}",
        f".> transport:   {url}",
        f".> results:     {hide_password(app.conf.result_backend or app.conf.broker)}",
        f".> concurrency: {supervisor.concurrency} (prefork)",
        f".> acks late:   {'on' if app.conf.task_acks_late else 'off'} by default",
        "",
        "[queues]",
        *(f".> {queue}" for queue in supervisor.queues),
        "",
        "[tasks]",
        *(f"  . {name}" for name in sorted(app.tasks)),
        "",
    ]
    return "\n".join(lines)


@click.group()
@click.version_option(__version__, prog_name="asyncq")
@click.option("-A", "--app", "app_spec", metavar="MODULE", help="The app, as in Celery's -A.")
@click.pass_context
def main(ctx: click.Context, app_spec: str | None) -> None:
    """asyncq: a small, readable, Celery-compatible task queue on Redis."""
    ctx.obj = app_spec


def load(ctx: click.Context) -> AsyncQ:
    if not ctx.obj:
        raise click.UsageError("name the app with -A, for example: asyncq -A server.celery worker")
    return find_app(ctx.obj)


@main.command()
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Child processes (default: the number of CPUs).")
@click.option("-Q", "--queues", default="", help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", default="", help="Worker id (default asyncq@HOST:PID).")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None,
              help="Replace a child after it has run this many tasks.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, queues: str, hostname: str,
           loglevel: str, max_tasks_per_child: int | None) -> None:
    """Start a prefork worker: a supervisor and --concurrency children."""
    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT, stream=sys.stderr)
    app = load(ctx)
    options = WorkerOptions(concurrency=concurrency or 0,
                            queues=[q for q in queues.split(",") if q],
                            hostname=hostname, max_tasks_per_child=max_tasks_per_child or 0)
    supervisor = Supervisor(app, options)
    click.echo(banner(app, supervisor), err=True)
    sys.exit(supervisor.run())


@main.command()
@click.option("--bind", default="127.0.0.1:5000", show_default=True,
              help="Where gunicorn listens.")
@click.option("--wsgi", default="", help="WSGI app for gunicorn (default MODULE:app).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.pass_context
def dev(ctx: click.Context, bind: str, wsgi: str, concurrency: int) -> None:
    """Run the API (gunicorn) and a worker, and a private redis-server if no
    $ASYNCQ_BROKER_URL is set; Ctrl-C stops them all."""
    from asyncq.devserver import run_dev

    if not ctx.obj:
        raise click.UsageError("name the app module with -A, for example: "
                               "asyncq -A examples.tutorial.server dev")
    sys.exit(run_dev(ctx.obj, wsgi or f"{ctx.obj.split(':')[0]}:app", bind, concurrency))


if __name__ == "__main__":
    main()

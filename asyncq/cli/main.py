"""The ``asyncq`` command: ``asyncq -A module.app worker``, ``asyncq -A module dev``,
``asyncq -A module dead list|requeue|purge``, and for watching ``inspect``,
``status TASK_ID [--wait]`` and ``events`` (rendered by ``asyncq.watch``)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.process import BaseProcess
from typing import Any

import click
import redis
from redis.exceptions import RedisClusterException

from asyncq import __version__, damage, signals, states
from asyncq.app import AsyncQ
from asyncq.beat import Beat
from asyncq.cli import deadletters, watch
from asyncq.cli.devserver import run_dev
from asyncq.connection import describe_url, redis_from_url
from asyncq.loader import AppNotFound, find_app
from asyncq.monitor import Monitor, describe
from asyncq.outage import REDIS_DOWN
from asyncq.utils.log import TASK_LOGGER
from asyncq.worker import Supervisor, WorkerOptions

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def banner(app: AsyncQ, supervisor: Supervisor) -> str:
    url = describe_url(app.conf.broker)
    lines = [
        f"asyncq v{__version__} worker {supervisor.worker_id}",
        f"{platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}",
        "",
        "[config]",
        f".> app:         {app.main}:{id(app):#x}",
        f".> transport:   {url}",
        f".> results:     {describe_url(app.conf.result_backend or app.conf.broker)}",
        f".> concurrency: {supervisor.concurrency} (prefork)",
        f".> acks late:   {'on' if app.conf.task_acks_late else 'off'} by default",
        "",
        "[queues]",
        *(f".> {queue}" for queue in supervisor.queues),
        "",
        "[tasks]",
        *(f"  . {name}" for name in app.task_names()),
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
    try:
        return find_app(ctx.obj)
    except AppNotFound as exc:
        raise click.UsageError(str(exc)) from None
    except ModuleNotFoundError as exc:
        # Only a wrong -A is a usage error; a module the app itself imports stays a traceback.
        module = ctx.obj.partition(":")[0]
        if not exc.name or not (module == exc.name or module.startswith(exc.name + ".")):
            raise
        raise click.UsageError(f"cannot load the app {ctx.obj!r}: no module named {exc.name!r} "
                               "(asyncq looks in the current folder and on sys.path)") from None


class RedisUnavailable(click.ClickException):
    """Redis is down or refused the URL's credentials: exit status 3, for scripts."""

    exit_code = 3


def refused(app: AsyncQ, exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(
        f"Redis at {describe_url(app.conf.broker)} refused the credentials ({exc}); "
        "check the password in the broker URL ($ASYNCQ_BROKER_URL or broker_url), "
        "as in redis://:PASSWORD@host:6379/0")


@contextmanager
def talking_to_redis(app: AsyncQ) -> Iterator[None]:
    """Name the Redis this command reads, then turn Redis errors into one plain line and
    exit status 3 instead of a traceback."""
    try:
        say_which_redis(app)
        yield
    except redis.AuthenticationError as exc:
        raise refused(app, exc) from None
    except REDIS_DOWN as exc:
        raise RedisUnavailable(
            f"Redis at {describe_url(app.conf.broker)} is unreachable: {exc}") from None


def say_which_redis(app: AsyncQ) -> None:
    """One line on stderr (so --json output stays clean) naming the Redis read and where
    its URL came from; a warning when it holds no asyncq key at all, the usual sign of a
    command pointed at another Redis than the workers'."""
    url = app.conf.broker
    if url == os.environ.get("ASYNCQ_BROKER_URL"):
        source = "from $ASYNCQ_BROKER_URL"
    elif app.conf.broker_url:
        source = f"the broker URL of app {app.main!r}"
    else:
        source = "the default: $ASYNCQ_BROKER_URL is not set"
    keys = app.keys
    found = app.broker.client.exists(keys.workers(), keys.queues(), keys.counters(),
                                     keys.dead_letters(), keys.events())
    click.echo(f"Redis: {describe_url(url)} ({source})", err=True)
    if not found:
        click.echo(f"Note: this Redis holds no asyncq data at all (no worker, queue, task "
                   f"count or event under {keys.tag}). If your workers use another Redis, "
                   "set ASYNCQ_BROKER_URL to its URL (asyncq dev prints the line to use).",
                   err=True)


def check_credentials(app: AsyncQ) -> None:
    """Stop at once when Redis refuses the URL's password.

    The supervisor waits for an unreachable Redis to come back, and redis-py
    reports a refused password as a connection error, so a wrong password would
    otherwise look like a Redis that never comes up.
    """
    client = None
    try:
        client = redis_from_url(app.conf.broker, socket_connect_timeout=5, socket_timeout=5)
        client.ping()
    except redis.AuthenticationError as exc:
        raise refused(app, exc) from None
    except (redis.RedisError, RedisClusterException):
        pass  # down or still starting: the supervisor waits for it
    finally:
        if client is not None:
            client.close()


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
@click.option("-E", "--task-events/--no-task-events", default=None,
              help="Send task events to the stream (the default: worker_send_task_events; "
                   "-E is Celery's flag). Counters are kept either way.")
@click.option("-B", "--beat", "with_beat", is_flag=True,
              help="Also run a scheduler for periodic tasks (any number may run).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, queues: str, hostname: str,
           loglevel: str, max_tasks_per_child: int | None, task_events: bool | None,
           with_beat: bool) -> None:
    """Start a prefork worker: a supervisor and --concurrency children."""
    app = load(ctx)
    set_up_logging(loglevel.upper())
    app.import_task_modules()  # include, imports, autodiscovered packages
    if app.conf.not_used:
        unused = ", ".join(sorted(app.conf.not_used))
        logging.getLogger("asyncq.worker").warning(
            "not used by asyncq: %s (see docs/from-celery.md)", unused)
    if task_events is not None:
        app.conf.worker_send_task_events = task_events
        app.reset_connection()
    options = WorkerOptions(concurrency=concurrency or 0,
                            queues=[q for q in queues.split(",") if q],
                            hostname=hostname, max_tasks_per_child=max_tasks_per_child or 0)
    check_credentials(app)
    supervisor = Supervisor(app, options)
    click.echo(banner(app, supervisor), err=True)
    scheduler = start_embedded_beat(app) if with_beat else None
    status = supervisor.run()
    if scheduler is not None:
        scheduler.terminate()
        scheduler.join(10)
    sys.exit(status)


def start_embedded_beat(app: AsyncQ) -> BaseProcess:
    """``worker -B``: a scheduler in a process of its own beside the supervisor; it
    stops when the worker's process is gone."""
    process = multiprocessing.get_context("fork").Process(
        target=run_beat, args=(app, os.getpid()), name="Beat", daemon=True)
    process.start()
    return process


def run_beat(app: AsyncQ, parent: int = 0) -> None:
    """A scheduler until SIGTERM or SIGINT (or, embedded, until ``parent`` is gone)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if parent:
        def watch_parent() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    stop.set()
        threading.Thread(target=watch_parent, daemon=True).start()
    app.reset_connection()
    Beat(app).run(stop)


def set_up_logging(level: str) -> None:
    """As Celery does: a ``setup_logging`` receiver replaces asyncq's logging set-up;
    otherwise log to stderr and tell ``after_setup_logger`` receivers."""
    options = {"loglevel": level, "logfile": None, "format": LOG_FORMAT, "colorize": False}
    if signals.setup_logging.receivers:
        signals.setup_logging.send(sender=None, **options)
        return
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    signals.after_setup_logger.send(sender=None, logger=logging.getLogger(), **options)
    signals.after_setup_task_logger.send(sender=None, logger=logging.getLogger(TASK_LOGGER),
                                         **options)


@main.command("beat")
@click.option("--list", "as_list", is_flag=True,
              help="Show each periodic task with its last and next run, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --list: JSON, for scripts.")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.pass_context
def beat_command(ctx: click.Context, as_list: bool, as_json: bool, loglevel: str) -> None:
    """Send periodic tasks (beat_schedule, add_periodic_task) when they are due. Any
    number of schedulers may run, on any hosts: each run is sent once; their state is
    in Redis, so there is no schedule file, and a scheduler that dies holds nothing."""
    app = load(ctx)
    set_up_logging(loglevel.upper())
    app.import_task_modules()
    if as_list:
        with talking_to_redis(app):
            rows = Beat(app).listing()
        click.echo(json.dumps(rows, indent=2) if as_json else
                   watch.beat_table(rows, app.conf.timezone))
        return
    click.echo(f"asyncq v{__version__} beat: {len(app.conf.beat_schedule)} periodic "
               f"task(s), time zone {app.conf.timezone}", err=True)
    run_beat(app)


@main.command()
@click.option("--bind", default="127.0.0.1:5000", show_default=True,
              help="Where gunicorn listens.")
@click.option("--wsgi", default="", help="WSGI app for gunicorn (default MODULE:app).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.pass_context
def dev(ctx: click.Context, bind: str, wsgi: str, concurrency: int) -> None:
    """Run the API (gunicorn) and a worker, and a private redis-server if no
    $ASYNCQ_BROKER_URL is set; Ctrl-C stops them all."""
    if not ctx.obj:
        raise click.UsageError("name the app module with -A, for example: "
                               "asyncq -A examples.tutorial.server dev")
    sys.exit(run_dev(ctx.obj, wsgi or f"{ctx.obj.split(':')[0]}:app", bind, concurrency))


# -- dead letters -------------------------------------------------------------
@main.group()
def dead() -> None:
    """Inspect, requeue or purge the dead-letter list ({asyncq}:dead).

    Exit status: 0 done, 1 nothing matched or some could not be requeued,
    2 usage error, 3 Redis unreachable or refusing the credentials.
    """


@dead.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@click.pass_context
def dead_list(ctx: click.Context, as_json: bool) -> None:
    """Show each dead letter and why this app cannot run it."""
    app = load(ctx)
    with talking_to_redis(app):
        letters = deadletters.read(app)
    if as_json:
        click.echo(json.dumps([letter.as_json() for letter in letters], indent=2))
        return
    if not letters:
        click.echo(f"No dead letters in {app.keys.dead_letters()}.")
        return
    click.echo(dead_letter_table(letters))
    runnable = sum(letter.requeueable for letter in letters)
    click.echo(f"\n{len(letters)} dead letter(s) in {app.keys.dead_letters()}: {runnable} can "
               f"be requeued, {len(letters) - runnable} cannot run.")


def dead_letter_table(letters: list[deadletters.DeadLetter]) -> str:
    """Columns: index, task id, task name, why it cannot run, the raw bytes."""
    header = ("#", "TASK ID", "TASK", "WHY IT CANNOT RUN", "MESSAGE")
    rows = [(str(letter.index), _cell(letter.task_id, 36), _cell(letter.task, 30),
             _cell(letter.problem or "nothing: can be requeued", 40), letter.preview())
            for letter in letters]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                                row[-1]])
                     for row in [header, *rows])


def _cell(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 3] + "..."


@dead.command("requeue")
@click.option("--id", "ids", multiple=True, metavar="TASK_ID",
              help="Requeue only the message of this task (repeatable); default: all.")
@click.pass_context
def dead_requeue(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Put dead letters back on their queue, each with a fresh PENDING record.

    Messages that cannot be decoded, name a task this app does not have, or whose
    task already ran through another copy stay in the list and are reported.
    """
    app = load(ctx)
    with talking_to_redis(app):
        report = deadletters.requeue(app, ids)
    for letter in report.requeued:
        click.echo(f"requeued {letter.task_id} ({letter.task}) to queue {letter.queue}")
    for letter in report.kept:
        click.echo(f"kept #{letter.index} {letter.task_id or '-'} ({letter.task or '-'}): "
                   f"{letter.detail or letter.problem}", err=True)
    for letter in report.gone:
        click.echo(f"skipped {letter.task_id} ({letter.task}): no longer in the list "
                   "(requeued or purged by someone else meanwhile)", err=True)
    for task_id in report.unmatched:
        click.echo(f"no dead letter with task id {task_id!r}", err=True)
    asked = len(report.requeued) + len(report.kept) + len(report.gone)
    if not asked and not report.unmatched:
        click.echo(f"No dead letters in {app.keys.dead_letters()}.", err=True)
    click.echo(f"{len(report.requeued)} requeued, {len(report.kept)} kept in the dead-letter "
               "list.")
    ctx.exit(0 if report.complete else 1)


@dead.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dead_purge(ctx: click.Context, yes: bool) -> None:
    """Delete the dead letters for good."""
    app = load(ctx)
    key = app.keys.dead_letters()
    with talking_to_redis(app):
        count = None
        if not yes:
            count = app.broker.client.llen(key)
            if not count:
                click.echo(f"No dead letters in {key}.")
                return
            click.confirm(f"Delete the {count} dead letter(s) in {key}?", abort=True)
        removed, left = deadletters.purge(app, count)
    click.echo(f"Removed {removed} dead letter(s) from {key}.")
    if left:
        click.echo(f"{left} newer dead letter(s) arrived meanwhile and were kept.")


@main.command()
@click.option("-Q", "--queues", default="", help="Comma-separated queues (default: the app's).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queues: str, yes: bool) -> None:
    """Delete the messages waiting in queues. Their records stay PENDING until they expire;
    tasks already running, scheduled for later, or dead-lettered are not touched."""
    app = load(ctx)
    names = [q for q in queues.split(",") if q] or [app.conf.task_default_queue]
    with talking_to_redis(app):
        waiting = app.broker.queue_lengths(names)
        if not yes:
            click.confirm(f"Delete {sum(waiting.values())} message(s) waiting in "
                          f"{', '.join(names)}?", abort=True)
        removed = {name: app.broker.purge(name) for name in names}
    for name, count in removed.items():
        click.echo(f"Purged {count} message(s) from queue {name}.")


# -- watching: inspect, status, events -----------------------------------------
EXIT_FAILURE, EXIT_NO_TASK, EXIT_REVOKED, EXIT_NOT_FINAL, EXIT_INTERRUPTED = 1, 4, 5, 6, 130


def exit_status(state: str) -> int:
    """A task state as the exit status of ``asyncq status``: scripts branch on it."""
    return {states.SUCCESS: 0, states.FAILURE: EXIT_FAILURE,
            states.REVOKED: EXIT_REVOKED}.get(state, EXIT_NOT_FINAL)


@main.group("inspect", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="The same facts as JSON, for scripts.")
@click.pass_context
def inspect_command(ctx: click.Context, as_json: bool) -> None:
    """Show workers (host, pid, concurrency, queues, last heartbeat, tasks done), the
    tasks each one runs and for how long, queue depths, scheduled and dead-letter
    counts, and tasks counted by state.

    Celery's forms work too, each answered per live worker from what it keeps in
    Redis: inspect active | reserved | scheduled | registered | stats | ping.

    Exit status: 0; 2 usage error; 3 Redis unreachable or refusing the credentials;
    69 (as Celery) no live worker, for the Celery forms.
    """
    ctx.meta["inspect_json"] = as_json
    if ctx.invoked_subcommand is not None:
        return
    app = load(ctx)
    with talking_to_redis(app):
        snapshot = Monitor(app).snapshot()
    click.echo(json.dumps(snapshot, indent=2) if as_json else watch.inspect_report(snapshot))


EXIT_NO_NODES = 69  # Celery's "No nodes replied within time constraint" (EX_UNAVAILABLE)


def _per_worker(ctx: click.Context, as_json: bool,
                answer: Callable[[AsyncQ, dict[str, Any]], Any]) -> None:
    """Celery's inspect output: ``->  worker: OK`` and each worker's answer."""
    app = load(ctx.find_root())
    as_json = as_json or bool(ctx.meta.get("inspect_json"))
    with talking_to_redis(app):
        workers = [worker for worker in Monitor(app).snapshot()["workers"] if worker["alive"]]
        replies = {worker["id"]: answer(app, worker) for worker in workers}
    if not replies:
        click.echo("Error: No nodes replied within time constraint", err=True)
        ctx.exit(EXIT_NO_NODES)
    if as_json:
        click.echo(json.dumps(replies, indent=2, default=str))
        return
    click.echo(watch.celery_inspect_text(replies))


def _inspect_form(name: str, help_text: str,
                  answer: Callable[[AsyncQ, dict[str, Any]], Any]) -> None:
    @inspect_command.command(name, help=help_text)
    @click.option("--json", "as_json", is_flag=True, help="{worker: answer} as JSON.")
    @click.pass_context
    def form(ctx: click.Context, as_json: bool) -> None:
        _per_worker(ctx, as_json, answer)


_inspect_form("active", "Tasks each worker is running.",
              lambda app, worker: [watch.celery_request(task, worker, True)
                                   for task in worker["active"]])
_inspect_form("reserved", "Tasks each worker has taken but not started.",
              lambda app, worker: [watch.celery_request(task, worker, False)
                                   for task in worker["reserved"]])
_inspect_form("scheduled", "Tasks waiting for their ETA in the queues each worker reads.",
              lambda app, worker: watch.scheduled_requests(app, worker))
_inspect_form("registered", "The tasks each worker knows.",
              lambda app, worker: worker.get("tasks", []))
_inspect_form("stats", "Each worker's pid, pool, queues and tasks done.",
              lambda app, worker: watch.celery_stats(app, worker))
_inspect_form("ping", "Which workers are alive (their heartbeat is fresh).",
              lambda app, worker: {"ok": "pong"})


@main.command("status")
@click.argument("task_id")
@click.option("--wait", is_flag=True,
              help="Follow the task until it ends, with a progress bar on stderr.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --wait: give up after this many seconds (exit status 6).")
@click.option("--json", "as_json", is_flag=True,
              help="The task as JSON (as GET /results/ID shows it), and no progress bar.")
@click.pass_context
def status_command(ctx: click.Context, task_id: str, wait: bool, timeout: float | None,
                   as_json: bool) -> None:
    """Show a task's state and its result, its error, or its progress.

    With --wait, follow the task until it is final: its PROGRESS meta
    (current/total) drawn as a bar on stderr, redrawn in place on a terminal and
    one line per change otherwise; then the outcome on stdout.

    \b
    Exit status, for scripts:
      0    SUCCESS
      1    FAILURE
      2    usage error
      3    Redis unreachable or refusing the credentials
      4    no such task (never submitted, expired, or forgotten)
      5    REVOKED
      6    not final yet (without --wait), or --timeout passed first
      130  interrupted (Ctrl-C) while waiting
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    app = load(ctx)
    with talking_to_redis(app):
        try:
            record = app.broker.record(task_id)
        except redis.ResponseError as exc:  # a record of the wrong type: nothing to read
            damage.skip(app.keys.task(task_id), "", damage.wrong_type(exc))
            record = {}
        if record and wait and record.get("status") not in states.READY_STATES:
            record = follow(ctx, app, task_id, timeout, show=not as_json)
    if not record:
        if as_json:
            click.echo(json.dumps({"task_id": task_id, "state": states.UNKNOWN}))
        click.echo(f"No task {task_id!r}: never submitted, or its record expired or was "
                   "forgotten.", err=True)
        ctx.exit(EXIT_NO_TASK)
    view = describe(task_id, record, app.keys.task(task_id))
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        click.echo("\n".join(watch.status_lines(view, watch.takes_utf8(sys.stdout))))
    ctx.exit(exit_status(view["state"]))


def follow(ctx: click.Context, app: AsyncQ, task_id: str, timeout: float | None,
           show: bool) -> dict[str, str]:
    """Wait for a task's final state, drawing its progress on stderr when ``show``."""
    display = watch.ProgressDisplay(sys.stderr)
    tick = 0.125 if display.redraw else watch.REREAD  # a spinner turns; a log does not
    on_change: Callable[[Mapping[str, str]], None] = display.show if show else _quiet
    try:
        followed = watch.follow_task(app, task_id, timeout, on_change, tick)
    except KeyboardInterrupt:
        display.close()
        ctx.exit(EXIT_INTERRUPTED)
    display.close()
    if followed.record and not followed.final:
        click.echo(f"Task {task_id} is still {followed.record.get('status')} after "
                   f"{timeout:g}s.", err=True)
    return followed.record


def _quiet(record: Mapping[str, str]) -> None:
    """Shows nothing: status --json keeps stderr for errors."""


_STREAM_ID = re.compile(r"[0-9]{1,19}(-[0-9]{1,19})?")  # as Redis reads them


@main.command("events")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line (with its stream_id), for scripts.")
@click.option("--from-start", is_flag=True,
              help="Begin with the oldest event the stream still holds.")
@click.option("--after", metavar="STREAM_ID", default=None,
              help="Begin after this stream id, to carry on where a reader stopped.")
@click.option("--count", "limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N events.")
@click.option("--no-follow", is_flag=True,
              help="Print the events the stream holds and exit instead of waiting for more.")
@click.pass_context
def events_command(ctx: click.Context, as_json: bool, from_start: bool, after: str | None,
                   limit: int | None, no_follow: bool) -> None:
    """Tail the task event stream: one line per event (time, type, task[id], worker,
    runtime, result or error) as workers send them. Ctrl-C stops it.

    Without --from-start or --after it shows the events from now on; with
    --no-follow alone it shows the whole stream. The stream is capped in length
    (events_max_length); workers write it when worker_send_task_events is on.

    Exit status: 0 (also on Ctrl-C); 2 usage error; 3 Redis unreachable or
    refusing the credentials.
    """
    if after is not None and not _STREAM_ID.fullmatch(after):
        raise click.UsageError(f"--after {after!r} is not a stream id such as "
                               "1700000000000-0")
    app = load(ctx)
    monitor = Monitor(app)

    def emit(event: dict[str, str]) -> None:
        if as_json:  # the stream as it is: every value is text
            click.echo(json.dumps(event))
            return
        try:
            line = watch.event_line(event)
        except ValueError as exc:  # an event no worker wrote: left out, logged once
            damage.skip(app.keys.events(), event["stream_id"], str(exc))
            return
        click.echo(line)

    try:
        with talking_to_redis(app):
            start = after or ("-" if from_start or no_follow else monitor.last_event_id())
            if not no_follow:
                click.echo(f"Following {app.keys.events()} (Ctrl-C to stop)", err=True)
            shown = tail(monitor, start, not no_follow, limit, emit)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # asyncq events | head: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if not shown and no_follow:
        off = "" if app.conf.worker_send_task_events else \
            " (worker_send_task_events is off for this app)"
        click.echo(f"No events in {app.keys.events()}{off}.", err=True)


def tail(monitor: Monitor, after: str, follow: bool, limit: int | None,
         emit: Callable[[dict[str, str]], None]) -> int:
    """Emit the events after ``after``, then (``follow``) new ones as they come; returns
    how many. Reads what the stream holds first, then blocks on XREAD a second at a time."""
    shown = 0
    while limit is None or shown < limit:
        want = 100 if limit is None else min(100, limit - shown)
        batch = monitor.events(after, want)
        if not batch and follow:  # nothing after the cursor, in its entry or later: wait
            entry = "0-0" if after == "-" else after.partition(".")[0]
            batch = monitor.follow(entry, block_ms=1000, count=want)
        elif not batch:
            break
        for event in batch:
            emit(event)
        shown += len(batch)
        after = batch[-1]["stream_id"] if batch else after
    return shown



if __name__ == "__main__":
    main()

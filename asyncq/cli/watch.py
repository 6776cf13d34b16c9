"""What ``asyncq inspect``, ``asyncq status`` and ``asyncq events`` print, and how
``status --wait`` follows one task.

Rendering lives here so that ``cli.py`` stays a list of commands: each command
reads through ``Monitor`` or the broker, hands the data to a function below and
picks its exit status. The text is meant for people; ``--json`` is for scripts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast
from zoneinfo import ZoneInfo

import click

from asyncq import damage, states
from asyncq.broker import SUCCESS_NOTICE
from asyncq.message import Message

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

T = TypeVar("T")

GAP = "  "  # between table columns
# Colours of states on a terminal (click.echo drops them when output is not one).
COLORS = {states.SUCCESS: "green", states.FAILURE: "red", states.REVOKED: "magenta",
          states.RETRY: "yellow"}


def paint(state: str, text: str | None = None) -> str:
    """``text`` (default: the state) in the state's colour; running states are cyan."""
    return click.style(state if text is None else text, fg=COLORS.get(state, "cyan"))


# -- small formatting helpers ---------------------------------------------------
def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell; the last one is not padded,
    so a long value (a result, a queue list) does not push every line out."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(GAP.join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)),
                               line[-1]]).rstrip()
                     for line in lines)


def seconds(value: float | str | None) -> str:
    """A duration the way people read it: 0.21ms, 43ms, 2.3s, 4m05s, 3h02m (ValueError
    for text that is not a number)."""
    if value is None or value == "":
        return "-"
    value = damage.finite(str(value))
    if value < 1:
        return f"{value * 1000:.2f}ms" if value < 0.01 else f"{value * 1000:.0f}ms"
    if value < 10:
        return f"{value:.1f}s"
    if value < 60:
        return f"{value:.0f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def clock(unix: float | str | None, with_date: bool = False) -> str:
    """A Unix time as local wall-clock time, to the millisecond (ValueError for text
    that is not a time)."""
    if unix is None or unix == "":
        return "-"
    try:
        moment = datetime.fromtimestamp(damage.finite(str(unix)))
    except (OverflowError, OSError):
        raise ValueError(f"{damage.shown(str(unix))} is not a time a clock shows") from None
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    return text[:-3]


def shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def takes_utf8(stream: TextIO) -> bool:
    """Whether block characters and a braille spinner can be written to ``stream``."""
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "") == "utf8"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


# -- asyncq inspect -------------------------------------------------------------
def inspect_report(snapshot: Mapping[str, Any]) -> str:
    """The whole ``asyncq inspect`` text: workers, their active tasks, queues, totals."""
    workers = snapshot["workers"]
    sections = [workers_section(workers), active_section(workers), queues_section(snapshot)]
    if snapshot.get("periodic"):
        sections.append("Periodic tasks (times in UTC):\n" +
                        beat_table(snapshot["periodic"], "UTC"))
    sections.append(totals_section(snapshot))
    sections += [f"Warning: {warning}" for warning in snapshot.get("warnings", [])]
    if snapshot.get("skipped"):
        sections.append(skipped_section(snapshot["skipped"]))
    return "\n\n".join(sections)


def workers_section(workers: list[dict[str, Any]]) -> str:
    alive = sum(1 for worker in workers if worker["alive"])
    title = f"Workers: {alive} alive"
    if len(workers) > alive:  # registered but silent: their tasks are recovered soon
        title += f", {len(workers) - alive} lost (heartbeat lapsed, awaiting recovery)"
    if not workers:
        return "Workers: none registered (start one with: asyncq -A MODULE worker)"
    rows = [(worker["id"], "alive" if worker["alive"] else "LOST", worker["hostname"] or "-",
             str(worker["pid"] or "-"), str(worker["concurrency"]),
             ",".join(worker["queues"]) or "-",
             f"{seconds(worker['heartbeat_age'])} ago" if worker["heartbeat_age"] is not None
             else "-", str(worker["done"]), str(len(worker["active"])),
             str(len(worker["reserved"])))
            for worker in workers]
    header = ("WORKER", "STATE", "HOST", "PID", "CONC", "QUEUES", "HEARTBEAT", "DONE",
              "ACTIVE", "RESERVED")
    return f"{title}\n{table(header, rows)}"


def active_section(workers: list[dict[str, Any]]) -> str:
    """Running tasks with how long they have run; prefetched ones are counted after."""
    rows = [(worker["id"], task["id"], task["name"], task["state"], seconds(task.get("runtime")))
            for worker in workers for task in worker["active"]]
    reserved = sum(len(worker["reserved"]) for worker in workers)
    note = f"\n{reserved} more taken by workers, waiting to start (reserved)." if reserved \
        else ""
    if not rows:
        return f"Active tasks: none{note}"
    header = ("WORKER", "TASK ID", "TASK", "STATE", "RUNTIME")
    return f"Active tasks: {len(rows)}\n{table(header, rows)}{note}"


def queues_section(snapshot: Mapping[str, Any]) -> str:
    rows = [(name, str(depth)) for name, depth in snapshot["queues"].items()]
    lines = [f"Queues: {sum(snapshot['queues'].values())} message(s) waiting",
             table(("QUEUE", "WAITING"), rows),
             "",
             f"Scheduled (countdown, ETA, retries, rate limits): {snapshot['scheduled']}",
             f"Dead letters: {snapshot['dead_letters']}"
             + (" (see: asyncq dead list)" if snapshot["dead_letters"] else "")]
    return "\n".join(lines)


def totals_section(snapshot: Mapping[str, Any]) -> str:
    totals = snapshot["tasks_by_state"]
    if not totals:
        return "Tasks by state: none counted yet"
    order = [states.SUCCESS, states.FAILURE, states.RETRY, states.REVOKED]
    names = [name for name in order if name in totals] + sorted(set(totals) - set(order))
    return "Tasks by state: " + ", ".join(f"{name} {totals[name]}" for name in names)


def skipped_section(skipped: list[dict[str, str]]) -> str:
    """What the report left out: entries in Redis that no asyncq wrote."""
    lines = [f"Skipped: {len(skipped)} damaged entr{'y' if len(skipped) == 1 else 'ies'} "
             "in Redis (not written by asyncq; left in place)"]
    lines += [f"  {entry['key']}{' ' + repr(entry['entry']) if entry['entry'] else ''}: "
              f"{entry['reason']}" for entry in skipped]
    return "\n".join(lines)


# -- asyncq events --------------------------------------------------------------
_STATE_OF_EVENT = {"succeeded": states.SUCCESS, "failed": states.FAILURE,
                   "retried": states.RETRY, "revoked": states.REVOKED,
                   "rejected": states.REVOKED}

def event_line(event: Mapping[str, str]) -> str:
    """One readable line: time, type, task name[id], worker, then what the event tells.
    ValueError, naming the field, for an event no worker wrote (a damaged one)."""
    when, runtime, eta = (_event_field(event, name, damage.finite)
                          for name in ("time", "runtime", "eta"))
    retries = _event_field(event, "retries", damage.whole)
    details = []
    if runtime is not None:
        details.append(f"in {seconds(runtime)}")
    if retries:
        details.append(f"try {retries + 1}")
    if event.get("result") is not None:
        details.append(f"-> {event['result']}")
    if event.get("exception"):
        details.append(event["exception"])
    if eta is not None:
        details.append(f"next try in {seconds(max(eta - (when or 0.0), 0.0))}")
    if event.get("reason"):
        details.append(f"({event['reason']})")
    kind = event.get("type", "?")
    return GAP.join([_event_field(event, "time", clock) or "-",
                     paint(_STATE_OF_EVENT.get(kind, ""), kind.ljust(9)),
                     f"{event.get('name', '?')}[{event.get('id', '?')}]",
                     event.get("worker") or "-", *details])


def _event_field(event: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    """``parse`` of the event's field ``name``; None when it has none (or it is empty)."""
    if not event.get(name):
        return None
    try:
        return parse(event[name])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


# -- inspect active | reserved | ... (Celery's output) ----------------------------
def celery_request(task: Mapping[str, Any], worker: Mapping[str, Any],
                   started: bool) -> dict[str, Any]:
    """A held task as Celery's ``inspect active`` shows a request."""
    return {"id": task["id"], "name": task["name"], "type": task["name"],
            "hostname": worker["id"], "time_start": task.get("started_at"),
            "acknowledged": started, "worker_pid": worker.get("pid"),
            "delivery_info": {"routing_key": task.get("queue"), "redelivered": False}}


def scheduled_requests(app: AsyncQ, worker: Mapping[str, Any],
                       limit: int = 100) -> list[dict[str, Any]]:
    """Messages due later in the queues ``worker`` reads, as Celery's ``inspect
    scheduled`` shows them: asyncq keeps them in Redis, not in a worker's memory."""
    entries = []
    for queue in worker.get("queues", []):
        due = app.broker.client.zrange(app.keys.scheduled(queue), 0, limit - 1, withscores=True)
        for raw, eta in cast(list[tuple[bytes, float]], due):
            try:
                message = Message.decode(raw)
            except ValueError:
                continue
            entries.append({"eta": eta, "priority": message.priority, "request": {
                "id": message.id, "name": message.task, "args": message.args,
                "kwargs": message.kwargs, "delivery_info": {"routing_key": queue}}})
    return entries


def beat_table(rows: list[dict[str, Any]], zone: str) -> str:
    """``asyncq beat --list``: each periodic task, its schedule, last and next run."""
    if not rows:
        return "No periodic tasks (beat_schedule is empty)."
    tz = ZoneInfo(zone)

    def when(stamp: float | None) -> str:
        return datetime.fromtimestamp(stamp, tz).strftime("%Y-%m-%d %H:%M:%S %Z") \
            if stamp else "-"

    table = [("NAME", "TASK", "SCHEDULE", "QUEUE", "LAST RUN", "NEXT RUN")]
    table += [(row["name"], row["task"], row["schedule"], row["queue"],
               when(row["last_run"]), when(row["next_run"])) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                       strict=True)).rstrip()
                     for line in table)


def celery_stats(app: AsyncQ, worker: Mapping[str, Any]) -> dict[str, Any]:
    """The part of Celery's ``inspect stats`` that asyncq knows."""
    return {"pid": worker.get("pid"), "hostname": worker.get("hostname"),
            "pool": {"implementation": "asyncq.worker:prefork",
                     "max-concurrency": worker.get("concurrency")},
            "queues": worker.get("queues"), "total": {"done": worker.get("done", 0)},
            "broker": {"transport": "redis"}}


def celery_inspect_text(replies: Mapping[str, Any]) -> str:
    """``->  worker: OK`` then each item of its answer, and the node count."""
    lines = []
    for worker_id, reply in replies.items():
        lines.append(f"->  {worker_id}: OK")
        if isinstance(reply, dict) and reply.get("ok") == "pong":
            lines.append("        pong")
        elif isinstance(reply, dict):
            lines.extend("    " + line for line in json.dumps(reply, indent=2).splitlines())
        elif not reply:
            lines.append("    - empty -")
        else:
            lines.extend(f"    * {item if isinstance(item, str) else repr(item)}"
                         for item in reply)
    count = len(replies)
    lines += ["", f"{count} node{'s' if count != 1 else ''} online."]
    return "\n".join(lines)


# -- asyncq status --------------------------------------------------------------
def progress_of(meta: Any) -> tuple[float, float] | None:
    """(current, total) when a custom state's meta reports progress, as PROGRESS does."""
    if not isinstance(meta, dict):
        return None
    current, total = _finite(meta.get("current")), _finite(meta.get("total"))
    if current is None or total is None or total <= 0:
        return None
    return current, total


def _finite(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def progress_bar(current: float, total: float, width: int = 30, fancy: bool = True) -> str:
    """``[#######.....]  7/12  58%``; block characters when the terminal takes UTF-8."""
    share = min(max(current / total, 0.0), 1.0)
    full = round(share * width)
    filled, empty = ("█", "░") if fancy else ("#", "-")
    return (f"[{filled * full}{empty * (width - full)}]  "
            f"{_number(current)}/{_number(total)}  {share:4.0%}")


def _meta(record: Mapping[str, str]) -> Any:
    try:
        return json.loads(record["meta"]) if "meta" in record else None
    except ValueError:
        return record["meta"]


def state_line(record: Mapping[str, str], fancy: bool = True, color: bool = False) -> str:
    """What a running task is doing, in one line, for the progress display."""
    status = record.get("status", states.UNKNOWN)
    if status == states.PENDING:
        what = f"waiting in queue {record.get('queue', '?')}"
    elif status == states.STARTED:
        what = f"running on {record.get('worker', '?')}"
    elif status == states.RETRY:
        error = record.get("exc_type", "").rpartition(".")[2]
        try:
            when = (f"try {damage.whole(record.get('retries', '0')) + 1} due at "
                    f"{clock(record.get('eta'))}")
        except ValueError:  # a record no asyncq wrote
            when = "retrying"
        what = f"{when} ({error}: {record.get('exc_message', '')})"
    else:
        meta = _meta(record)
        done = progress_of(meta)
        what = progress_bar(*done, fancy=fancy) if done else \
            shorten(json.dumps(meta, ensure_ascii=False))
    label = f"{status:<9}"
    return f"{paint(status, label) if color else label} {what}"


def _since(record: Mapping[str, str]) -> float | None:
    began = record.get("started_at") or record.get("submitted_at")
    try:
        return time.time() - damage.finite(began) if began else None
    except ValueError:  # a record no asyncq wrote
        return None


class ProgressDisplay:
    """Shows a running task's state: redrawn in place on a terminal, with a spinner and the
    time it has run; elsewhere (a pipe, a CI log) one line per change, not per redraw."""

    def __init__(self, stream: TextIO, redraw: bool | None = None):
        self.stream = stream
        self.redraw = stream.isatty() if redraw is None else redraw
        self.fancy = takes_utf8(stream)
        self.spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" if self.fancy else "|/-\\"
        self.frame = 0
        self.last = ""
        self.drawn = False

    def show(self, record: Mapping[str, str]) -> None:
        line = state_line(record, self.fancy, color=self.redraw)
        if self.redraw:
            self.frame += 1
            spin = self.spinner[self.frame % len(self.spinner)]
            since = _since(record)
            elapsed = f"  {seconds(since)}" if since is not None else ""
            self.stream.write(f"\r\x1b[K{spin} {line}{elapsed}")
            self.drawn = True
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def close(self) -> None:
        """End the redrawn line, so what follows starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


@dataclass
class Followed:
    """Where following a task ended: its last record ({} once gone) and whether it is final."""

    record: dict[str, str]
    final: bool


REREAD = 1.0  # seconds: the record is read again at least this often, notice or not


def follow_task(app: AsyncQ, task_id: str, timeout: float | None,
                show: Callable[[dict[str, str]], None], tick: float = REREAD) -> Followed:
    """Read a task's record until it is final or ``timeout`` passes, calling ``show`` with
    the latest record about every ``tick`` seconds.

    The record is read again when the task's channel says it changed (update_state
    and the final store both publish there), and at least every second anyway,
    because pub/sub keeps nothing for a connection that dropped for a moment. A
    success notice carries the result, which is all there is when the task keeps
    no record (ignore_result).
    """
    broker = app.broker
    channel = broker.waiter()  # the same kept pub/sub connection AsyncResult.get uses
    name = app.keys.done_channel(task_id)
    channel.subscribe(name)  # before the first read, so that no change is missed
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        read_at, changed, noticed = 0.0, True, None
        record: dict[str, str] = {}
        while True:
            if changed or time.monotonic() - read_at >= REREAD:
                record, read_at = broker.record(task_id), time.monotonic()
                if not record:
                    return Followed({"status": states.SUCCESS, "result": noticed}
                                    if noticed is not None else {}, noticed is not None)
                if record.get("status") in states.READY_STATES:
                    return Followed(record, True)
            show(record)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return Followed(record, False)
            notice = channel.get_message(timeout=tick if left is None else min(tick, left))
            changed = notice is not None
            if notice and notice["data"].startswith(SUCCESS_NOTICE):
                noticed = notice["data"][len(SUCCESS_NOTICE):].decode()
    finally:
        channel.unsubscribe(name)


def status_lines(view: Mapping[str, Any], fancy: bool = True) -> list[str]:
    """``asyncq status`` for people: the task, its state and, by state, its outcome
    (with colours, which ``click.echo`` keeps for a terminal only)."""
    call = view.get("task") or "?"
    if "args" in view or "kwargs" in view:
        parts = [json.dumps(arg, ensure_ascii=False) for arg in view.get("args", [])]
        parts += [f"{key}={json.dumps(value, ensure_ascii=False)}"
                  for key, value in view.get("kwargs", {}).items()]
        call += f"({', '.join(parts)})"
    rows = [("task", view["task_id"]), ("call", shorten(call, 200)),
            ("state", paint(view["state"]))]
    if view["state"] == states.SUCCESS:
        rows.append(("result", json.dumps(view.get("result"), ensure_ascii=False)))
    if "error" in view:
        error = f"{view['error']['type']}: {view['error']['message']}"
        rows.append(("error", paint(view["state"], error)))
    if "meta" in view and view["state"] not in states.READY_STATES:
        done = progress_of(view["meta"])
        rows.append(("progress", progress_bar(*done, fancy=fancy)) if done
                    else ("meta", json.dumps(view["meta"], ensure_ascii=False)))
    rows += _timing_rows(view)
    return [f"{label:<10} {value}" for label, value in rows]


def _timing_rows(view: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if view.get("queue"):
        rows.append(("queue", view["queue"]))
    if view.get("worker"):
        rows.append(("worker", view["worker"]))
    if view.get("retries"):
        rows.append(("retries", str(view["retries"])))
    if view.get("submitted_at"):
        rows.append(("submitted", clock(view["submitted_at"], with_date=True)))
    runtime = view.get("runtime")
    if runtime is None and view.get("started_at") and view.get("finished_at"):
        runtime = float(view["finished_at"]) - float(view["started_at"])
    if runtime is not None:
        rows.append(("runtime", seconds(runtime)))
    elif view.get("started_at") and view["state"] not in states.READY_STATES:
        rows.append(("running", f"for {seconds(time.time() - float(view['started_at']))}"))
    return rows

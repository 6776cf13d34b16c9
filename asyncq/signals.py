"""Signals with Celery's names, senders and keyword arguments.

A receiver is connected with ``@task_prerun.connect`` (or ``.connect(sender=...)``
to hear one sender only) and called as ``receiver(signal=..., sender=...,
**kwargs)``. A receiver that raises is logged and skipped: it never breaks the
worker or the call that sent the signal, as in Celery. Receivers are kept by
strong reference (Celery keeps weak ones by default): a receiver defined inside a
function stays connected until ``disconnect``.

Where each one is sent, and with which arguments, is listed in
``docs/from-celery.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named hook: receivers connect to it, and a sender calls them all with ``send``."""

    def __init__(self, name: str, providing_args: Any = None):
        self.name = name
        self._receivers: list[tuple[object, Receiver, object]] = []  # (key, receiver, sender)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, receiver: Receiver | None = None, *, sender: object = None,
                weak: bool = True, dispatch_uid: object = None,
                **options: Any) -> Any:
        """Connect ``receiver``; used bare (``@sig.connect``) or with options
        (``@sig.connect(sender=add)``), it returns the receiver unchanged."""
        def register(function: Receiver) -> Receiver:
            key = dispatch_uid if dispatch_uid is not None else function
            with self._lock:
                if not any(k == key and s == sender for k, _, s in self._receivers):
                    self._receivers.append((key, function, sender))
            return function

        return register(receiver) if receiver is not None else register

    def disconnect(self, receiver: Receiver | None = None, sender: object = None,
                   dispatch_uid: object = None) -> bool:
        """Remove a receiver; True when one was connected."""
        key = dispatch_uid if dispatch_uid is not None else receiver
        with self._lock:
            before = len(self._receivers)
            self._receivers = [entry for entry in self._receivers
                               if not (entry[0] == key and entry[2] == sender)]
            return len(self._receivers) < before

    @property
    def receivers(self) -> list[Receiver]:
        return [receiver for _, receiver, _ in self._receivers]

    def send(self, sender: object = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver listening to ``sender`` (or to any sender); returns
        ``[(receiver, its answer or the exception it raised), ...]``."""
        answers: list[tuple[Receiver, Any]] = []
        for _, receiver, wanted in list(self._receivers):
            if wanted is not None and wanted is not sender and wanted != sender:
                continue
            try:
                answers.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                log.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                answers.append((receiver, exc))
        return answers

    send_robust = send  # Celery's older name: every send is robust here


# Publishing (in the process that calls delay/apply_async).
# sender: task name; body, routing_key, headers, ...
before_task_publish = Signal("before_task_publish")
# sender: task name; body, routing_key, headers, ...
after_task_publish = Signal("after_task_publish")

# A task's life in a worker child.
task_received = Signal("task_received")  # sender: the consumer; request
task_prerun = Signal("task_prerun")  # sender: the task; task_id, task, args, kwargs
# sender: the task; task_id, task, args, kwargs, retval, state
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")  # sender: the task; result
# sender: the task; task_id, exception, args, kwargs, traceback, einfo
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")  # sender: the task; request, reason, einfo
task_revoked = Signal("task_revoked")  # sender: the task; request, terminated, signum, expired
task_rejected = Signal("task_rejected")  # sender: the consumer; message, exc
task_unknown = Signal("task_unknown")  # sender: the consumer; name, id, message, exc
# sender: the task; task_id, args, kwargs, request, exception, traceback, einfo
task_internal_error = Signal("task_internal_error")

# The worker.
import_modules = Signal("import_modules")  # sender: the app
worker_init = Signal("worker_init")  # sender: the worker (supervisor)
worker_process_init = Signal("worker_process_init")  # sender: None; in each child
worker_process_shutdown = Signal("worker_process_shutdown")  # sender: None; pid, exitcode
worker_ready = Signal("worker_ready")  # sender: the worker
worker_shutting_down = Signal("worker_shutting_down")  # sender: hostname; sig, how, exitcode
worker_shutdown = Signal("worker_shutdown")  # sender: the worker

# Logging set-up.
setup_logging = Signal("setup_logging")  # loglevel, logfile, format, colorize
after_setup_logger = Signal("after_setup_logger")  # logger, loglevel, logfile, format, colorize
after_setup_task_logger = Signal("after_setup_task_logger")  # the same, for the task logger

# Beat.
beat_init = Signal("beat_init")  # sender: the beat service
beat_embedded_init = Signal("beat_embedded_init")  # sender: the beat service in a worker

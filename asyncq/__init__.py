"""asyncq: a small, readable, Celery-compatible task queue on Redis."""

from __future__ import annotations

__version__ = "0.1.0"

from asyncq import states
from asyncq.app import AsyncQ, Celery, shared_task
from asyncq.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from asyncq.current import current_app
from asyncq.result import AsyncResult, GroupResult, ResultSet
from asyncq.task import Task

__all__ = ["AsyncQ", "AsyncResult", "Celery", "GroupResult", "ResultSet", "Signature", "Task",
           "__version__", "chain", "chord", "chunks", "current_app", "group", "maybe_signature",
           "shared_task", "signature", "states", "subtask", "xmap", "xstarmap"]

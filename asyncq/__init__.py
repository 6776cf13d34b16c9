"""asyncq: a small, readable, Celery-compatible task queue on Redis."""

from __future__ import annotations

__version__ = "0.1.0"

from asyncq import states
from asyncq.app import AsyncQ, Celery, shared_task
from asyncq.canvas import Signature, chain, chord, group, signature
from asyncq.current import current_app
from asyncq.result import AsyncResult, GroupResult
from asyncq.task import Task

__all__ = ["AsyncQ", "AsyncResult", "Celery", "GroupResult", "Signature", "Task", "__version__",
           "chain", "chord", "current_app", "group", "shared_task", "signature", "states"]

"""The tasks every app has: ``asyncq.map`` and ``asyncq.starmap`` (Celery's
``celery.map`` and ``celery.starmap``), which ``task.map()``, ``task.starmap()``
and ``task.chunks()`` send."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncq.canvas import signature

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

BUILTIN_PREFIX = "asyncq."


def add_builtin_tasks(app: AsyncQ) -> None:
    @app.task(name="asyncq.map")
    def xmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Call ``task`` on each item in turn, here (not in parallel)."""
        run = signature(task, app=app).type
        return [run(item) for item in it]

    @app.task(name="asyncq.starmap")
    def xstarmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Call ``task`` with each item spread as its arguments, in turn."""
        run = signature(task, app=app).type
        return [run(*item) for item in it]

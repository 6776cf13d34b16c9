"""Apps for tests/test_bad_input.py: queues known in every way an app can know one.

``api`` serves ``app`` (clients may name only its queues); ``open_api`` serves
``open_app``, which sets ``api_allow_any_queue``; ``strict_api`` also turns
``task_create_missing_queues`` off. The broker URL comes from
$ASYNCQ_BROKER_URL, as for the other test apps.
"""

from __future__ import annotations

from asyncq import Celery
from asyncq.api import create_app


class Queue:
    """Stands for kombu's Queue in a Celery config: only its ``name`` counts."""

    def __init__(self, name: str):
        self.name = name


def make_app(main: str, **settings: object) -> Celery:
    app = Celery(main, task_routes={"badinput.routed": "routed-queue",
                                    "badinput.glob.*": {"queue": "glob-queue"}},
                 task_queues=[Queue("declared-queue"), "named-queue"],
                 beat_schedule={"nightly": {"task": "badinput.add", "schedule": 86400.0,
                                            "options": {"queue": "beat-queue"}}},
                 **settings)

    @app.task(name="badinput.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="badinput.routed")
    def routed() -> str:
        return "routed"

    @app.task(name="badinput.own_queue", queue="own-queue")
    def own_queue() -> str:
        return "own"

    @app.task(name="badinput.depth")
    def depth(value: object) -> int:
        """How deep lists nest in ``value`` (a list of one list of one list ...)."""
        levels = 0
        while isinstance(value, list):
            levels += 1
            value = value[0] if value else None
        return levels

    return app


app = make_app("badinput")
api = create_app(app, routes={"tutorial_route": "badinput.add"})
open_app = make_app("badinput_open", api_allow_any_queue=True)
open_api = create_app(open_app)
# Clients may name any queue, but the app's own rule for Python callers still holds.
strict_app = make_app("badinput_strict", api_allow_any_queue=True,
                      task_create_missing_queues=False)
strict_api = create_app(strict_app)

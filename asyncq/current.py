"""Which app is current: the one created last (Celery's ``current_app``).

``AsyncResult(id)`` and signatures made without an app use it. It lives apart
from ``app.py`` so that results and canvases can reach it without importing the
application module that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncq.app import AsyncQ

_apps: list[AsyncQ] = []


def current_app() -> AsyncQ:
    """The app created last, used by ``AsyncResult(id)`` when no app is given."""
    if not _apps:
        raise RuntimeError("no asyncq app has been created yet")
    return _apps[-1]


def set_current_app(app: AsyncQ) -> None:
    """Called by every new app: it becomes the current one."""
    _apps.append(app)


def all_apps() -> list[AsyncQ]:
    """Every app made so far, oldest first (``@shared_task`` registers with each)."""
    return list(_apps)

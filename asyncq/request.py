"""``self.request``: what a running task knows of its own call (Celery's Context)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """What a task sees as ``self.request`` while it runs (Celery's field names)."""

    id: str | None = None
    task: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    called_directly: bool = True
    timelimit: tuple[float | None, float | None] = (None, None)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

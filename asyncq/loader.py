"""Finding an app from the ``-A`` option, as Celery's command line does."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from asyncq.app import AsyncQ


class AppNotFound(LookupError):
    """The module loads, but what ``-A`` names in it is not an asyncq app."""


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
        raise AppNotFound(f"{spec!r} is not an asyncq app (found {type(found).__name__})")
    return found


def _app_in(module: ModuleType, spec: str) -> AsyncQ:
    """Celery's search: an ``app`` or ``celery`` attribute, the module's only app, then
    the same in its ``celery`` submodule (the ``proj/celery.py`` layout)."""
    found = _named_or_only_app(module)
    if found is None and hasattr(module, "__path__"):  # a package: try proj.celery
        submodule = f"{module.__name__}.celery"
        try:
            found = _named_or_only_app(importlib.import_module(submodule))
        except ModuleNotFoundError as exc:
            if exc.name != submodule:
                raise
    if found is None:
        raise AppNotFound(f"no asyncq app found in module {spec!r}; name it as {spec}.app "
                          f"or put it in {spec}/celery.py")
    return found


def _named_or_only_app(module: ModuleType, look_inside: bool = True) -> AsyncQ | None:
    for name in ("app", "celery"):
        found = getattr(module, name, None)
        if isinstance(found, ModuleType):  # proj.celery, once imported
            found = _named_or_only_app(found, look_inside=False) if look_inside else None
        if isinstance(found, AsyncQ):
            return found
    apps = {id(value): value for value in vars(module).values() if isinstance(value, AsyncQ)}
    return next(iter(apps.values())) if len(apps) == 1 else None

"""Loggers as Celery names them: ``get_task_logger(__name__)`` in a task module."""

from __future__ import annotations

import logging

# Task loggers hang under this one, as in Celery, so one handler serves them all.
TASK_LOGGER = "celery.task"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a task module; its records go through the ``celery.task`` logger."""
    if name in (TASK_LOGGER, "celery"):
        raise RuntimeError(f"logger name {name!r} is reserved for the task logger itself")
    logger = logging.getLogger(name)
    logger.parent = logging.getLogger(TASK_LOGGER)
    return logger

"""The ``asyncq`` command and what only it uses: terminal output, the dead-letter
tools, the one-command dev server and a private redis-server for it."""

from __future__ import annotations

from asyncq.cli.main import main

__all__ = ["main"]

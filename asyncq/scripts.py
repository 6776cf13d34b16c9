"""asyncq's Lua scripts, one file each in ``asyncq/lua/``, and the one way to run them.

Each file is named after the step it does and lists its KEYS and ARGV at its
top. A script call is a command like any other (``Script.command``): it goes in
a pipeline beside the other parts of its step, or alone (``execute``).

It is sent as EVAL with the script's text, never as EVALSHA with its hash:
Redis keeps scripts in memory only, and a server that has forgotten one (a
restart, a failover) would fail an EVALSHA alone while the commands beside it
in the pipeline ran, acknowledging a message whose state was never stored.
EVAL always runs. The text costs bytes (comment lines are sent blank), never a
round trip; redis-py's own Script objects would add a SCRIPT EXISTS to every
pipeline, and a cluster pipeline cannot load them at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

# One Redis command, as a tuple of its words: ("LREM", key, 1, message).
Command = tuple[Any, ...]


class CommandTarget(Protocol):
    """A client or a pipeline: whatever takes a command (redis-py leaves it untyped)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


@dataclass(frozen=True)
class Script:
    """One script: its name (its file, ``asyncq/lua/<name>.lua``) and its text."""

    name: str
    text: bytes  # encoded once: redis-py sends bytes as they are

    @classmethod
    def load(cls, name: str) -> Script:
        source = (resources.files("asyncq") / "lua" / f"{name}.lua").read_text("utf-8")
        # Comment lines go blank: fewer bytes per call, the same line numbers in errors.
        lines = ("" if line.lstrip().startswith("--") else line for line in source.split("\n"))
        return cls(name, "\n".join(lines).encode())

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """This script, run on ``keys`` with ``args``, as one command."""
        return ("EVAL", self.text, len(keys), *keys, *args)


def execute(target: CommandTarget, command: Command) -> Any:
    """Send one command (a client runs it now; a pipeline queues it)."""
    return target.execute_command(*command)

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

On a single Redis, several calls of one script in the same stage of a step (a
child's batch: K starts, K stores) go as one call of its ``each`` form
(``MergedCalls``): the script's text wrapped as a function, run once per call on
that call's keys and args, each call's error caught and returned as its own. One
EVAL instead of K: Redis parses and hashes the text once, redis-py packs and
parses one command, and each call still succeeds or fails on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from redis._parsers import BaseParser  # its table of Redis's error prefixes
from redis.exceptions import ResponseError

# One Redis command, as a tuple of its words: ("LREM", key, 1, message).
Command = tuple[Any, ...]


class CommandTarget(Protocol):
    """A client or a pipeline: whatever takes a command (redis-py leaves it untyped)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


# The ``each`` form's loop. ARGV[1] is the number of calls; then, per call, its key
# count, its arg count and its args; its keys are the next ones in KEYS. The script's
# own text is the function ``one``, whose parameters shadow KEYS and ARGV. A call's
# answer is {1, what it returned} or {0, its error}.
_EACH_LOOP = b"""
local answers, k, a = {}, 0, 2
for i = 1, tonumber(ARGV[1]) do
  local nkeys, nargs = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local keys, args = {}, {}
  for j = 1, nkeys do keys[j] = KEYS[k + j] end
  for j = 1, nargs do args[j] = ARGV[a + 1 + j] end
  k, a = k + nkeys, a + 2 + nargs
  local ok, answer = pcall(one, keys, args)
  if ok then
    answers[i] = {1, answer}
  else
    answers[i] = {0, type(answer) == 'table' and answer.err or tostring(answer)}
  end
end
return answers
"""
_EACH_FORMS: dict[bytes, bytes] = {}  # a script's text -> its ``each`` form


@dataclass(frozen=True)
class Script:
    """One script: its name (its file, ``asyncq/lua/<name>.lua``) and its text."""

    name: str
    text: bytes  # encoded once: redis-py sends bytes as they are

    @classmethod
    def load(cls, name: str, uses: Sequence[str] = ()) -> Script:
        """The script in ``asyncq/lua/<name>.lua``; each script it ``uses`` comes first,
        as a local function of that name taking its own KEYS and ARGV."""
        text = b"".join(b"local function " + used.encode() + b"(KEYS, ARGV)\n" +
                        _read(used) + b"\nend\n" for used in uses) + _read(name)
        _EACH_FORMS[text] = b"local function one(KEYS, ARGV)\n" + text + b"\nend\n" + _EACH_LOOP
        return cls(name, text)

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """This script, run on ``keys`` with ``args``, as one command."""
        return ("EVAL", self.text, len(keys), *keys, *args)


def _read(name: str) -> bytes:
    source = (resources.files("asyncq") / "lua" / f"{name}.lua").read_text("utf-8")
    # Comment lines go blank: fewer bytes per call, the same line numbers in errors.
    lines = ("" if line.lstrip().startswith("--") else line for line in source.split("\n"))
    return "\n".join(lines).encode()


def execute(target: CommandTarget, command: Command) -> Any:
    """Send one command (a client runs it now; a pipeline queues it)."""
    return target.execute_command(*command)


class MergedCalls:
    """A stage's commands as sent to a single Redis: the calls of one script merged
    into one call of its ``each`` form (the stage's order is free, so the merged call
    takes the place of the first). ``answers`` gives back one answer per command."""

    def __init__(self, commands: Sequence[Command]):
        self.size = len(commands)
        groups: dict[bytes, list[int]] = {}
        for index, command in enumerate(commands):
            if command[0] == "EVAL" and isinstance(command[1], bytes) \
                    and command[1] in _EACH_FORMS:
                groups.setdefault(command[1], []).append(index)
        merged = {places[0]: places for places in groups.values() if len(places) > 1}
        folded = {index for places in merged.values() for index in places[1:]}
        self.commands: list[Command] = []
        self.places: list[list[int]] = []  # per command sent: the indexes it answers for
        self.merged: list[bool] = []
        for index, command in enumerate(commands):
            if index in folded:
                continue
            places = merged.get(index, [index])
            self.commands.append(_each_call([commands[i] for i in places])
                                 if len(places) > 1 else command)
            self.places.append(places)
            self.merged.append(len(places) > 1)

    def answers(self, sent: Sequence[Any]) -> list[Any]:
        """One answer per command given, in their order; a call's error as an exception."""
        out: list[Any] = [None] * self.size
        for places, merged, answer in zip(self.places, self.merged, sent, strict=True):
            if not merged or isinstance(answer, Exception):
                for index in places:
                    out[index] = answer
                continue
            for index, (ok, *value) in zip(places, answer, strict=True):
                result = value[0] if value else None
                out[index] = result if ok or isinstance(result, Exception) else \
                    _error(result)
        return out


def _each_call(calls: Sequence[Command]) -> Command:
    """One EVAL of a script's ``each`` form, for several calls of the script."""
    keys: list[Any] = []
    args: list[Any] = [len(calls)]
    for call in calls:
        count = int(call[2])
        own_args = call[3 + count:]
        keys += call[3:3 + count]
        args += [count, len(own_args), *own_args]
    return ("EVAL", _EACH_FORMS[call[1]], len(keys), *keys, *args)


def _error(message: Any) -> ResponseError:
    """A call's caught error as redis-py would have raised it for the call alone
    (OutOfMemoryError for OOM, and so on)."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    error = BaseParser.parse_error(text)
    return error if isinstance(error, ResponseError) else ResponseError(text)

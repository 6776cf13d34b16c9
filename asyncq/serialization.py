"""JSON in and out, with errors that name what could not be encoded. Never pickle.

Like Celery's default JSON serializer (kombu's), a few Python types that JSON
lacks travel as tagged objects, ``{"__type__": "datetime", "__value__":
"2026-01-02T03:04:05+00:00"}``, and come back with their type: ``datetime``,
``date``, ``time`` (ISO 8601 text), ``Decimal`` (its exact text) and ``UUID``
(``{"hex": ...}``). The tags are kombu's, so a message or result written by either
side reads the same on the other. Anything else that is not JSON is an EncodeError.

``nests_deeper`` tells how deep a JSON text nests without parsing it: Python's
parser and encoder recurse once per level, so a deep enough text would raise
RecursionError wherever it was read (see ``message.MAX_NESTING``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from asyncq.exceptions import EncodeError

# type -> (tag, to JSON); datetime before date, since a datetime is also a date.
_TO_JSON: list[tuple[type, str, Callable[[Any], Any]]] = [
    (datetime, "datetime", datetime.isoformat),
    (date, "date", date.isoformat),
    (time, "time", time.isoformat),
    (Decimal, "decimal", str),
    (uuid.UUID, "uuid", lambda value: {"hex": value.hex}),
]
# tag -> from JSON
_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda value: uuid.UUID(hex=value["hex"]),
}


def _tagged(value: Any) -> dict[str, Any]:
    """json.dumps' ``default``: a tagged object for the types above, else TypeError."""
    for kind, tag, to_json in _TO_JSON:
        if isinstance(value, kind):
            return {"__type__": tag, "__value__": to_json(value)}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _untagged(obj: dict[str, Any]) -> Any:
    """json.loads' ``object_hook``: a tagged object back as its type; others unchanged."""
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        from_json = _FROM_JSON.get(obj["__type__"])
        if from_json is not None:
            try:
                return from_json(obj["__value__"])
            except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
                raise ValueError(f"bad tagged {obj['__type__']} value: {exc}") from None
    return obj


def dumps(value: Any, what: str) -> str:
    """Encode ``value`` as compact JSON, or raise EncodeError saying which ``what`` failed."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_tagged)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"{what} cannot be encoded as JSON: {exc}") from None
    except RecursionError:  # the encoder recurses once per level of lists and dicts
        raise TooDeep(f"{what} cannot be encoded as JSON: its lists and dicts nest "
                      "too deeply") from None


class TooDeep(EncodeError):
    """``dumps`` ran out of stack: lists and dicts nested some hundreds of levels."""


# A JSON string (escapes included), and every byte that is not a bracket.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_OPENING = frozenset(b"[{")


def nests_deeper(text: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in a JSON text
    (``[[1]]`` nests 2 deep), found without parsing it, so at any depth.

    Strings are skipped, then brackets counted; a text with no more opening brackets
    than ``limit`` is not read further (the usual case: two byte counts). Text that
    is not JSON gets an answer too, which the parser's own error then overrides.
    """
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", text).translate(None, _NOT_BRACKETS):
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def loads(text: str | bytes | None) -> Any:
    """Decode JSON, giving tagged datetimes, dates, times, Decimals and UUIDs back."""
    return None if text is None else json.loads(text, object_hook=_untagged)

"""Redis's answers as Python values, read in one place.

asyncq's clients run with decode_responses off, so every answer is bytes (or
a number, or None); redis-py's hints say ``bytes | str`` and, for its untyped
calls, Any. The readers below take an answer as it arrives and give it one
type, so that the code above them never guesses.
"""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str | None:
    """A bulk string as text (invalid UTF-8 replaced); None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def texts(values: Any) -> list[str | None]:
    """An array of bulk strings (HMGET, a script's table) as text each."""
    return [text(value) for value in values]


def text_map(value: Any) -> dict[str, str]:
    """A hash (HGETALL) as text keys and values."""
    return {str(text(k)): str(text(v)) for k, v in value.items()}


def raw_list(value: Any) -> list[bytes]:
    """An array of bulk strings kept as bytes (messages: sent back exactly as read)."""
    return [bytes(item) for item in value]

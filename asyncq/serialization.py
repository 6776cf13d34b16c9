"""JSON in and out, with errors that name what could not be encoded. Never pickle."""

from __future__ import annotations

import json
from typing import Any

from asyncq.exceptions import EncodeError


def dumps(value: Any, what: str) -> str:
    """Encode ``value`` as compact JSON, or raise EncodeError saying which ``what`` failed."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"{what} cannot be encoded as JSON: {exc}") from None


def loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)

"""Every error the REST API answers is JSON: ``{"error": message, "status": code, ...}``."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status, **extra}), status

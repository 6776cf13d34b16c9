"""The REST API (Flask, served by gunicorn), its OpenAPI description, the dashboard
and the Prometheus metrics: the HTTP side of asyncq, built on the core.

``create_app(celery)`` is the Flask app; gunicorn can also load
``'asyncq.api:from_env()'``, which finds the app named by $ASYNCQ_APP.
"""

from __future__ import annotations

from asyncq.api.routes import create_app, from_env

__all__ = ["create_app", "from_env"]

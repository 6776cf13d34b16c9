"""Task states, named as in Celery (``celery.states``).

A task may also be put in any custom state (for example ``PROGRESS``) by
``update_state``; custom states are never final.
"""

from __future__ import annotations

PENDING = "PENDING"  # queued, not yet taken by a worker
STARTED = "STARTED"  # a worker child is running it
SUCCESS = "SUCCESS"  # finished; the result is stored
FAILURE = "FAILURE"  # raised, or its worker was lost; the error is stored
RETRY = "RETRY"  # waiting to be tried again
REVOKED = "REVOKED"  # cancelled before it could finish
UNKNOWN = "UNKNOWN"  # no record: never submitted, expired, or forgotten

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})

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
REJECTED = "REJECTED"  # the task raised Reject(requeue=False): its message is a dead letter
IGNORED = "IGNORED"  # the task raised Ignore: no state stored for it (eager results only)
RECEIVED = "RECEIVED"  # Celery's state for a message a worker took; asyncq shows PENDING

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, REJECTED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, REJECTED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, REJECTED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED,
                        REJECTED})

"""AsyncResult: waiting for a task, and what its record says once a real worker ran it."""

from __future__ import annotations

import builtins
import time
from pathlib import Path

import pytest

import asyncq.exceptions
from asyncq.exceptions import EncodeError
from tests.conftest import read_record, task_key, wait_for_state
from tests.taskapp import add, fail, progress, report, unserializable


def test_get_returns_the_result(app, client, start_worker):
    # given a worker
    start_worker()

    # when a task is submitted and waited for
    result = add.delay(2, 3)
    value = result.get(timeout=10)

    # then its return value comes back, and the record says SUCCESS
    assert value == 5
    assert result.state == "SUCCESS"
    assert result.ready() and result.successful() and not result.failed()
    assert result.result == 5
    record = read_record(client, result.id)
    assert record["result"] == "5"
    assert float(record["finished_at"]) >= float(record["submitted_at"])
    # and the final result expires after result_expires
    assert 0 < client.ttl(task_key(result.id)) <= app.conf.result_expires


def test_get_raises_the_tasks_exception_or_returns_it_without_propagate(app, start_worker):
    # given a worker
    start_worker()

    # when a task raises ValueError
    result = fail.delay("boom")

    # then get raises it ...
    with pytest.raises(ValueError, match=r"^boom$"):
        result.get(timeout=10)
    # ... or, with propagate=False, returns it
    error = result.get(timeout=10, propagate=False)
    assert type(error) is ValueError
    assert str(error) == "boom"
    assert result.state == "FAILURE"
    assert result.failed() and result.ready() and not result.successful()


def test_a_failure_records_type_message_and_a_traceback_from_the_task_code(
        app, client, start_worker):
    # given a worker
    start_worker()

    # when a task raises ValueError
    result = fail.delay("boom")
    result.get(timeout=10, propagate=False)

    # then the record holds the exception's type and message ...
    record = read_record(client, result.id)
    assert record["status"] == "FAILURE"
    assert record["exc_type"] == "ValueError"
    assert record["exc_message"] == "boom"
    # ... and a traceback that starts in the task's own code, not in asyncq's
    traceback = result.traceback
    assert traceback == record["traceback"]
    lines = traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "taskapp.py" in lines[1] and lines[1].endswith(", in fail"), traceback
    package = str(Path(asyncq.__file__).parent)  # wherever the checkout lies
    assert package not in traceback, traceback
    assert lines[-1] == "ValueError: boom"


def test_a_result_that_is_not_json_ends_failure_with_encode_error(app, client, start_worker):
    # given a worker
    start_worker()

    # when a task returns a set
    result = unserializable.delay()

    # then the task fails with EncodeError naming the task
    with pytest.raises(EncodeError, match=r"tests\.unserializable"):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    record = read_record(client, result.id)
    assert record["exc_type"] == "asyncq.exceptions.EncodeError"
    assert "result" not in record


def test_a_custom_progress_state_and_its_meta_are_visible(app, start_worker, gate):
    # given a worker running a task that reports progress, then waits at a gate
    start_worker()
    meta = {"current": 3, "total": 10}
    result = report.delay(gate.key, meta)

    # when it has reported
    wait_for_state(result, "PROGRESS")

    # then the state and meta are visible, and the task is not ready
    assert result.info == meta
    assert result.result == meta
    assert not result.ready()
    # and the final state replaces it once the task returns
    gate.open()
    assert result.get(timeout=10) == "released"
    assert result.state == "SUCCESS"


def test_a_bound_task_sees_its_request(app, start_worker):
    # given a worker
    start_worker()

    # when a bound task that updates its state runs
    result = progress.delay(3)

    # then it saw its own id and arguments
    assert result.get(timeout=10) == {"done": 3, "id": result.id, "args": [3]}


def test_get_times_out_cleanly_when_no_worker_runs(app):
    # given a task that no worker will take
    result = add.delay(1, 1)

    # when it is waited for with a timeout
    started = time.monotonic()
    with pytest.raises(asyncq.exceptions.TimeoutError) as error:
        result.get(timeout=0.5)
    waited = time.monotonic() - started

    # then the wait ends soon after the timeout, with an error that is also the builtin one
    assert 0.5 <= waited < 2.0
    assert isinstance(error.value, builtins.TimeoutError)
    assert result.state == "PENDING"


def test_forget_makes_the_state_unknown(app, client, start_worker):
    # given a finished task
    start_worker()
    result = add.delay(2, 2)
    assert result.get(timeout=10) == 4

    # when it is forgotten
    result.forget()

    # then its record is gone and its state is UNKNOWN
    assert client.exists(task_key(result.id)) == 0
    assert result.state == "UNKNOWN"

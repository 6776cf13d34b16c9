"""A worker and the REST API on Redis Sentinel: the master dies mid-run, Sentinel
promotes the replica, and both carry on through the same ``redis+sentinel://`` URL.

Redis replicates asynchronously: a write the master acknowledged but had not yet
sent to the replica is lost with the master. The test waits for the replica
(``WAIT``) before the kill so that its outcome is exact; README "Scaling out"
says what can be lost without that wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncq.connection import is_transient
from tests.conftest import Process, asyncq_command, http, wait_for_state, wait_until
from tests.taskapp import add
from tests.taskapp import app as task_app
from tests.taskapp import sleep as sleep_task
from tests.topologies import SentinelSetup


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    with SentinelSetup(tmp_path) as setup:
        task_app.conf.broker_url = setup.url
        task_app.reset_connection()
        try:
            yield setup
        finally:
            task_app.conf.broker_url = ""
            task_app.reset_connection()


def retrying(step: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Run ``step`` until Redis answers again (a failover takes a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s: {exc!r}") from exc
            time.sleep(0.1)


def submit_over_http(base: str, a: int, b: int, timeout: float = 30.0) -> str:
    """POST a task; 503 while Redis is away is expected and retried."""
    answers: list[int] = []

    def accepted() -> str | None:
        status, _, body = http("POST", f"{base}/tasks/tests.add",
                               json.dumps({"args": [a, b]}),
                               {"Content-Type": "application/json"})
        answers.append(status)
        return body["task_id"] if status == 202 else None  # type: ignore[index]

    task_id = wait_until(accepted, f"a 202 for POST /tasks/tests.add (answers: {answers})",
                         timeout)
    assert set(answers) <= {202, 503}, answers
    return task_id


def test_the_flow_carries_on_through_a_sentinel_failover(sentinel, start_gunicorn):
    env = {"ASYNCQ_BROKER_URL": sentinel.url}
    worker = Process(asyncq_command("-A", "tests.taskapp", "worker", "-c", "2",
                                    "-n", "sentinel@test"), env=env)
    try:
        worker.wait_for(r" ready\.", timeout=20)
        api = start_gunicorn("asyncq.api:from_env()", env={**env, "ASYNCQ_APP": "tests.taskapp"})

        # given tasks flowing through the master: from Python and over HTTP
        assert [add.delay(n, n).get(timeout=10) for n in range(5)] == [0, 2, 4, 6, 8]
        first = submit_over_http(api, 20, 1)
        assert task_app.AsyncResult(first).get(timeout=10) == 21
        # and an acks-late task running when the master dies, its state on the replica too
        running = sleep_task.delay(3.0)
        wait_for_state(running, "PROGRESS")
        assert task_app.broker.client.wait(1, 2000) == 1, "the replica did not catch up"

        # when the master is killed and Sentinel promotes the replica
        old_master = sentinel.master_port
        sentinel.kill_master()
        new_master = sentinel.wait_for_failover(timeout=30)
        assert new_master[1] != old_master

        # then the running task's result lands on the new master
        assert retrying(lambda: running.get(timeout=30), "the running task's result") == 3.0
        # and new work flows again, from Python and over HTTP, through the same URLs
        after = retrying(lambda: add.delay(100, 1), "submitting after the failover")
        assert after.get(timeout=20) == 101
        second = submit_over_http(api, 30, 3)
        assert task_app.AsyncResult(second).get(timeout=20) == 33
        # and nothing was lost: every task has its one final state
        for task_id in (first, running.id, after.id, second):
            assert task_app.broker.record(task_id)["status"] == "SUCCESS"
        worker.wait_for(r"Task tests\.add\[" + after.id + r"\] succeeded")
    finally:
        worker.stop()

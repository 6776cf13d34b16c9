"""The contract: the tutorial's own code, with only the import changed, runs on asyncq.

Its ``server.py`` is assembled from the snippets of shared/seed/ (the blocks
headed ``# server.py``), ``from celery import Celery`` becomes
``from asyncq import Celery``, and its worker command runs with ``asyncq`` in
place of ``celery``. The only other change is test plumbing: the Redis URL
points at the suite's private server instead of localhost:6379. The task still
sleeps the tutorial's 30 seconds, so this test takes about half a minute.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, Process, http, wait_until_listening

SEED = ROOT.parent / "shared" / "seed" / "async-rest-api-tutorial.md"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def tutorial_files() -> dict[str, str]:
    """The tutorial's python snippets, joined per file named on their first line.

    The tutorial lies beside the checkout (``../shared/seed/``) in CI, which makes it
    required with ASYNCQ_REQUIRE_TUTORIAL=1; a clone elsewhere skips this one test."""
    if not SEED.exists():
        reason = f"the seed tutorial is not at {SEED} (shared/ beside the checkout)"
        if os.environ.get("ASYNCQ_REQUIRE_TUTORIAL"):
            pytest.fail(reason + ", and ASYNCQ_REQUIRE_TUTORIAL is set")
        pytest.skip(reason)
    files: dict[str, list[str]] = {}
    for block in re.findall(r"```python\n(.*?)```", SEED.read_text(), flags=re.S):
        lines = block.splitlines()
        name = next((line.split()[-1] for line in lines[:3]
                     if re.match(r"#\s*\w+\.py\s*$", line)), None)
        if name:
            files.setdefault(name, []).extend(line for line in lines if line.strip() != "...")
    return {name: "\n".join(lines) + "\n" for name, lines in files.items()}


def redis_state(task_id: str) -> dict[str, object]:
    """Where a task's message and record are, for a failure message."""
    client = redis.Redis.from_url(os.environ["ASYNCQ_BROKER_URL"])
    state = {key.decode(): client.type(key).decode() for key in client.scan_iter("*asyncq*")}
    state["queue"] = client.lrange("{asyncq:celery}:queue", 0, -1)
    state["dead"] = client.lrange("{asyncq}:dead", 0, -1)
    state["record"] = client.hgetall(f"asyncq:task:{{{task_id}}}")
    state["workers"] = client.hgetall("{asyncq}:workers")
    client.close()
    return state


@pytest.fixture
def tutorial_dir(tmp_path: Path, redis_url: str) -> Path:
    files = tutorial_files()
    server = files["server.py"]
    assert server.count("from celery import Celery") == 1
    server = server.replace("from celery import Celery", "from asyncq import Celery")
    server = server.replace("redis://localhost:6379/0", redis_url)  # test plumbing only
    (tmp_path / "server.py").write_text(server)
    (tmp_path / "wsgi.py").write_text(files["wsgi.py"])
    return tmp_path


def test_tutorial_runs_unchanged_on_asyncq(tutorial_dir: Path):
    from asyncq.cli.localredis import free_port

    # The tutorial's worker command, with only the program's name changed
    worker = Process([sys.executable, "-m", "asyncq", "-A", "server.celery", "worker",
                      "--concurrency=1", "--loglevel=info"], cwd=tutorial_dir)
    port = free_port()
    api = Process([sys.executable, "-m", "gunicorn", "--workers", "1", "--bind",
                   f"127.0.0.1:{port}", "wsgi:app"], cwd=tutorial_dir)
    try:
        # The banner names the app, transport, results, concurrency, queue and task
        worker.wait_for(r" ready\.$")
        banner = worker.output
        for expected in (r"app:\s+async_tasks:0x", r"transport:\s+redis://127\.0\.0\.1",
                         r"results:\s+redis://", r"concurrency: 1 \(prefork\)",
                         r"\.> celery", r"\. async_tasks\.long_running_task"):
            assert re.search(expected, banner), f"{expected!r} not in banner:\n{banner}"
        wait_until_listening(port, api)
        base = f"http://127.0.0.1:{port}"

        # curl -X POST localhost:5000/async_long_running_task -> {"task_id": ...}
        status, _, body = http("POST", f"{base}/async_long_running_task")
        assert status == 202 and list(body) == ["task_id"]
        assert re.fullmatch(UUID, body["task_id"])
        task_id = body["task_id"]

        # While it runs: {"task_status":"STARTED"}
        try:
            worker.wait_for(rf"long_running_task\[{task_id}\] received")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nwhere the message is: {redis_state(task_id)}") from None
        assert http("GET", f"{base}/async_long_running_task/{task_id}")[2] == {
            "task_status": "STARTED"}
        assert http("GET", f"{base}/async_long_running_task/{task_id}/result")[2] == {
            "message": "Task not finished yet !"}

        # After the tutorial's 30 seconds: SUCCESS and the result
        worker.wait_for(rf"long_running_task\[{task_id}\] succeeded in 3\d\.", timeout=45)
        status, _, body = http("GET", f"{base}/async_long_running_task/{task_id}")
        assert (status, body) == (200, {"task_status": "SUCCESS"})
        status, _, body = http("GET", f"{base}/async_long_running_task/{task_id}/result")
        assert (status, body) == (200, {"task_result": f"done long-running task {task_id}"})
    finally:
        api.stop()
        worker.stop()
    assert worker.popen.returncode == 0, worker.output

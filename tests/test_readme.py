"""The README's Celery example runs as it is written."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_celery_example_in_the_readme_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(# proj_tasks\.py.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README's proj_tasks.py example is missing"
    (tmp_path / "proj_tasks.py").write_text(blocks[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = runpy.run_path(str(tmp_path / "proj_tasks.py"), run_name="proj_tasks")
    assert ("SUCCESS", "proj.charge") in namespace["finished"]


def test_the_periodic_tasks_example_in_the_readme_loads_and_lists(tmp_path, monkeypatch,
                                                                  redis_url):
    from asyncq.beat import Beat, entries_of

    blocks = re.findall(r"```python\n(# periodic\.py.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README's periodic.py example is missing"
    (tmp_path / "periodic.py").write_text(blocks[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = runpy.run_path(str(tmp_path / "periodic.py"), run_name="periodic")
    app = namespace["app"]
    app.conf.broker_url = redis_url
    app.finalize()  # on_after_configure: the hourly entry is added
    assert {entry.name for entry in entries_of(app)} == {
        "cleanup-every-30-seconds", "report-weekday-mornings", "hourly cleanup"}
    Beat(app).tick()
    assert all(row["next_run"] for row in Beat(app).listing())


def test_the_canvas_example_in_the_readme_runs_on_a_worker(tmp_path, redis_url):
    from tests.conftest import Process, asyncq_command

    blocks = re.findall(r"```python\n(# canvas_demo\.py.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README's canvas_demo.py example is missing"
    (tmp_path / "canvas_demo.py").write_text(blocks[0])
    env = {"ASYNCQ_BROKER_URL": redis_url, "PYTHONPATH": str(tmp_path)}
    worker = Process(asyncq_command("-A", "canvas_demo", "worker", "--concurrency=2"),
                     env=env, cwd=tmp_path)
    try:
        worker.wait_for(r" ready\.$")
        demo = subprocess.run([sys.executable, "canvas_demo.py"], cwd=tmp_path, timeout=60,
                              env={**os.environ, **env}, capture_output=True, text=True)
        assert demo.returncode == 0, demo.stderr
        assert "canvas_demo: all good" in demo.stdout
    finally:
        worker.stop()

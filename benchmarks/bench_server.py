"""The tutorial's POST route as a Flask app, written once for asyncq and Celery.

$BENCH_SYSTEM picks the system and $BENCH_REDIS_URL the Redis, through
benchmarks/bench_tasks.py (the import there is the only difference). Served by
``python -m gunicorn ... benchmarks.bench_server:app`` from benchmarks/http_load.py.
"""

from __future__ import annotations

from flask import Flask, jsonify, make_response

from benchmarks import bench_tasks

app = Flask(__name__)


@app.route("/async_long_running_task", methods=["POST"])
def submit():
    task = bench_tasks.noop.delay()
    return make_response(jsonify({"task_id": task.id}), 202)

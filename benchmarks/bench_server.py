"""The tutorial's POST and GET status routes as a Flask app, written once for asyncq
and Celery, beside a constant route: the floor of what gunicorn and Flask serve.

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


@app.route("/async_long_running_task/<task_id>")
def check_task_status(task_id):
    task = bench_tasks.noop.AsyncResult(task_id)
    return make_response(jsonify({"task_status": task.status}), 200)


@app.route("/constant")
def constant():
    return make_response(jsonify({"task_status": "PENDING"}), 200)

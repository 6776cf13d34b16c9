"""asyncq on a real three-master Redis Cluster (``redis+cluster://``).

Every script and MULTI stays within one hash slot, and queues spread over the
masters: each queue has a hash tag of its own, each task record is tagged by
the task's id. These tests run real workers against the cluster: the
tutorial's flow, canvases whose steps live on different masters, and the two
crashes asyncq must survive (a child killed mid-task, a whole worker lost).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from asyncq import chain, chord, group
from asyncq.connection import redis_from_url
from asyncq.keys import Keys
from tests.conftest import (
    Process,
    asyncq_command,
    kill_worker_host,
    parent_pid,
    wait_for_progress_pid,
    wait_until,
)
from tests.topologies import RedisCluster3

KEYS = Keys()
LAPSE = 3.0  # tests.taskapp's worker_lost_after


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    with RedisCluster3(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def client(cluster: RedisCluster3, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisCluster]:
    """A cluster client on emptied masters; the apps of this process use the cluster too."""
    monkeypatch.setenv("ASYNCQ_BROKER_URL", cluster.url)
    connection = redis_from_url(cluster.url)
    assert isinstance(connection, RedisCluster)
    connection.flushall()
    yield connection
    connection.close()


def disconnect(app: Any) -> None:
    """Close the app's cluster client (a connection per master) and its pub/sub."""
    broker = app._broker
    if broker is not None:
        waiter = getattr(broker._waiters, "channel", None)
        if waiter is not None:
            waiter.close()
        broker.client.close()
    app.reset_connection()


@pytest.fixture
def app(client: RedisCluster):
    from tests import taskapp

    disconnect(taskapp.app)
    yield taskapp.app
    disconnect(taskapp.app)


@pytest.fixture
def fapp(client: RedisCluster):
    from tests import featureapp

    disconnect(featureapp.app)
    yield featureapp.app
    disconnect(featureapp.app)


@pytest.fixture
def start_worker(cluster: RedisCluster3) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*extra: str, app: str = "tests.taskapp", concurrency: int = 1) -> Process:
        worker = Process(asyncq_command("-A", app, "worker", f"--concurrency={concurrency}",
                                        "--loglevel=info", *extra),
                         env={"ASYNCQ_BROKER_URL": cluster.url})
        started.append(worker)
        worker.wait_for(r" ready\.$", timeout=20)
        return worker

    yield start
    for worker in started:
        worker.stop()


def port_of(client: RedisCluster, key: str) -> int:
    return client.get_node_from_key(key).port


def queues_on_each_master(client: RedisCluster) -> list[str]:
    """One queue name per master, each queue's hash tag landing on a different one."""
    found: dict[int, str] = {}
    for name in (f"q{i}" for i in range(200)):
        found.setdefault(port_of(client, KEYS.queue(name)), name)
    assert len(found) == 3, f"queue tags reach only masters {sorted(found)}"
    return [found[port] for port in sorted(found)]


def keys_on(cluster: RedisCluster3, port: int) -> set[str]:
    """The keys one master holds itself."""
    with redis.Redis("127.0.0.1", port, decode_responses=True) as node:
        return set(node.keys("*"))


def test_queues_live_on_different_masters_and_records_beside_their_ids(
        cluster, client, fapp, start_worker):
    from tests.featureapp import add

    # given three queues whose hash tags land on three different masters
    queues = queues_on_each_master(client)
    ports = [port_of(client, KEYS.queue(name)) for name in queues]
    assert len(set(ports)) == 3

    # when a task is queued on each (no worker yet)
    results = [add.apply_async((i, i), queue=name) for i, name in enumerate(queues)]

    # then each message waits on its queue's master, and nowhere else
    for name, port in zip(queues, ports, strict=True):
        for other in {p for _, p in cluster.nodes}:
            holds = KEYS.queue(name) in keys_on(cluster, other)
            assert holds == (other == port), f"queue {name} on {other}"
    # and each record is on the master of its id's slot, with its queue's name
    for result, name in zip(results, queues, strict=True):
        assert KEYS.task(result.id) in keys_on(cluster, port_of(client, KEYS.task(result.id)))
        assert client.hget(KEYS.task(result.id), "queue") == name.encode()

    # when one worker consumes all three queues, each message is taken and run
    start_worker(f"--queues={','.join(queues)}", app="tests.featureapp", concurrency=2)
    assert [result.get(timeout=15) for result in results] == [0, 2, 4]
    # and nothing is left waiting or held on any master
    for name in queues:
        assert client.llen(KEYS.queue(name)) == 0
    # (on a cluster the acknowledgement follows the store: wait for it, not for the result)
    def held() -> dict[str, int]:
        keys = [key for _, port in cluster.nodes for key in keys_on(cluster, port)
                if ":inflight:" in key]
        return {key: client.llen(key) for key in keys if client.llen(key)}

    wait_until(lambda: not held(), "every in-flight list emptied by the acknowledgements")


def test_the_tutorial_flow_over_redis_cluster(app, start_worker):
    from tests.taskapp import add, progress

    # given a worker on the cluster
    start_worker(concurrency=2)

    # when tasks are submitted, the result comes back through get() (pub/sub on a cluster)
    result = add.delay(2, 3)
    assert result.get(timeout=15) == 5
    assert result.state == "SUCCESS"
    assert result.successful()
    # and custom states, and many tasks at once
    assert progress.delay(3).get(timeout=15)["done"] == 3
    many = [add.delay(i, 1) for i in range(30)]
    assert [r.get(timeout=20) for r in many] == [i + 1 for i in range(30)]
    assert app.AsyncResult("no-such-id").state == "UNKNOWN"


def test_a_chain_and_a_chord_across_queues_on_different_masters(client, fapp, start_worker):
    from tests.featureapp import add, mul, total

    # given a worker consuming three queues on three masters
    first, second, third = queues_on_each_master(client)
    start_worker(f"--queues={first},{second},{third}", app="tests.featureapp", concurrency=3)

    # when a chain hops from queue to queue: (1 + 2) * 10 + 5
    result = chain(add.signature((1, 2), queue=first), mul.signature((10,), queue=second),
                   add.signature((5,), queue=third)).apply_async()
    # then each step's result passes on, and each step ran on its own queue
    assert result.get(timeout=15) == 35
    assert result.parent.get(timeout=5) == 30
    assert client.hget(KEYS.task(result.parent.id), "queue") == second.encode()

    # when a chord's members go to two queues and its body to a third
    members = [add.signature((i, i), queue=(first, second)[i % 2]) for i in range(10)]
    summed = chord(group(members), total.signature((), queue=third)).apply_async()
    # then the body gets every member's result, counted beside the body's queue
    assert summed.get(timeout=20) == sum(2 * i for i in range(10))
    # and no record keeps a follow-up plan once applied
    assert client.hget(KEYS.task(result.parent.id), "after") is None


def test_a_nested_workflow_across_masters_completes_and_a_failure_passes_on(
        client, fapp, start_worker):
    from tests.featureapp import add, boom, total

    # given a worker consuming three queues on three masters
    first, second, third = queues_on_each_master(client)
    start_worker(f"--queues={first},{second},{third}", app="tests.featureapp", concurrency=3)

    # when a chain runs a group (so a chord) of a chain and a task on two queues, then
    # a chord whose body is a chain, every piece on a queue of its own master
    def on(queue: str, sig: Any) -> Any:
        return sig.set(queue=queue)

    nested = chain(
        on(first, add.s(1, 1)),                                        # 2
        group(chain(on(second, add.s(10)), on(first, add.s(1))),      # 13
              on(second, add.s(20))),                                  # 22
        on(third, total.s()),                                          # 35
        chord([on(first, add.s(1)), on(second, add.s(2))],             # 36, 37
              chain(on(third, total.s()), on(first, add.s(100)))))     # 173
    result = nested.apply_async()
    # then every piece runs on its own master and the results flow through
    assert result.get(timeout=30) == 173
    assert result.parent.get(timeout=5) == 73

    # when a step in the middle of such a workflow fails
    failing = chain(on(first, add.s(1, 1)), group(on(second, boom.s()), on(first, add.s(1))),
                    on(third, total.s()), on(second, add.s(1))).apply_async()
    # then the rest of the workflow ends FAILURE with its error, on every master
    with pytest.raises(Exception, match="in step"):
        failing.get(timeout=20)
    assert failing.state == "FAILURE"
    assert failing.parent.state == "FAILURE"


def test_an_acks_late_task_whose_child_is_killed_is_redelivered_and_succeeds(
        client, app, start_worker):
    from tests.taskapp import tally

    # given a worker running an acks-late task
    worker = start_worker("--hostname=chaos@cluster")
    gate = "test:gate:{cluster}"
    result = tally.delay(gate, "test:completions")
    pid = wait_for_progress_pid(result, timeout=15)
    assert parent_pid(pid) == worker.pid

    # when its child is SIGKILLed mid-task, and the gate opens for the next try
    os.kill(pid, signal.SIGKILL)
    worker.wait_for(r"died: signal 9")
    client.set(gate, 1)

    # then the task is redelivered, runs to completion once, and the kill is counted
    assert result.get(timeout=20) == result.id
    assert client.hgetall("test:completions") == {result.id.encode(): b"1"}
    assert client.hget(KEYS.task(result.id), "redeliveries") == b"1"
    # and is acknowledged (on a cluster, just after its result is stored)
    wait_until(lambda: client.llen(KEYS.inflight("celery", "chaos@cluster", 0)) == 0,
               "the in-flight list empty")


def test_a_dead_workers_task_is_recovered_by_another_worker(client, app, start_worker):
    from tests.taskapp import tally

    # given a worker running an acks-late task, and an idle second worker
    doomed = start_worker("--hostname=doomed@cluster")
    gate = "test:gate:{cluster}:2"
    result = tally.delay(gate, "test:completions")
    assert parent_pid(wait_for_progress_pid(result, timeout=15)) == doomed.pid
    survivor = start_worker("--hostname=survivor@cluster")

    # when the first worker's host dies
    kill_worker_host(doomed)
    client.set(gate, 1)

    # then once its heartbeat lapses, the other worker recovers the task and runs it
    assert result.get(timeout=LAPSE + 20) == result.id
    assert client.hget(KEYS.task(result.id), "worker") == b"survivor@cluster"
    survivor.wait_for(r"worker doomed@cluster lost its heartbeat: recovered 1 task\(s\)")
    wait_until(lambda: not client.hexists(KEYS.workers(), "doomed@cluster"),
               "the dead worker gone from the registry")


def test_monitor_finds_queues_on_every_master(client, fapp):
    from asyncq.monitor import Monitor
    from tests.featureapp import add

    # given messages waiting, and one scheduled, on queues of three masters
    queues = queues_on_each_master(client)
    for name in queues:
        add.apply_async((1, 1), queue=name)
    add.apply_async((1, 1), queue=queues[0], countdown=60)

    # then the monitor finds every queue (SCAN on every master) and counts them
    snapshot = Monitor(fapp).snapshot()
    assert {name: snapshot["queues"][name] for name in queues} == dict.fromkeys(queues, 1)
    assert snapshot["scheduled"] == 1


def test_retries_countdowns_dead_letters_and_revokes_on_a_queue_of_another_master(
        client, fapp, start_worker):
    from asyncq.cli import deadletters
    from tests.featureapp import add, flaky

    # given a worker on a queue whose master is not the one of the app-wide keys
    name = next(q for q in queues_on_each_master(client)
                if port_of(client, KEYS.queue(q)) != port_of(client, KEYS.dead_letters()))
    worker = start_worker(f"--queues={name}", app="tests.featureapp")

    # when a task retries twice (RETRY stored, the next try scheduled on its queue's slot)
    assert flaky.apply_async(("test:tries", 3), queue=name).get(timeout=15) == 3
    # and a task is due later, and another revoked before it is due
    later = add.apply_async((2, 2), queue=name, countdown=0.5)
    revoked = add.apply_async((3, 3), queue=name, countdown=0.5)
    revoked.revoke()
    assert later.get(timeout=15) == 4
    assert revoked.state == "REVOKED"

    # when a message names a task the worker does not know
    unknown = fapp.send_task("features.nope", queue=name)
    # then it is set aside on the dead-letter list (another slot) and its task fails
    wait_until(lambda: unknown.state == "FAILURE", "the unknown task failed")
    assert client.llen(KEYS.dead_letters()) == 1
    # and, the worker stopped, an app that knows the task can requeue it
    worker.stop()
    fapp.task(name="features.nope")(lambda: "found")
    try:
        report = deadletters.requeue(fapp)
        assert [letter.task_id for letter in report.requeued] == [unknown.id]
        assert client.llen(KEYS.queue(name)) == 1
        assert unknown.state == "PENDING"
    finally:
        del fapp.tasks["features.nope"]

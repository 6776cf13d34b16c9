"""Workers on separate network hosts sharing one Redis.

Each "host" is a Linux network namespace with its own address, joined to this
machine by a veth pair, and its own hostname (a UTS namespace): the worker in
it reaches Redis over a real network hop, the way a worker on another machine
would. This needs root (``ip netns``); without it the test is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import redis

from asyncq.cli.localredis import find_redis_server, free_port
from tests.conftest import Gate, Process, kill_worker_host, wait_for_progress_pid, wait_until
from tests.taskapp import app as task_app
from tests.taskapp import tally

LAPSE = 3.0  # tests.taskapp's worker_lost_after
COMPLETIONS = "test:hosts:completions"
SUBNET = 213  # hosts get 10.213.<n>.2, this machine 10.213.<n>.1

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
    reason="separate network hosts need root and iproute2's 'ip netns' and util-linux's "
           "'unshare'; the same spread and recovery are tested on one host in "
           "test_reliability.py")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


class Host:
    """A network namespace with a veth link to this machine and an address of its own."""

    def __init__(self, number: int):
        tag = f"{os.getpid() % 100000}{number}"
        self.name = f"aq{tag}"
        self.outside, self.inside = f"aq{tag}o", f"aq{tag}i"
        self.gateway = f"10.{SUBNET}.{number}.1"
        self.address = f"10.{SUBNET}.{number}.2"
        self.hostname = f"host-{number}"

    def create(self) -> Host:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        sh("ip", "link", "set", self.inside, "netns", self.name)
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.outside)
        sh("ip", "link", "set", self.outside, "up")
        inside = ("ip", "netns", "exec", self.name)
        sh(*inside, "ip", "addr", "add", f"{self.address}/24", "dev", self.inside)
        sh(*inside, "ip", "link", "set", self.inside, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        with suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", self.outside)  # takes its peer with it
        with suppress(subprocess.CalledProcessError):
            sh("ip", "netns", "del", self.name)

    def worker(self, redis_port: int) -> Process:
        """``asyncq worker`` inside this host, with its own hostname, reaching Redis by network."""
        command = (f"hostname {self.hostname} && exec {sys.executable} -m asyncq "
                   "-A tests.taskapp worker --concurrency=1 --loglevel=INFO")
        return Process(
            ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", command],
            env={"ASYNCQ_BROKER_URL": f"redis://{self.gateway}:{redis_port}/0",
                 "TEST_PREFETCH": "1"})


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[list[Host], int]]:
    """Three hosts and a redis-server listening on this machine's side of each link."""
    made = [Host(n) for n in (1, 2, 3)]
    server = None
    try:
        for host in made:
            host.create()
        port = free_port()
        server = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
             *(host.gateway for host in made), "--save", "", "--appendonly", "no",
             # no password on these private links: Redis 7 would refuse the hosts otherwise
             "--protected-mode", "no",
             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=port)
        wait_until(lambda: _pings(probe), "the hosts' redis-server answering")
        yield made, port
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for host in made:
            host.delete()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_workers_on_three_hosts_share_the_work_and_recover_a_dead_hosts_task(hosts):
    made, port = hosts
    client = redis.Redis(port=port)
    task_app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    task_app.reset_connection()
    workers: list[Process] = []
    try:
        # given a worker on each of three hosts, each reaching Redis from its own address
        workers = [host.worker(port) for host in made]
        for worker in workers:
            worker.wait_for(r" ready\.", timeout=20)
        peers = {entry["addr"].split(":")[0] for entry in client.client_list()
                 if entry["addr"].startswith("10.")}
        assert peers == {host.address for host in made}
        beats = {client.hget(key, "hostname").decode()
                 for key in client.scan_iter(match="{asyncq}:worker:*")}
        assert beats == {host.hostname for host in made}

        # when three acks-late tasks are queued, one per host as each has one child
        gate = Gate(client)
        results = [tally.delay(gate.key, COMPLETIONS) for _ in made]
        for result in results:
            wait_for_progress_pid(result, timeout=20)
        runners = {task_app.broker.record(r.id)["worker"]: r for r in results}
        assert {w.split("@")[1].split(":")[0] for w in runners} == \
            {host.hostname for host in made}, "the work did not spread over the three hosts"

        # and the second host dies (supervisor and child killed at once)
        doomed_id = next(w for w in runners if "@host-2:" in w)
        doomed = runners[doomed_id]
        kill_worker_host(workers[1])
        gate.open()

        # then the other hosts finish their own tasks and, once host-2's heartbeat has
        # lapsed, run its task again: every task completes exactly once
        assert sorted(r.get(timeout=LAPSE + 25) for r in results) == sorted(r.id for r in results)
        record = task_app.broker.record(doomed.id)
        assert record["redeliveries"] == "1"
        assert "@host-2:" not in record["worker"]
        assert {k.decode(): int(v) for k, v in client.hgetall(COMPLETIONS).items()} == \
            {r.id: 1 for r in results}
    finally:
        for worker in workers:
            worker.stop()
        task_app.conf.broker_url = ""
        task_app.reset_connection()

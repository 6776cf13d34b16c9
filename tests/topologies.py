"""Real Redis Cluster and Sentinel deployments on loopback ports, for tests.

Each class starts its redis-server processes in a folder of its own, waits (polling,
with a deadline) until the deployment works as a client will see it, and SIGKILLs
every process on ``kill()`` or when its ``with`` block ends. Nothing needs redis-cli:
the cluster is joined with CLUSTER ADDSLOTS / MEET through redis-py, so any
redis-server that ``asyncq.cli.localredis.find_redis_server`` finds will do (6.2 or later).
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from asyncq.cli.localredis import find_redis_server, free_port

T = TypeVar("T")
D = TypeVar("D", bound="_Deployment")

CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000


class ServerProcess:
    """One redis-server (or Sentinel) child process, its folder and its log."""

    def __init__(self, name: str, workdir: Path, port: int, args: list[str]):
        self.name = name
        self.workdir = workdir
        self.port = port
        self.args = args
        self.log = workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "stdout.log", "wb") as out:  # errors before the log opens
            self.process = subprocess.Popen([find_redis_server(), *self.args], cwd=self.workdir,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.port, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True, **options)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to tell anyone, as when its host dies."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def describe(self, lines: int = 15) -> str:
        """Its state and the end of its logs, for an error message."""
        state = "running" if self.alive else f"exited ({self.process and self.process.poll()})"
        tail = []
        for path in (self.workdir / "stdout.log", self.log):
            if path.exists():
                tail += path.read_text(errors="replace").splitlines()[-lines:]
        body = "\n    ".join(tail) or "(no log)"
        return f"  {self.name} on port {self.port}, {state}; log {self.log}:\n    {body}"


def call(client: redis.Redis, *args: Any) -> Any:
    """One command, with ``None`` for any Redis error: for probes that poll."""
    try:
        return client.execute_command(*args)
    except redis.RedisError:
        return None


def info_fields(text: Any) -> dict[str, Any]:
    """``field:value`` lines (CLUSTER INFO, INFO) as a dict, whatever redis-py parsed.

    redis-py parses INFO itself (``slave0`` becomes a dict); CLUSTER INFO comes as text.
    """
    if isinstance(text, dict):
        return {str(k): v for k, v in text.items()}
    if not isinstance(text, str):
        return {}
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {name.strip(): value.strip() for name, _, value in pairs}


def wait_for(probe: Callable[[], T], what: str, timeout: float,
             servers: list[ServerProcess]) -> T:
    """Poll ``probe`` until truthy; on timeout fail saying what, with the servers' logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        dead = [server for server in servers if not server.alive]
        if dead or time.monotonic() > deadline:
            why = f"{dead[0].name} exited" if dead else f"not within {timeout:.0f}s"
            logs = "\n".join(server.describe() for server in servers)
            raise AssertionError(f"{what}: {why} (last probe: {value!r})\n{logs}")
        time.sleep(0.05)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too, not in ``taken``."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        candidates = (port, port + CLUSTER_BUS_OFFSET)
        if not taken.intersection(candidates) and all(map(port_is_free, candidates)):
            taken.update(candidates)
            return port
    raise RuntimeError("no free port pair (P, P+10000) found on 127.0.0.1")


class _Deployment:
    """Shared lifetime: ``with`` starts (killing whatever started on failure) and kills."""

    servers: list[ServerProcess]

    def start(self, timeout: float = 30.0) -> Any:
        raise NotImplementedError

    def __enter__(self: D) -> D:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL every process (the data is throw-away)."""
        for server in self.servers:
            server.kill()

    def _wait_all_answer(self, servers: list[ServerProcess], timeout: float) -> None:
        for server in servers:
            client = server.client()
            try:
                wait_for(lambda c=client: call(c, "PING"), f"{server.name} answering PING",
                         timeout, servers)
            finally:
                client.close()


class RedisCluster3(_Deployment):
    """Three masters sharing the 16384 slots, no replicas; ``url`` is ``redis+cluster://``.

    ``node_timeout_ms`` is short so that a killed node is declared failed quickly.
    """

    def __init__(self, workdir: Path, size: int = 3, node_timeout_ms: int = 1000):
        self.workdir = Path(workdir)
        taken: set[int] = set()
        self.servers = []
        for i in range(size):
            port = free_cluster_port(taken)
            folder = self.workdir / f"node{i}"
            self.servers.append(ServerProcess(f"cluster node {i}", folder, port, [
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                "--logfile", str(folder / "redis.log"), "--save", "", "--appendonly", "no",
                "--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms)]))

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", server.port) for server in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisCluster3:
        for server in self.servers:
            server.start()
        self._wait_all_answer(self.servers, timeout)
        size = len(self.servers)
        for i, server in enumerate(self.servers):
            first, last = CLUSTER_SLOTS * i // size, CLUSTER_SLOTS * (i + 1) // size
            with server.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last))
                # Distinct epochs up front, as redis-cli --cluster create sets them.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        with self.servers[0].client() as client:
            for server in self.servers[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        self.wait_state("ok", timeout)
        return self

    def cluster_info(self, i: int) -> dict[str, str]:
        """CLUSTER INFO of node ``i`` ({} if it does not answer)."""
        with self.servers[i].client() as client:
            return info_fields(call(client, "CLUSTER", "INFO"))

    def wait_state(self, state: str, timeout: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:<state>`` and knows all nodes."""
        live = [i for i, server in enumerate(self.servers) if server.alive]

        def settled() -> bool:
            infos = [self.cluster_info(i) for i in live]
            return all(info.get("cluster_state") == state
                       and str(info.get("cluster_known_nodes")) == str(len(self.servers))
                       for info in infos)

        wait_for(settled, f"cluster_state:{state} on nodes {live}", timeout,
                 [self.servers[i] for i in live])

    def stop_node(self, i: int) -> None:
        """SIGKILL node ``i``; the others mark it failed after ``node_timeout_ms``."""
        self.servers[i].kill()


class SentinelSetup(_Deployment):
    """A master, a replica and three Sentinels watching them as ``service``.

    Sentinels agree a master is down after ``down_after_ms`` (quorum 2 of 3), then
    elect a leader that promotes the replica. ``url`` is ``redis+sentinel://``.
    """

    service = "mymaster"

    def __init__(self, workdir: Path, sentinels: int = 3, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000):
        self.workdir = Path(workdir)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = self._data_server("master", free_port(), [])
        self.replica = self._data_server("replica", free_port(),
                                         ["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [self._sentinel(i, free_port()) for i in range(sentinels)]
        self.servers = [self.master, self.replica, *self.sentinels]
        if len({server.port for server in self.servers}) != len(self.servers):
            raise RuntimeError("free_port() gave one port twice; try again")
        self.master_port = self.master.port

    def _data_server(self, name: str, port: int, extra: list[str]) -> ServerProcess:
        folder = self.workdir / name
        return ServerProcess(name, folder, port, [
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--logfile", str(folder / "redis.log"), "--save", "", "--appendonly", "no",
            # Redis 7 syncs replicas diskless by default, 5 s after the first one asks.
            "--repl-diskless-sync-delay", "0", *extra])

    def _sentinel(self, i: int, port: int) -> ServerProcess:
        folder = self.workdir / f"sentinel{i}"
        # Sentinel rewrites its config file with what it learns, so each has its own.
        return ServerProcess(f"sentinel {i}", folder, port,
                             [str(folder / "sentinel.conf"), "--sentinel"])

    def _write_sentinel_config(self, sentinel: ServerProcess) -> None:
        sentinel.workdir.mkdir(parents=True, exist_ok=True)
        (sentinel.workdir / "sentinel.conf").write_text("\n".join([
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f'dir "{sentinel.workdir}"',
            f'logfile "{sentinel.log}"',
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
            ""]))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        self._wait_all_answer([self.master, self.replica], timeout)
        self._wait_replica_in_sync(timeout)
        # Sentinels start after the replica is in sync, so their first INFO of the
        # master lists it (they would otherwise learn of it only ten seconds later).
        for sentinel in self.sentinels:
            self._write_sentinel_config(sentinel)
            sentinel.start()
        self._wait_all_answer(self.sentinels, timeout)
        self._wait_sentinels_ready(timeout)
        return self

    def _wait_replica_in_sync(self, timeout: float) -> None:
        with self.master.client() as master, self.replica.client() as replica:
            def in_sync() -> bool:
                mine = info_fields(call(replica, "INFO", "replication"))
                entry = info_fields(call(master, "INFO", "replication")).get("slave0")
                if isinstance(entry, str):  # "ip=...,port=...,state=online,..."
                    entry = dict(part.partition("=")[::2] for part in entry.split(","))
                return (mine.get("master_link_status") == "up"
                        and isinstance(entry, dict) and entry.get("state") == "online")

            wait_for(in_sync, "replica in sync with the master", timeout,
                     [self.master, self.replica])

    def _wait_sentinels_ready(self, timeout: float) -> None:
        """Until each Sentinel sees the master, its replica and the other Sentinels.

        Sentinels find each other through hello messages on the master every 2 s; a
        failover needs a majority of them to know each other.
        """
        others = len(self.sentinels) - 1
        clients = [sentinel.client() for sentinel in self.sentinels]

        def ready() -> bool:
            for client in clients:
                state = self._master_state(client)
                if not (state.get("is_master") and int(state.get("num-slaves", 0)) >= 1
                        and int(state.get("num-other-sentinels", 0)) >= others):
                    return False
            return True

        try:
            wait_for(ready, "Sentinels knowing the master, the replica and each other",
                     timeout, self.servers)
        finally:
            for client in clients:
                client.close()

    def _master_state(self, client: redis.Redis) -> dict[str, Any]:
        try:
            return client.sentinel_master(self.service)
        except redis.RedisError:
            return {}

    def master_address(self) -> set[tuple[str, int]]:
        """The master's address as each answering Sentinel gives it (one when they agree)."""
        found = set()
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                try:
                    host, port = client.sentinel_get_master_addr_by_name(self.service)
                except (redis.RedisError, TypeError, ValueError):
                    continue
                found.add((host, int(port)))
        return found

    def kill_master(self) -> int:
        """SIGKILL the current master's process; returns its port."""
        port = self.master_port
        for server in (self.master, self.replica):
            if server.port == port:
                server.kill()
        return port

    def wait_for_failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """Until all Sentinels name a new master that says it is one; its address."""
        old = self.master_port
        promoted = [server for server in (self.master, self.replica) if server.port != old]

        def new_master() -> tuple[str, int] | None:
            addresses = self.master_address()
            if len(addresses) != 1:
                return None
            host, port = next(iter(addresses))
            if port == old:
                return None
            with promoted[0].client() as client:
                role = info_fields(call(client, "INFO", "replication")).get("role")
            return (host, port) if role == "master" and port == promoted[0].port else None

        live = [server for server in self.servers if server.alive]
        address = wait_for(new_master, f"failover away from port {old}", timeout, live)
        self.master_port = address[1]
        return address

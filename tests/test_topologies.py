"""asyncq.connection: URL parsing, and clients for a real Redis Cluster and Sentinel setup."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ReadOnlyError, RedisClusterException
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from asyncq.connection import (
    TRANSIENT_ERRORS,
    describe_url,
    is_transient,
    parse_topology_url,
    redis_from_url,
)
from tests.topologies import RedisCluster3, SentinelSetup

# -- URLs, no server needed ------------------------------------------------------


def test_plain_urls_are_redis_from_url_with_options_passed_through():
    client = redis_from_url("redis://:pw@127.0.0.1:6390/2?socket_timeout=1.5",
                            health_check_interval=30)
    kwargs = client.connection_pool.connection_kwargs
    assert type(client) is redis.Redis
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert (kwargs["password"], kwargs["socket_timeout"]) == ("pw", 1.5)
    assert kwargs["health_check_interval"] == 30
    client.close()

    tls = redis_from_url("rediss://127.0.0.1:6390/0?ssl_ca_certs=/tmp/ca.pem")
    assert tls.connection_pool.connection_class is redis.SSLConnection
    assert tls.connection_pool.connection_kwargs["ssl_ca_certs"] == "/tmp/ca.pem"
    tls.close()

    unix = redis_from_url("unix:///tmp/redis.sock?db=3")
    assert unix.connection_pool.connection_kwargs["path"] == "/tmp/redis.sock"
    unix.close()


def test_sentinel_url_parts():
    url = "redis+sentinel://:se%2Fcret@127.0.0.1:26380,sentinel-b,[::1]:26382/mymaster/3"
    target = parse_topology_url(url + "?socket_timeout=0.5&sentinel_password=s")
    assert (target.kind, target.tls, target.service_name) == ("sentinel", False, "mymaster")
    assert target.hosts == [("127.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26382)]
    assert target.options == {"password": "se/cret", "db": 3, "socket_timeout": 0.5,
                              "sentinel_password": "s"}
    assert parse_topology_url("rediss+sentinel://h:1/svc?db=2").options == {"db": 2}
    assert parse_topology_url("rediss+sentinel://h:1/svc").tls


def test_sentinel_client_is_lazy_and_asks_the_sentinels_for_the_master():
    url = "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/3?sentinel_password=s"
    client = redis_from_url(url, health_check_interval=30)  # nothing listens: still no error
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kwargs = pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"], kwargs["health_check_interval"]) == ("pw", 3, 30)
    assert kwargs["retry"].get_retries() > 0
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert all(s.connection_pool.connection_kwargs["password"] == "s" for s in sentinels)
    with pytest.raises(MasterNotFoundError) as caught:
        client.ping()
    assert is_transient(caught.value)
    client.close()


def test_cluster_url_parts():
    target = parse_topology_url("rediss+cluster://user:pw@10.0.0.1:7000,10.0.0.2/0?"
                                "socket_timeout=2&ssl_ca_certs=/ca.pem")
    assert (target.kind, target.tls, target.service_name) == ("cluster", True, None)
    assert target.hosts == [("10.0.0.1", 7000), ("10.0.0.2", 6379)]
    assert target.options == {"username": "user", "password": "pw", "socket_timeout": 2.0,
                              "ssl_ca_certs": "/ca.pem"}


@pytest.mark.parametrize(("url", "complaint"), [
    ("redis+sentinel://127.0.0.1:26379", "missing service name"),
    ("redis+sentinel://127.0.0.1:26379/", "missing service name"),
    ("redis+sentinel:///mymaster", "expected host:port"),
    ("redis+sentinel://a:1,,b:2/mymaster", "expected host:port"),
    ("redis+sentinel://a:port/mymaster", "bad port 'port'"),
    ("redis+sentinel://a:0/mymaster", "bad port '0'"),
    ("redis+sentinel://a:65536/mymaster", "bad port '65536'"),
    ("redis+sentinel://:7000/mymaster", "empty host name"),
    ("redis+sentinel://a/mymaster/x", "bad database number 'x'"),
    ("redis+sentinel://a/mymaster/1/extra", "expected /service_name[/db]"),
    ("redis+sentinel://a/mymaster/1?db=2", "given both"),
    ("redis+cluster://", "expected host:port"),
    ("redis+cluster://a:1/5", "only database 0"),
    ("redis+cluster://a:1?db=1", "unknown option 'db'"),
    ("redis+cluster://a:1?socket_timeout=soon", "bad value for option 'socket_timeout'"),
    ("redis+cluster://a:1?ssl_ca_certs=/ca.pem", "need the TLS scheme rediss+cluster"),
    ("sentinel://a:1/mymaster", "unknown scheme 'sentinel'"),
    ("127.0.0.1:6379", "no '://'"),
])
def test_malformed_urls_are_refused_saying_why(url: str, complaint: str):
    with pytest.raises(ValueError, match="invalid Redis URL") as caught:
        redis_from_url(url)
    assert complaint in str(caught.value)


def test_a_refused_url_hides_its_password():
    with pytest.raises(ValueError) as caught:
        redis_from_url("redis+sentinel://:hunter2@a:1")
    assert "hunter2" not in str(caught.value) and ":**@a:1" in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
    ("rediss://alice:hunter2@h:6380/1?ssl_ca_certs=/ca.pem",
     "rediss://alice:**@h:6380/1?ssl_ca_certs=/ca.pem"),
    ("redis://hunter2@h:6379", "redis://**@h:6379"),
    ("unix://:hunter2@/run/redis.sock?db=1", "unix://:**@/run/redis.sock?db=1"),
    ("redis+sentinel://:hunter2@a:1,b:2/mymaster/0?sentinel_password=hunter3",
     "redis+sentinel://:**@a:1,b:2/mymaster/0?sentinel_password=**"),
    ("redis+cluster://u:p@ss@a:1,b:2", "redis+cluster://u:**@a:1,b:2"),
    ("redis://h:1/0?password=hunter2&db=1", "redis://h:1/0?password=**&db=1"),
    ("not a url", "not a url"),
])
def test_describe_url_hides_passwords(url: str, shown: str):
    assert describe_url(url) == shown


def test_which_errors_are_transient():
    assert issubclass(MasterNotFoundError, redis.ConnectionError)
    for error in (redis.ConnectionError("refused"), redis.TimeoutError(), MasterNotFoundError(),
                  ReadOnlyError("READONLY"), ClusterDownError("CLUSTERDOWN"),
                  redis.BusyLoadingError(),
                  RedisClusterException("Redis Cluster cannot be connected. Please ...")):
        assert is_transient(error), error
    for error in (redis.AuthenticationError(), redis.ResponseError("WRONGTYPE"),
                  RedisClusterException("EVAL - all keys must map to the same key slot")):
        assert not is_transient(error), error


# -- Redis Cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    with RedisCluster3(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def cluster_client(cluster: RedisCluster3) -> Iterator[RedisCluster]:
    client = redis_from_url(cluster.url, health_check_interval=30)
    assert isinstance(client, RedisCluster)
    client.flushall()
    yield client
    client.close()


def keys_in_slot(port: int, slot: int) -> int:
    """How many keys the node on ``port`` itself holds in ``slot``."""
    with redis.Redis("127.0.0.1", port) as node:
        return node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)


def test_hash_tags_spread_keys_over_the_masters(cluster: RedisCluster3,
                                                cluster_client: RedisCluster):
    ports = {port for _, port in cluster.nodes}
    by_node: dict[int, str] = {}
    for tag in (f"queue{i}" for i in range(100)):  # a few tags reach every node
        by_node.setdefault(cluster_client.get_node_from_key(f"{{{tag}}}").port, tag)
        if len(by_node) == len(ports):
            break
    assert set(by_node) == ports

    for port, tag in by_node.items():
        key = f"{{{tag}}}:messages"
        cluster_client.rpush(key, "m1")
        slot = cluster_client.keyslot(key)
        assert slot == cluster_client.keyslot(f"{{{tag}}}:inflight")  # the tag decides
        assert {p: keys_in_slot(p, slot) for p in ports} == {
            p: int(p == port) for p in ports}


def test_a_lua_script_over_keys_of_one_slot(cluster_client: RedisCluster):
    move = cluster_client.register_script(
        "local m = redis.call('rpoplpush', KEYS[1], KEYS[2]) "
        "redis.call('hset', KEYS[3], 'state', ARGV[1]) return m")
    cluster_client.rpush("{jobs}:queue", "m1", "m2")
    assert move(keys=["{jobs}:queue", "{jobs}:inflight", "{jobs}:task:1"],
                args=["STARTED"]) == b"m2"
    assert cluster_client.lrange("{jobs}:inflight", 0, -1) == [b"m2"]
    assert cluster_client.hget("{jobs}:task:1", "state") == b"STARTED"

    # In a cluster pipeline redis-py refuses pipe.evalsha(); the raw command goes through.
    pipe = cluster_client.pipeline(transaction=True)
    pipe.execute_command("EVALSHA", move.sha, 3, "{jobs}:queue", "{jobs}:inflight",
                         "{jobs}:task:1", "STARTED")
    pipe.llen("{jobs}:inflight")
    assert pipe.execute() == [b"m1", 2]

    with pytest.raises(RedisClusterException, match="same key slot") as caught:
        move(keys=["{jobs}:queue", "{other}:inflight", "{jobs}:task:1"], args=["STARTED"])
    assert not is_transient(caught.value)  # a key-layout bug: retrying will not help


def retry_until(action: Callable[[], Any], what: str, timeout: float,
                errors: list[BaseException]) -> Any:
    """Call ``action`` until it returns, keeping transient errors in ``errors``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            errors.append(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s") from exc
            time.sleep(0.05)


def test_a_killed_cluster_node_gives_transient_errors(tmp_path_factory: pytest.TempPathFactory):
    with RedisCluster3(tmp_path_factory.mktemp("cluster-kill")) as doomed:
        client = redis_from_url(doomed.url, health_check_interval=30)
        try:
            ports = [port for _, port in doomed.nodes]
            victim = ports.index(client.get_node_from_key("{a}").port)
            survivor_key = next(f"{{{tag}}}" for tag in "bcdefghij"
                                if client.get_node_from_key(f"{{{tag}}}").port != ports[victim])
            client.set("{a}", 1)
            client.set(survivor_key, 1)
            doomed.stop_node(victim)

            # The dead node's slots fail at once, with redis-py's own retries spent.
            with pytest.raises(redis.ConnectionError):
                client.get("{a}")
            # The other nodes serve their slots until they agree the node has failed
            # (cluster-node-timeout); then, with no replica to promote, the whole
            # cluster refuses: CLUSTERDOWN.
            with pytest.raises(ClusterDownError):
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    assert client.get(survivor_key) == b"1"
                    time.sleep(0.05)
            doomed.wait_state("fail")

            # With every node gone, the client cannot even refresh its slot map.
            doomed.kill()
            with pytest.raises(RedisClusterException, match="cannot be connected") as caught:
                client.get(survivor_key)
            assert is_transient(caught.value)
            assert not isinstance(caught.value, TRANSIENT_ERRORS)
        finally:
            client.close()


# -- Redis Sentinel --------------------------------------------------------------


@pytest.fixture
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with SentinelSetup(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


def test_the_master_client_follows_a_failover(sentinel_setup: SentinelSetup):
    client = redis_from_url(sentinel_setup.url, health_check_interval=30)
    try:
        client.set("before", "written before the kill")
        assert client.wait(1, 1000) == 1  # the replica has it
        assert client.connection_pool.master_address == ("127.0.0.1", sentinel_setup.master_port)

        # A demoted master (here: the replica) refuses writes; to a plain client that
        # is ReadOnlyError, which the Sentinel client turns into a ConnectionError.
        with (redis.Redis("127.0.0.1", sentinel_setup.replica.port) as replica,
              pytest.raises(ReadOnlyError) as caught):
            replica.set("nope", 1)
        assert isinstance(caught.value, TRANSIENT_ERRORS)

        sentinel_setup.kill_master()
        killed = time.monotonic()
        errors: list[BaseException] = []
        retry_until(lambda: client.set("after", "written after the failover"),
                    "writing through the master client", 30, errors)
        took = time.monotonic() - killed

        promoted = sentinel_setup.wait_for_failover(timeout=30)
        assert promoted == ("127.0.0.1", sentinel_setup.replica.port)
        assert client.connection_pool.master_address == promoted
        assert client.get("before") == b"written before the kill"
        assert client.get("after") == b"written after the failover"
        # Until the Sentinels agree the master is down, they still name it (refused
        # connections); then none names a master until the replica is promoted.
        assert errors, f"the write waited {took:.1f}s but never failed"
        assert all(isinstance(error, redis.ConnectionError) for error in errors), errors
        assert took < 15, f"failover took {took:.1f}s"
    finally:
        client.close()

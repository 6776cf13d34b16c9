"""One client from one URL, whether Redis is a single server, Sentinel-managed or a Cluster.

asyncq is configured with a single broker URL. Plain ``redis://``, ``rediss://`` and
``unix://`` URLs go to redis-py's own ``Redis.from_url``. Two more schemes name a
set of servers rather than one, in the comma-separated form Celery users know:

* ``redis+sentinel://[[user]:password@]host:port,host:port/service_name[/db]``
  asks the Sentinels where the master of ``service_name`` is, and asks again
  after a failover (``rediss+sentinel://`` for TLS, to the Sentinels and the master).
* ``redis+cluster://[[user]:password@]host:port,host:port[/0]`` bootstraps a Redis
  Cluster client from any of the listed nodes (``rediss+cluster://`` for TLS).

Callers treat :data:`TRANSIENT_ERRORS` as "Redis is down for now, try again later",
whichever of the three topologies the URL names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel

__all__ = ["TRANSIENT_ERRORS", "RedisClient", "TopologyURL", "describe_url", "is_transient",
           "parse_topology_url", "redis_from_url"]

# What redis_from_url returns, and so what asyncq's code takes as "a Redis client".
# It is made with decode_responses off: every answer is bytes, although redis-py's
# hints say bytes | str; readers cast at the call (the one place that knows the shape).
RedisClient: TypeAlias = redis.Redis | RedisCluster

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    # Also covers redis.sentinel.MasterNotFoundError (no Sentinel knows a master: during
    # a failover), BusyLoadingError (a restarted server still loading its data) and
    # MaxConnectionsError, all subclasses of ConnectionError. So are a wrong password
    # (AuthenticationError) and a missing ACL permission (AuthorizationError), which
    # waiting will not fix: is_transient() leaves those two out.
    ConnectionError,
    TimeoutError,
    # A demoted master answers writes with READONLY. The Sentinel client turns that
    # into a ConnectionError itself; a plain redis:// client aimed at a server that
    # has just become a replica sees it as is.
    ReadOnlyError,
    # Cluster: CLUSTERDOWN while a node is failing (MasterDownError is a subclass),
    # TRYAGAIN during a resharding of a multi-key command's slot, and the client's own
    # error for a slot that no live node serves any more.
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)

# redis-py's Cluster client raises its generic RedisClusterException, not a
# ConnectionError, when refreshing the slot map finds no node to ask (every node
# down) or no usable map; the same class also means "keys in different slots", a
# bug that no retry fixes. Only the message tells them apart.
_CLUSTER_UNREACHABLE = ("Redis Cluster cannot be connected",
                        "All slots are not covered",
                        "startup_nodes could not agree on a valid slots cache")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means Redis is unavailable for now and a later retry may work.

    :data:`TRANSIENT_ERRORS`, less bad credentials, plus the Cluster client's
    "no node reachable" errors that no exception class singles out.
    """
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return False
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return type(exc) is RedisClusterException and str(exc).startswith(_CLUSTER_UNREACHABLE)


def refusal(exc: BaseException) -> str | None:
    """What Redis refused for, when it answered but refused: 'full' (maxmemory with
    noeviction), 'read-only' (a replica), 'busy' (running a script); else None. A
    refusal met inside a script comes wrapped in the script's error, so the text is
    read too, not only the class."""
    text = str(exc)
    if isinstance(exc, OutOfMemoryError) or "OOM command not allowed" in text:
        return "full"
    if isinstance(exc, ReadOnlyError) or "READONLY You can't write" in text:
        return "read-only"
    if isinstance(exc, ResponseError) and text.startswith("BUSY "):
        return "busy"
    return None


def is_refusal(exc: BaseException) -> bool:
    """True when Redis answered but refused for now, in a way waiting may end: full
    (``OOM``, maxmemory with noeviction) or busy running a script (``BUSY``)."""
    return refusal(exc) in ("full", "busy")


def eviction_risk(client: RedisClient) -> str | None:
    """What can make Redis evict asyncq's keys (a queue, a record), or None: a
    ``maxmemory`` with any ``maxmemory-policy`` but ``noeviction``. Read from INFO
    (allowed where CONFIG is not), on every master of a cluster."""
    answer = client.info("memory")
    infos = [answer] if "maxmemory_policy" in answer else list(answer.values())
    for info in infos:
        policy = info.get("maxmemory_policy", "noeviction")
        if policy != "noeviction" and int(info.get("maxmemory") or 0) > 0:
            return (f"maxmemory-policy is {policy} (with maxmemory {info['maxmemory']}): "
                    "Redis may evict queued tasks and results when it is full")
    return None


SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


def sentinel_master_retry() -> Retry:
    """The master client's retries on ConnectionError/TimeoutError, each asking anew.

    A failover keeps the master away for seconds (down-after-milliseconds, then the
    election): these retries (0.1 + 0.2 + 0.4 s apart) absorb a reconnect or a
    demoted master's READONLY; callers wait out the rest on TRANSIENT_ERRORS.
    """
    return Retry(ExponentialBackoff(cap=1.0, base=0.1), 3)


def _to_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# Query-string options the multi-host schemes accept, and how to read each one.
_COMMON_OPTIONS: dict[str, Callable[[str], Any]] = {
    "username": str,
    "password": str,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": _to_bool,
    "max_connections": int,
    "client_name": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": _to_bool,
}
_SENTINEL_OPTIONS: dict[str, Callable[[str], Any]] = {
    **_COMMON_OPTIONS,
    "db": int,
    "health_check_interval": int,
    "sentinel_username": str,
    "sentinel_password": str,
}
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname")
# Keyword options that make no sense for a Cluster client (it has no database
# number and checks health its own way); the app passes some to every client.
_NOT_FOR_CLUSTER = ("db", "health_check_interval")


@dataclass(frozen=True)
class TopologyURL:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL."""

    kind: str  # "sentinel" or "cluster"
    tls: bool
    hosts: list[tuple[str, int]]
    service_name: str | None = None  # sentinel only
    options: dict[str, Any] = field(default_factory=dict)


def _split_url(url: str) -> tuple[str, str, str, str, str]:
    """(scheme, userinfo, hostlist, path, query); urllib cannot parse a host list."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL (no '://')")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    return scheme.lower(), userinfo if at else "", hostlist, slash + path, query


def _parse_host(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"bad IPv6 host {item!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"empty host name in {item!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {item!r}")
    return host, int(port_text)


def _parse_hosts(hostlist: str, default_port: int) -> list[tuple[str, int]]:
    items = [item.strip() for item in hostlist.split(",")]
    if not hostlist or not all(items):
        raise ValueError("expected host:port[,host:port...] before the path")
    return [_parse_host(unquote(item), default_port) for item in items]


def _parse_userinfo(userinfo: str) -> dict[str, str]:
    if not userinfo:
        return {}
    username, _, password = userinfo.partition(":")  # "name@host": a name, as redis-py reads it
    found = {"username": unquote(username), "password": unquote(password)}
    return {name: value for name, value in found.items() if value}


def _parse_query(query: str, allowed: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        parser = allowed.get(name)
        if parser is None:
            raise ValueError(f"unknown option {name!r}; known: {', '.join(sorted(allowed))}")
        try:
            options[name] = parser(value)
        except ValueError:
            raise ValueError(f"bad value for option {name!r}: {value!r}") from None
    return options


def _parse_sentinel_path(path: str) -> tuple[str, dict[str, int]]:
    parts = [unquote(part) for part in path.strip("/").split("/")] if path.strip("/") else []
    if not parts or not parts[0]:
        raise ValueError("missing service name: expected .../service_name[/db]")
    if len(parts) > 2:
        raise ValueError(f"expected /service_name[/db], got {path!r}")
    if len(parts) == 1:
        return parts[0], {}
    if not parts[1].isdigit():
        raise ValueError(f"bad database number {parts[1]!r}")
    return parts[0], {"db": int(parts[1])}


def parse_topology_url(url: str) -> TopologyURL:
    """Read a ``redis+sentinel://`` or ``redis+cluster://`` URL; ValueError saying what is wrong.

    Options come from the user:password part, the path and the query string (the
    query string wins over the user:password part).
    """
    try:
        return _parse_topology_url(url)
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {describe_url(url)}: {exc}") from None


def _parse_topology_url(url: str) -> TopologyURL:
    scheme, userinfo, hostlist, path, query = _split_url(url)
    if scheme in SENTINEL_SCHEMES:
        kind, tls, allowed = "sentinel", SENTINEL_SCHEMES[scheme], _SENTINEL_OPTIONS
    elif scheme in CLUSTER_SCHEMES:
        kind, tls, allowed = "cluster", CLUSTER_SCHEMES[scheme], _COMMON_OPTIONS
    else:
        known = (*PLAIN_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(known)}")
    hosts = _parse_hosts(hostlist, DEFAULT_PORTS[kind])
    options: dict[str, Any] = _parse_userinfo(userinfo)
    service_name = None
    if kind == "sentinel":
        service_name, path_options = _parse_sentinel_path(path)
        options.update(path_options)
    elif path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, got path {path!r}")
    query_options = _parse_query(query, allowed)
    if "db" in options and "db" in query_options:
        raise ValueError("database number given both in the path and as ?db=")
    options.update(query_options)
    if not tls and any(name in options for name in _SSL_OPTIONS):
        raise ValueError(f"ssl_* options need the TLS scheme {scheme.replace('redis+', 'rediss+')}")
    return TopologyURL(kind, tls, hosts, service_name, options)


def redis_from_url(url: str, **options: Any) -> RedisClient:
    """A redis-py client for ``url`` (see the module docstring for the schemes).

    ``options`` are client keyword arguments (such as ``health_check_interval``);
    options written in the URL take precedence, as with ``redis.Redis.from_url``.
    The Sentinel and plain clients connect on first use; the Cluster client reads
    the slot map at once, so it raises RedisClusterException when no listed node
    answers.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in PLAIN_SCHEMES:
        return redis.Redis.from_url(url, **options)
    target = parse_topology_url(url)
    merged = {**options, **target.options}
    if target.kind == "sentinel":
        return _sentinel_master(target, merged)
    return _cluster(target, merged)


def _ssl_options(options: dict[str, Any]) -> dict[str, Any]:
    return {name: options[name] for name in _SSL_OPTIONS if name in options}


def _sentinel_master(target: TopologyURL, options: dict[str, Any]) -> redis.Redis:
    """The master's client; its pool asks the Sentinels again after any connection error."""
    sentinel_options: dict[str, Any] = {
        # Sentinels are asked in turn, so one that is down must fail fast and alone:
        # no retries of its own, and a bounded wait.
        "socket_timeout": options.get("socket_timeout", 1.0),
        "socket_connect_timeout": options.get("socket_connect_timeout", 1.0),
        "retry": Retry(NoBackoff(), 0),
        **_ssl_options(options),
    }
    for name in ("username", "password"):
        value = options.pop(f"sentinel_{name}", None)
        if value is not None:
            sentinel_options[name] = value
    if target.tls:
        sentinel_options["ssl"] = options["ssl"] = True
    options.setdefault("retry", sentinel_master_retry())
    sentinel = Sentinel(target.hosts, sentinel_kwargs=sentinel_options)
    master: redis.Redis = sentinel.master_for(target.service_name, **options)
    return master


def _cluster(target: TopologyURL, options: dict[str, Any]) -> RedisCluster:
    for name in _NOT_FOR_CLUSTER:
        options.pop(name, None)
    if target.tls:
        options["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    return RedisCluster(startup_nodes=nodes, **options)


def describe_url(url: str) -> str:
    """``url`` with its password shown as ``**``: safe for banners and logs.

    Never raises, so that it can describe a URL that failed to parse. A lone
    ``secret@`` before the host is hidden too: redis-py reads it as a user name, but
    it is a common mistake for ``:secret@``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if at:
        username, colon, _ = userinfo.partition(":")
        netloc = f"{username}:**@{hostlist}" if colon else f"**@{hostlist}"
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(
            f"{name}{eq}**" if name.endswith("password") and value else f"{name}{eq}{value}"
            for name, eq, value in pairs)
    return f"{scheme}{sep}{netloc}{slash}{path}{qmark}{query}"


def same_server(one: str, other: str) -> bool:
    """Whether two URLs name the same Redis server (or Sentinel set, or Cluster) with
    the same credentials, whatever database number each names: a Celery result backend
    on the broker's server, whose records asyncq keeps beside the queues."""
    def server(url: str) -> tuple[str, str]:
        scheme, _, rest = url.partition("://")
        netloc = rest.split("?", 1)[0].split("/", 1)[0]
        return scheme, netloc

    return server(one) == server(other)

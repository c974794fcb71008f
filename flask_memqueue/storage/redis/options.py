"""The Redis store's URL and options: from the URL's query string or ``MEMQUEUE_STORAGE_OPTIONS``,
checked at ``init_app`` with an error naming the option.

Three kinds of deployment, by the URL's scheme:

- one server: ``redis://[[user]:password@]host:6379/0``, ``rediss://`` (TLS), ``unix:///path.sock``;
- Sentinel: ``redis+sentinel://[[user]:password@]host:26379,host2:26379/<master name>[/<db>]``:
  the sentinels say which server is the master now (the password is the data servers');
- Cluster: ``redis+cluster://[[user]:password@]host:7000,host2:7001/``: any of the nodes;
  the store finds the one that holds its keys (all in one hash slot: the prefix's ``{hash tag}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ...exceptions import ConfigurationError
from ...extras import install_hint
from ..durable import check_options

#: The options every Redis URL takes, and what each means (``check_options`` lists them).
COMMON = {
    "lease": "seconds a dead worker's jobs wait before a live one takes them over (>= 1, default 30)",
    "prefix": "the key prefix of this app's jobs (default 'memqueue:{<app name>}')",
    "prefetch": "jobs a consumer thread may claim in one round trip when jobs are short (>= 1, default 16)",
    "wait_replicas": "replicas that must confirm every write before it is acknowledged (Redis WAIT; default 0)",
    "wait_timeout": "seconds a write waits for those replicas (default 1); fewer by then: RedisUnavailable",
    "socket_timeout": "seconds a command may take (default 5)",
    "socket_connect_timeout": "seconds a connection may take (default 5)",
    "username": "ACL user name (also in the URL)",
    "password": "password (better in the URL, or in MEMQUEUE_STORAGE_OPTIONS from the environment)",
    "client_name": "the name CLIENT LIST shows",
}
_DB = {"db": "the database number (also the URL's path)"}
_TLS = {
    "ssl_cert_reqs": "rediss: 'required' (default), 'optional' or 'none'",
    "ssl_ca_certs": "rediss: a CA bundle file",
    "ssl_certfile": "rediss: a client certificate file",
    "ssl_keyfile": "rediss: the client certificate's key file",
    "ssl_check_hostname": "rediss: check the server's name (default true)",
}
_SENTINEL = {
    "sentinel_username": "the sentinels' ACL user name",
    "sentinel_password": "the sentinels' password (requirepass of the sentinels), if they have one",
    "sentinel_socket_timeout": "seconds a sentinel may take to answer (default: socket_timeout)",
}
#: The options of each kind of URL.
OPTIONS = {**COMMON, **_DB, **_TLS}
SENTINEL_OPTIONS = {**COMMON, **_DB, **_SENTINEL}
CLUSTER_OPTIONS = dict(COMMON)

_SECONDS = ("socket_timeout", "socket_connect_timeout")
_STRINGS = ("username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_KEY = "MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS"

#: The lease when none is given, in seconds.
DEFAULT_LEASE = 30.0
#: Jobs a consumer thread claims at most in one round trip, when none is given.
DEFAULT_PREFETCH = 16
#: Seconds a write waits for ``wait_replicas`` replicas, when none is given.
DEFAULT_WAIT_TIMEOUT = 1.0

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


@dataclass(frozen=True)
class Target:
    """Where the store's server is: ``kind`` "single" (``url``), "sentinel" (``hosts`` and
    ``service``) or "cluster" (``hosts``); the URL's user name and password, and its db."""

    kind: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    username: str | None = None
    password: str | None = None
    db: int = 0
    sentinel: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Everything the store needs from its URL and options."""

    lease: float
    prefix: str
    connect: dict[str, Any]
    target: Target
    prefetch: int = DEFAULT_PREFETCH
    wait_replicas: int = 0
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT


def parse_options(url: str, options: Mapping[str, Any], namespace: str) -> tuple[float, str, dict[str, Any]]:
    """``(lease, prefix, redis-py connection options)`` (what :func:`parse_settings` says, in short)."""
    settings = parse_settings(url, options, namespace)
    return settings.lease, settings.prefix, settings.connect


def parse_settings(url: str, options: Mapping[str, Any], namespace: str) -> Settings:
    """The store's settings from its URL and options.

    :raises ConfigurationError: an unknown or bad option, a bad Sentinel or Cluster URL, a
        Cluster prefix without a hash tag, or redis-py is not installed.
    """
    scheme = url.partition("://")[0].lower()
    known = {SENTINEL_SCHEME: SENTINEL_OPTIONS, CLUSTER_SCHEME: CLUSTER_OPTIONS}.get(scheme, OPTIONS)
    check_options(options, known, url)
    try:
        import redis  # noqa: F401 - only to say how to install it
    except ImportError:
        raise ConfigurationError(
            "MEMQUEUE_STORAGE names a Redis server but redis-py is not installed:"
            f" {install_hint('redis')}"
        ) from None
    lease = _lease(options.get("lease", DEFAULT_LEASE))
    prefix = default_prefix(namespace) if options.get("prefix") is None else _prefix(options["prefix"])
    connect: dict[str, Any] = {}
    for name in _SECONDS:
        if name in options:
            connect[name] = _positive(name, options[name])
    if "db" in options:
        connect["db"] = _int_option("db", options["db"])
    for name in _STRINGS:
        if name in options:
            connect[name] = str(options[name])
    if "ssl_check_hostname" in options:
        connect["ssl_check_hostname"] = _bool_option("ssl_check_hostname", options["ssl_check_hostname"])
    prefetch = _int_option("prefetch", options.get("prefetch", DEFAULT_PREFETCH), least=1)
    wait_replicas = _int_option("wait_replicas", options.get("wait_replicas", 0))
    wait_timeout = _positive("wait_timeout", options.get("wait_timeout", DEFAULT_WAIT_TIMEOUT))
    if scheme == SENTINEL_SCHEME:
        target = _sentinel_target(url, options, connect)
    elif scheme == CLUSTER_SCHEME:
        target = _cluster_target(url, connect)
        _check_hash_tag(prefix, options.get("prefix") is None, url)
    else:
        target = Target("single", url)
    return Settings(lease, prefix, connect, target, prefetch, wait_replicas, wait_timeout)


def default_prefix(namespace: str) -> str:
    """The key prefix of an app that names none: its name in a hash tag (one slot)."""
    return f"memqueue:{{{namespace}}}"


def hash_tag(prefix: str) -> str | None:
    """The hash tag of ``prefix`` as Redis Cluster reads it (the text between the first
    ``{`` and the first ``}`` after it, if not empty), or None: then every key of the
    prefix hashes whole, and the app's keys land in many slots."""
    start = prefix.find("{")
    if start < 0:
        return None
    end = prefix.find("}", start + 1)
    if end <= start + 1:
        return None
    return prefix[start + 1 : end]


def _check_hash_tag(prefix: str, default: bool, url: str) -> None:
    if hash_tag(prefix) is not None:
        return
    from ..base import redact_url

    why = ("the default prefix 'memqueue:{<app name>}' has none with this app's name" if default
           else f"the redis option 'prefix' ({prefix!r}) has none")
    raise ConfigurationError(
        f"{_KEY}: {redact_url(url)} is a Redis Cluster, where every script runs on the node that holds"
        " all of its keys: the key prefix needs a hash tag, a non-empty '{...}', so that the app's keys"
        f" share one slot; {why}. Set the option 'prefix' to one with a tag, like 'memqueue:{{jobs}}'"
    )


def _split_hosts(url: str, default_port: int) -> tuple[tuple[tuple[str, int], ...], str, str | None, str | None]:
    """The hosts of a multi-host URL, its path, user name and password (unquoted)."""
    rest = url.partition("://")[2].partition("?")[0]
    at = rest.rfind("@")
    username = password = None
    if at >= 0:
        user, colon, secret = rest[:at].partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # "redis+sentinel://secret@host": a lone token is a password, as redis-py reads it
            username, password = None, unquote(user) or None
        rest = rest[at + 1 :]
    hostlist, _, path = rest.partition("/")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [::1]:26379
            host, _, port_text = item[1:].partition("]")
            port_text = port_text.lstrip(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            port = -1
        if not host or not 0 < port < 65536:
            raise ConfigurationError(f"MEMQUEUE_STORAGE: {item!r} is not a host[:port] in {_shown(url)!r}")
        hosts.append((host, port))
    if not hosts:
        raise ConfigurationError(f"MEMQUEUE_STORAGE: no host in {_shown(url)!r}")
    return tuple(hosts), path, username, password


def _shown(url: str) -> str:
    from ..base import redact_url

    return redact_url(url)


def _sentinel_target(url: str, options: Mapping[str, Any], connect: dict[str, Any]) -> Target:
    hosts, path, username, password = _split_hosts(url, 26379)
    service, _, db_text = path.strip("/").partition("/")
    if not service:
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE: a Sentinel URL names the master the sentinels watch, like"
            f" 'redis+sentinel://:password@host:26379,host2:26379/mymaster/0', not {_shown(url)!r}"
        )
    db = _int_option("db", db_text) if db_text else 0
    if "db" in connect:
        db = connect.pop("db")
    sentinel: dict[str, Any] = {}
    for name in ("sentinel_username", "sentinel_password"):
        if name in options:
            sentinel[name.removeprefix("sentinel_")] = str(options[name])
    timeout = options.get("sentinel_socket_timeout", connect.get("socket_timeout", 5.0))
    sentinel["socket_timeout"] = _positive("sentinel_socket_timeout", timeout)
    sentinel["socket_connect_timeout"] = connect.get("socket_connect_timeout", sentinel["socket_timeout"])
    return Target("sentinel", url, hosts, service, username, password, db, sentinel)


def _cluster_target(url: str, connect: dict[str, Any]) -> Target:
    hosts, path, username, password = _split_hosts(url, 6379)
    if path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE: a Redis Cluster has database 0 only; write the URL without a path, like"
            f" 'redis+cluster://host:7000,host2:7001/', not {_shown(url)!r}"
        )
    return Target("cluster", url, hosts, "", username, password, 0)


def _lease(value: Any) -> float:
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = float("nan")
    if isinstance(value, bool) or not lease >= 1.0 or lease == float("inf"):
        raise ConfigurationError(
            f"{_KEY}: the redis option 'lease' must be a number of seconds, at least 1 (default 30), not {value!r}"
        )
    return lease


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or any(c.isspace() or ord(c) < 32 for c in value):
        raise ConfigurationError(
            f"{_KEY}: the redis option 'prefix' must be a non-empty string without spaces or control"
            f" characters, at most 200 long, like 'myapp:{{jobs}}', not {value!r}"
        )
    return value


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0 < number < float("inf"):
        raise ConfigurationError(
            f"{_KEY}: the redis option {name!r} must be a positive number of seconds, not {value!r}"
        )
    return number


def _int_option(name: str, value: Any, *, least: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = least - 1
    if isinstance(value, bool) or isinstance(value, float) and value != number or number < least:
        raise ConfigurationError(
            f"{_KEY}: the redis option {name!r} must be a whole number >= {least}, not {value!r}"
        )
    return number


def _bool_option(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_KEY}: the redis option {name!r} must be true or false, not {value!r}")


__all__ = [
    "CLUSTER_OPTIONS", "CLUSTER_SCHEME", "COMMON", "DEFAULT_LEASE", "DEFAULT_PREFETCH", "OPTIONS",
    "SENTINEL_OPTIONS", "SENTINEL_SCHEME", "Settings", "Target", "default_prefix", "hash_tag", "parse_options",
    "parse_settings",
]

"""The Redis store's options: from the URL's query string or ``MEMQUEUE_STORAGE_OPTIONS``,
checked at ``init_app`` with an error naming the option."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...exceptions import ConfigurationError
from ...extras import install_hint
from ..durable import check_options

#: The options this backend takes, and what each means (``check_options`` lists them).
OPTIONS = {
    "lease": "seconds a dead worker's jobs wait before a live one takes them over (>= 1, default 30)",
    "prefix": "the key prefix of this app's jobs (default 'memqueue:{<app name>}')",
    "socket_timeout": "seconds a command may take (default 5)",
    "socket_connect_timeout": "seconds a connection may take (default 5)",
    "db": "the database number (also the URL's path)",
    "username": "ACL user name (also in the URL)",
    "password": "password (better in the URL, or in MEMQUEUE_STORAGE_OPTIONS from the environment)",
    "client_name": "the name CLIENT LIST shows",
    "ssl_cert_reqs": "rediss: 'required' (default), 'optional' or 'none'",
    "ssl_ca_certs": "rediss: a CA bundle file",
    "ssl_certfile": "rediss: a client certificate file",
    "ssl_keyfile": "rediss: the client certificate's key file",
    "ssl_check_hostname": "rediss: check the server's name (default true)",
}
_SECONDS = ("socket_timeout", "socket_connect_timeout")
_STRINGS = ("username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_KEY = "MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS"

#: The lease when none is given, in seconds.
DEFAULT_LEASE = 30.0


def parse_options(url: str, options: Mapping[str, Any], namespace: str) -> tuple[float, str, dict[str, Any]]:
    """``(lease, prefix, redis-py connection options)``.

    :raises ConfigurationError: an unknown or bad option, or redis-py is not installed.
    """
    check_options(options, OPTIONS, url)
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
    return lease, prefix, connect


def default_prefix(namespace: str) -> str:
    """The key prefix of an app that names none: its name in a hash tag (one slot)."""
    return f"memqueue:{{{namespace}}}"


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


def _int_option(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ConfigurationError(f"{_KEY}: the redis option {name!r} must be a whole number >= 0, not {value!r}")
    return number


def _bool_option(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_KEY}: the redis option {name!r} must be true or false, not {value!r}")


__all__ = ["DEFAULT_LEASE", "OPTIONS", "default_prefix", "parse_options"]

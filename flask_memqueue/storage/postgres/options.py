"""The PostgreSQL store's options: from the URL's query string or ``MEMQUEUE_STORAGE_OPTIONS``,
checked at ``init_app`` with an error naming the option. libpq's own connection
parameters (``sslmode``, ``application_name``...) are let through to the driver."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...exceptions import ConfigurationError
from ...extras import install_hint
from ..durable import check_options

#: The options this backend takes (``check_options`` lists them in its error).
OPTIONS = {
    "schema": "the schema holding the memqueue_* tables (default 'public')",
    "pool_size": "connections this process opens at most, besides the listener (default 4)",
    "lease": "seconds a dead worker's jobs wait before a live one takes them over (>= 1, default 30)",
    "notify": "LISTEN/NOTIFY wake-ups (default true); false behind PgBouncer in transaction mode",
    "connect_timeout": "seconds a connection (or a free one from the pool) may take (default 5)",
}
#: libpq's connection parameters a URL may carry too; they go to the driver as they are.
LIBPQ_OPTIONS = frozenset({
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslcompression",
    "application_name", "target_session_attrs", "options", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "passfile", "channel_binding",
    "gssencmode", "krbsrvname", "service", "user", "password", "host", "port", "dbname", "hostaddr",
})
_KEY = "MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS"

DEFAULT_LEASE = 30.0
DEFAULT_POOL_SIZE = 4
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Settings:
    """The options of one store, checked."""

    #: The schema holding the ``memqueue_*`` tables.
    schema: str = "public"
    #: Seconds a worker that stops renewing keeps its running jobs.
    lease: float = DEFAULT_LEASE
    #: Pooled connections this process opens at most (the listeners come on top).
    pool_size: int = DEFAULT_POOL_SIZE
    #: LISTEN/NOTIFY wake-ups; False behind PgBouncer in transaction mode (then idle workers poll).
    notify: bool = True
    #: Seconds a connection (or a free one from the pool) may take.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: libpq's parameters, passed to the driver as they are.
    libpq: Mapping[str, str] = field(default_factory=dict)


def parse_options(url: str, options: Mapping[str, Any], key: str) -> Settings:
    """The store's settings. ``key`` is the config key that named the store (for messages).

    :raises ConfigurationError: an unknown or bad option, or psycopg 3 (or psycopg_pool)
        is not installed.
    """
    ours = {k: v for k, v in options.items() if k not in LIBPQ_OPTIONS}
    check_options(ours, {**OPTIONS, "<libpq parameters>": "sslmode, application_name, ... (passed to libpq)"}, url)
    try:
        import psycopg  # noqa: F401 - only to say how to install it
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"{key} names a PostgreSQL database but psycopg 3 (and psycopg_pool) is not"
            f" installed: {install_hint('postgres')}"
        ) from None
    schema = _schema_option(options.get("schema", "public"))
    lease = _number("lease", options.get("lease", DEFAULT_LEASE), minimum=1.0, default="30")
    timeout = _number("connect_timeout", options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT), minimum=0.1,
                      default="5")
    pool_size = _int_option("pool_size", options.get("pool_size", DEFAULT_POOL_SIZE))
    notify = _bool_option("notify", options.get("notify", True))
    libpq = {k: str(v) for k, v in options.items() if k in LIBPQ_OPTIONS}
    return Settings(schema=schema, lease=lease, pool_size=pool_size, notify=notify, connect_timeout=timeout,
                    libpq=libpq)


def _schema_option(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 40 or not all(
        c.isascii() and (c.isalnum() or c == "_") for c in value
    ) or value[0].isdigit():
        raise ConfigurationError(
            f"{_KEY}: the postgresql option 'schema' must be a schema name of letters, digits and '_'"
            f" (not starting with a digit, at most 40 long), like 'public' or 'jobs', not {value!r}"
        )
    return value


def _number(name: str, value: Any, *, minimum: float, default: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not minimum <= number < float("inf"):
        raise ConfigurationError(
            f"{_KEY}: the postgresql option {name!r} must be a number of seconds, at least {minimum:g}"
            f" (default {default}), not {value!r}"
        )
    return number


def _int_option(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, (bool, float)) or not 1 <= number <= 1000:
        raise ConfigurationError(
            f"{_KEY}: the postgresql option {name!r} must be a whole number from 1 to 1000"
            f" (default {DEFAULT_POOL_SIZE}), not {value!r}"
        )
    return number


def _bool_option(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_KEY}: the postgresql option {name!r} must be true or false, not {value!r}")


__all__ = ["DEFAULT_LEASE", "DEFAULT_POOL_SIZE", "LIBPQ_OPTIONS", "OPTIONS", "Settings", "parse_options"]

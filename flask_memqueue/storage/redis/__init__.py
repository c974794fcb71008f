"""The Redis store: the jobs of every process and host that points at one Redis.

``MEMQUEUE_STORAGE = "redis://:password@host:6379/0"`` (also ``rediss://``
for TLS and ``unix:///path/redis.sock``); the ``redis`` extra brings
redis-py. Options, from the URL's query string or ``MEMQUEUE_STORAGE_OPTIONS``:

- ``lease`` (seconds, at least 1, default 30): how long a worker that stops
  renewing (killed, host lost, link cut) keeps its running jobs before a live
  worker takes them over. A heartbeat renews it every ``lease / 3`` while the
  process lives, however long its jobs run.
- ``prefix`` (default ``memqueue:{<app name>}``): where the app's keys live;
  apps with one prefix share their jobs, two prefixes keep two apps (or a
  staging and a production deploy) apart on one server.
- ``socket_timeout``, ``socket_connect_timeout`` (seconds), ``db``,
  ``username``, ``password``, ``client_name``, and for ``rediss://`` the
  ``ssl_*`` options of redis-py.

This package is Redis commands and Lua scripts only, one module per concern:

- ``options.py``: the options above, checked at ``init_app``;
- ``client.py``: the connection pool, the scripts registered on it, and the
  errors (:class:`RedisUnavailable`, :class:`RedisCredentialsRefused`): every
  command goes through it, and every failure leaves it naming the server with
  its password replaced by ``***``;
- ``scripts.py`` and ``lua/*.lua``: the Lua scripts (package data), read once
  per process; ``lua/prelude.lua`` documents the data layout;
- ``heartbeat.py``: leases and the progress of running jobs;
- ``listener.py``: ``Job.wait()`` in any process, woken by pub/sub;
- ``store.py``: :class:`RedisStorage`, the primitives of
  :class:`~flask_memqueue.storage.durable.DurableStorage` as scripts.

Nothing here imports redis-py until a store is opened: an app that does not
use Redis never loads it, and ``flask_memqueue.RedisUnavailable`` is
importable without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import StoreContext
from .client import RedisCredentialsRefused, RedisUnavailable
from .options import DEFAULT_LEASE, OPTIONS, parse_settings
from .store import RedisRecord, RedisStorage


def open_redis(url: str, options: Mapping[str, Any], context: StoreContext) -> RedisStorage:
    """The ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` and
    ``redis+cluster://`` entry point. Connects to nothing: an app starts while Redis is
    down, and its first command says why it cannot reach it."""
    s = parse_settings(url, options, context.namespace)
    return RedisStorage(url, context, lease=s.lease, prefix=s.prefix, connect=s.connect, target=s.target,
                        prefetch=s.prefetch, wait_replicas=s.wait_replicas, wait_timeout=s.wait_timeout)


__all__ = [
    "DEFAULT_LEASE",
    "OPTIONS",
    "RedisCredentialsRefused",
    "RedisRecord",
    "RedisStorage",
    "RedisUnavailable",
    "open_redis",
]

"""The stores the storage contract (and every test parametrized over stores) runs against.

A new backend adds itself with one entry in :data:`STORAGE_BACKENDS` (and, if
it needs a real server, its name in :data:`SERVER_BACKENDS`, so its cases
carry the ``servers`` marker). :func:`backend_params` turns names into
fixture params with those marks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from support import markers

#: Every storage backend: its name, and the extra app config that selects it
#: (given a fresh temporary directory).
STORAGE_BACKENDS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "memory": lambda tmp_path: {"MEMQUEUE_STORAGE": "memory://"},
    "sqlite": lambda tmp_path: {"MEMQUEUE_STORAGE": f"sqlite:///{tmp_path / 'journal.db'}"},
    "journal-alias": lambda tmp_path: {"MEMQUEUE_JOURNAL": str(tmp_path / "journal.db")},
    "dict": lambda tmp_path: {"MEMQUEUE_STORAGE": _dict_store(tmp_path)},
    "redis": lambda tmp_path: {"MEMQUEUE_STORAGE": _redis_store(tmp_path)},
    "redis-cluster": lambda tmp_path: {"MEMQUEUE_STORAGE": _redis_cluster_store(tmp_path)},
    "postgres": lambda tmp_path: {"MEMQUEUE_STORAGE": _postgres_store(tmp_path)},
}

#: The backends whose jobs live in one process (capabilities.shared is False):
#: the contract's cases about sharing a store between processes skip them.
LOCAL_BACKENDS = {"memory"}

#: The backends that need a real server (their cases are marked ``servers``).
SERVER_BACKENDS = {"redis", "redis-cluster", "postgres"}


def backend_params(names: Iterable[str]) -> list[Any]:
    """Fixture params for these backends, the ones needing a server marked ``servers``."""
    return [pytest.param(name, marks=getattr(pytest.mark, markers.SERVERS)) if name in SERVER_BACKENDS else name
            for name in names]


def _dict_store(tmp_path: Path) -> str:
    """The test-only durable backend (tests/dictstore.py), registered on first use."""
    from dictstore import SCHEME, open_dict

    from flask_memqueue.storage import register_backend

    register_backend(SCHEME, open_dict)
    return f"{SCHEME}:///{tmp_path}"


def _test_key(tmp_path: Path) -> str:
    """What keeps the shared servers' stores of one test apart from every other test's: the
    running test's node id. (It was the folder's parent: a store made on ``tmp_path`` itself
    then shared one PostgreSQL schema, or one redis-server flush, with every other test
    doing so, and saw their jobs.) Outside a test (a benchmark), the folder's parent."""
    return markers.current_test() or str(tmp_path.parent)


_REDIS_TESTS: set[str] = set()


def _redis_store(tmp_path: Path) -> str:
    """The session's redis-server, flushed at a test's first store: stores of one test
    share it, as processes do; no test sees an earlier one's jobs."""
    from support.servers.redis import shared_redis

    server = shared_redis()  # skips (or, under CI, fails) without redis-server
    key = _test_key(tmp_path)
    if key not in _REDIS_TESTS:
        _REDIS_TESTS.add(key)
        server.flush()
    return server.url()


_CLUSTER_TESTS: set[str] = set()


def _redis_cluster_store(tmp_path: Path) -> str:
    """The session's Redis Cluster (three masters), flushed at a test's first store (every
    node): stores of one test share it, as processes do; each app's default prefix
    (``memqueue:{<app name>}``) puts its keys in a slot of their own, on whichever node holds it."""
    from support.servers.redis import shared_redis_cluster

    cluster = shared_redis_cluster()  # skips (or, under CI, fails) without redis-server
    key = _test_key(tmp_path)
    if key not in _CLUSTER_TESTS:
        _CLUSTER_TESTS.add(key)
        cluster.flush()
    return cluster.url()


_POSTGRES_SCHEMAS: dict[str, str] = {}


def _postgres_store(tmp_path: Path) -> str:
    """The session's PostgreSQL server, in a schema of the test's own (created on first use:
    test apps are in testing mode): stores of one test share it, as processes do; no test
    sees an earlier one's jobs."""
    from support.servers.postgres import fresh_schema, shared_postgres

    server = shared_postgres()  # skips (or, under CI, fails) without PostgreSQL
    schema = _POSTGRES_SCHEMAS.setdefault(_test_key(tmp_path), fresh_schema())
    return str(server.url(schema=schema))

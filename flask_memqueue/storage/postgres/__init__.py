"""The PostgreSQL store: jobs in the database the app already runs.

``MEMQUEUE_STORAGE = "postgresql://user:password@host/db"`` (also ``postgres://``
and SQLAlchemy's ``postgresql+psycopg://``); the ``postgres`` extra brings
psycopg 3 and psycopg_pool. Options, from the URL's query string or
``MEMQUEUE_STORAGE_OPTIONS`` (:data:`OPTIONS`): ``schema``, ``pool_size``,
``lease``, ``notify``, ``connect_timeout``, and libpq's own connection
parameters (``sslmode``, ``application_name``...), which go to the driver.

This package is SQL only, on top of
:class:`~flask_memqueue.storage.durable.DurableStorage` (group commit, local
job objects, take-over decided by :meth:`Job.interrupt
<flask_memqueue.job.Job.interrupt>`, waiters), one module per concern:

- ``options.py``: the options above, checked at ``init_app``;
- ``errors.py``: :class:`PostgresUnavailable`, :class:`PostgresCredentialsRefused` and :class:`SchemaError`;
- ``schema.py``: the tables, a versioned schema migrated forward by ``flask
  memqueue db upgrade`` under an advisory lock (``flask memqueue db sql``
  prints it); an app with ``app.debug`` or ``app.testing`` creates it on first
  use. Once it is current a process runs no DDL (DDL would wait behind any open
  transaction that enqueued a job);
- ``statements.py``: every statement, made once per store;
- ``connection.py``: the connection pool, the schema check, and every failure
  turned into this store's error, naming the database with its password
  replaced by ``***``;
- ``inserts.py``: inserts with their ``NOTIFY``, unique keys under a transaction
  advisory lock, periodic ticks, ``MEMQUEUE_MAXSIZE``;
- ``claims.py``: claims by ``FOR UPDATE SKIP LOCKED`` in one statement that
  also records the previous outcome, and late outcomes discarded;
- ``session.py``: the process's lease (renewed every ``lease / 3``), its
  session advisory lock (a killed worker's jobs are taken over within a second
  once the server closed its session, seen in ``pg_locks``), finished jobs
  heard by ``LISTEN``, running jobs' progress;
- ``consumers.py``: idle consumers woken by ``NOTIFY`` within milliseconds of
  an enqueue in any process (with ``notify=false``, behind PgBouncer in
  transaction mode, they poll every :data:`POLL_WITHOUT_NOTIFY` s);
- ``waiting.py``: ``Job.wait()`` and ``join()`` on jobs another process finishes;
- ``transaction.py``: jobs in the caller's transaction
  (:meth:`PostgresStorage.put_in_transaction`), through a SQLAlchemy session;
- ``store.py``: :class:`PostgresStorage`, the primitives.

Jobs are JSON (arguments, results), never pickle. Nothing here imports psycopg
until a store is opened: an app that does not use PostgreSQL never loads it,
and ``flask_memqueue.PostgresUnavailable`` is importable without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import StoreContext
from .errors import PostgresCredentialsRefused, PostgresUnavailable, SchemaError
from .options import DEFAULT_LEASE, DEFAULT_POOL_SIZE, LIBPQ_OPTIONS, OPTIONS, parse_options
from .records import PostgresRecord
from .schema import MIGRATIONS, SCHEMA_VERSION, schema_sql
from .session import PROGRESS_INTERVAL
from .store import POLL_WITHOUT_NOTIFY, PRUNE_BATCH, PRUNE_BATCHES, PostgresStorage


def open_postgres(url: str, options: Mapping[str, Any], context: StoreContext) -> PostgresStorage:
    """The ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` entry point.
    Connects to nothing: an app starts while the database is down, and its first
    statement says why it cannot reach it."""
    s = parse_options(url, options, context.config_key)
    return PostgresStorage(url, context, schema=s.schema, lease=s.lease, pool_size=s.pool_size, notify=s.notify,
                           connect_timeout=s.connect_timeout, libpq=s.libpq)


__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_POOL_SIZE",
    "LIBPQ_OPTIONS",
    "MIGRATIONS",
    "OPTIONS",
    "POLL_WITHOUT_NOTIFY",
    "PROGRESS_INTERVAL",
    "PRUNE_BATCH",
    "PRUNE_BATCHES",
    "SCHEMA_VERSION",
    "PostgresCredentialsRefused",
    "PostgresRecord",
    "PostgresStorage",
    "PostgresUnavailable",
    "SchemaError",
    "open_postgres",
    "schema_sql",
]

"""The PostgreSQL store: jobs in the database the app already runs.

``MEMQUEUE_STORAGE = "postgresql://user:password@host/db"`` (also ``postgres://``
and SQLAlchemy's ``postgresql+psycopg://``); the ``postgres`` extra brings
psycopg 3 and psycopg_pool. Options, from the URL's query string or
``MEMQUEUE_STORAGE_OPTIONS`` (:data:`OPTIONS`): ``schema``, ``pool_size``,
``lease``, ``notify``, ``connect_timeout``, and libpq's own connection
parameters (``sslmode``, ``application_name``...), which go to the driver.

This module is SQL only, on top of
:class:`~flask_memqueue.storage.durable.DurableStorage` (group commit, local
job objects, take-over decided by :meth:`Job.interrupt
<flask_memqueue.job.Job.interrupt>`, waiters). What PostgreSQL adds:

- **Claims** are one statement: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks the
  next due row of a queue (two partial indexes: queued rows by priority and
  insertion, scheduled rows by priority and due time) and ``UPDATE`` makes it
  running, so any number of workers claim without waiting for each other;
  the previous job's outcome is written in the same transaction (one round
  trip: psycopg's pipeline mode).
- **Wake-ups.** Every insert sends ``NOTIFY`` (delivered at commit) on the
  store's channel; each idle consumer thread listens on a connection of its
  own and claims within milliseconds. A finished job that some process waits
  for (``memqueue_waiters``) notifies another channel, which wakes
  ``Job.wait()`` and ``join()`` there. With ``notify=false``
  (PgBouncer in transaction mode, where ``LISTEN`` cannot work) idle workers
  poll every :data:`POLL_WITHOUT_NOTIFY` s.
- **Leases.** A worker process writes a row in ``memqueue_owners`` with a
  lease (server clock) that its heartbeat renews every ``lease / 3``; a lapsed
  lease makes its running jobs anyone's to take over (its late outcome is
  then discarded, the first one recorded stands). Sooner: the worker's
  listening connection holds a session advisory lock; when the server closes
  that session (the process died, its host vanished) the lock is gone from
  ``pg_locks`` and the jobs are taken over within a second, not a lease. Locks
  taken before the server's last start do not count (after a restart every
  worker needs a moment to lock again).
- **Jobs in the caller's transaction** (:meth:`PostgresStorage.put_in_transaction`):
  one ``INSERT`` (with its ``NOTIFY``) through the connection of a SQLAlchemy
  session or connection, so the job commits or rolls back with the app's data.
- **The schema** is versioned (``memqueue_schema``) and migrated forward by
  ``flask memqueue db upgrade`` under an advisory lock; an app with
  ``app.debug`` or ``app.testing`` creates it on first use. Once it is
  current a process runs no DDL (DDL would wait behind any open transaction
  that enqueued a job).

Jobs are JSON (arguments, results), never pickle. The password never leaves
this module: :attr:`url` has it replaced by ``***``, and so has every error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError, MemQueueError, PostgresUnavailable, SchemaError, StorageError
from ..extras import install_hint
from .base import Capabilities, StoreContext
from .durable import DurableStorage, Record, _PollingEvent, _queue_full, check_options

if TYPE_CHECKING:
    from ..job import Job

logger = logging.getLogger("flask_memqueue")

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
#: Seconds between two looks at the table of an idle worker with ``notify=false``.
POLL_WITHOUT_NOTIFY = 0.2
#: Seconds between two writes of a running job's progress.
PROGRESS_INTERVAL = 0.1
#: Rows one DELETE of the retention removes at most (no long lock, no table-wide scan).
PRUNE_BATCH = 500
#: Batches one pass of the retention deletes at most (the next idle second goes on).
PRUNE_BATCHES = 20
#: The first key of the transaction advisory locks that serialise unique keys.
_UNIQUE_LOCK = 0x6D71  # "mq"

_FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"
_LIVE_SQL = "('queued', 'scheduled', 'running')"
_COLUMNS = ("id, task, args, kwargs, status, attempts, enqueued_at, eta, started_at, finished_at, result, error,"
            " traceback, owner, lane, priority, unique_key, tick, progress, message")
_INSERT_COLUMNS = "ns, id, task, args, kwargs, status, enqueued_at, eta, lane, priority, unique_key, tick"


@dataclass(slots=True)
class PostgresRecord(Record):
    """A record as the table holds it: also the progress a running job reported."""

    progress: float | None = None
    message: str | None = None


# -- the schema: forward migrations ------------------------------------------------------------
#: ``(version, what it does, statements)``, applied in order, each once. ``{s}`` is the schema.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "jobs, owners (leases), declared queues, waiters and periodic ticks", (
        """CREATE TABLE {s}.memqueue_jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text NOT NULL PRIMARY KEY,
    ns text NOT NULL,
    lane text NOT NULL,
    task text NOT NULL,
    args text NOT NULL,
    kwargs text,
    status text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    enqueued_at double precision NOT NULL,
    eta double precision,
    started_at double precision,
    finished_at double precision,
    result text,
    error text,
    traceback text,
    owner text,
    token text,
    unique_key text,
    tick double precision,
    progress double precision,
    message text
)""",
        # Claims: one partial index per waiting status, in claim order, so each
        # holds only the rows that wait (a finished job costs them nothing).
        "CREATE INDEX memqueue_jobs_queued ON {s}.memqueue_jobs (ns, lane, priority DESC, seq)"
        " WHERE status = 'queued'",
        "CREATE INDEX memqueue_jobs_scheduled ON {s}.memqueue_jobs (ns, lane, priority DESC, eta, seq)"
        " WHERE status = 'scheduled'",
        "CREATE INDEX memqueue_jobs_running ON {s}.memqueue_jobs (ns, owner) WHERE status = 'running'",
        # Retention deletes the oldest finished rows first, in small batches.
        "CREATE INDEX memqueue_jobs_finished ON {s}.memqueue_jobs (ns, finished_at)"
        f" WHERE status IN {_FINISHED_SQL}",
        "CREATE INDEX memqueue_jobs_unique ON {s}.memqueue_jobs (ns, unique_key)"
        f" WHERE unique_key IS NOT NULL AND status IN {_LIVE_SQL}",
        """CREATE TABLE {s}.memqueue_owners (
    ns text NOT NULL,
    owner text NOT NULL,
    expires_at double precision NOT NULL,
    lock_key bigint,
    locked_at double precision,
    PRIMARY KEY (ns, owner)
)""",
        """CREATE TABLE {s}.memqueue_consumers (
    ns text NOT NULL,
    lane text NOT NULL,
    owner text NOT NULL,
    seen_at double precision NOT NULL,
    PRIMARY KEY (ns, lane, owner)
)""",
        # Who waits for which job (``Job.wait()``, ``"*"`` for ``join()``) in another process:
        # only the outcome of a job somebody waits for is notified. A NOTIFY serialises the
        # commits of every notifying transaction (a lock held through the WAL flush), which a
        # worker should not pay per job for nobody.
        """CREATE TABLE {s}.memqueue_waiters (
    ns text NOT NULL,
    job_id text NOT NULL,
    owner text NOT NULL,
    since double precision NOT NULL,
    PRIMARY KEY (ns, job_id, owner)
)""",
        """CREATE TABLE {s}.memqueue_ticks (
    ns text NOT NULL,
    task text NOT NULL,
    tick double precision NOT NULL,
    job_id text,
    claimed_at double precision NOT NULL,
    PRIMARY KEY (ns, task)
)""",
    )),
)
#: The schema version this code needs.
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lock_id(schema: str) -> int:
    """The advisory lock that serialises migrations of ``schema`` (a signed 63-bit number)."""
    return int.from_bytes(hashlib.sha1(f"memqueue-schema:{schema}".encode()).digest()[:8], "big") >> 1


def schema_sql(schema: str = "public", *, since: int = 0, transaction: bool = True) -> str:
    """The SQL that brings ``schema`` from version ``since`` to :data:`SCHEMA_VERSION`:
    one transaction, serialised by an advisory lock, each migration applied only
    if ``memqueue_schema`` does not list it yet (so running it twice is harmless).
    What ``flask memqueue db sql`` prints, and what ``db upgrade`` runs."""
    s = _ident(schema)
    out = (["BEGIN;"] if transaction else []) + [f"SELECT pg_advisory_xact_lock({_lock_id(schema)});"]
    if schema != "public":
        out.append(f"CREATE SCHEMA IF NOT EXISTS {s};")
    out.append(f"CREATE TABLE IF NOT EXISTS {s}.memqueue_schema (\n    version integer PRIMARY KEY,\n"
               "    description text NOT NULL,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);")
    for version, description, statements in MIGRATIONS:
        if version <= since:
            continue
        body = "\n".join(f"    {stmt.format(s=s)};".replace("\n", "\n    ") for stmt in statements)
        out.append(
            f"-- version {version}: {description}\n"
            f"DO $memqueue$ BEGIN\n  IF NOT EXISTS (SELECT 1 FROM {s}.memqueue_schema WHERE version = {version})"
            f" THEN\n{body}\n    INSERT INTO {s}.memqueue_schema (version, description)"
            f" VALUES ({version}, {_literal(description)});\n  END IF;\nEND $memqueue$;"
        )
    if transaction:
        out.append("COMMIT;")
    return "\n".join(out) + "\n"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- the factory and its options ---------------------------------------------------------------
def open_postgres(url: str, options: Mapping[str, Any], context: StoreContext) -> PostgresStorage:
    """The ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` entry point.
    Connects to nothing: an app starts while the database is down, and its first
    statement says why it cannot reach it."""
    ours = {k: v for k, v in options.items() if k not in LIBPQ_OPTIONS}
    check_options(ours, {**OPTIONS, "<libpq parameters>": "sslmode, application_name, ... (passed to libpq)"}, url)
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"{context.config_key} names a PostgreSQL database but psycopg 3 (and psycopg_pool) is not"
            f" installed: {install_hint('postgres')}"
        ) from None
    schema = _schema_option(options.get("schema", "public"))
    lease = _number("lease", options.get("lease", DEFAULT_LEASE), minimum=1.0, default="30")
    timeout = _number("connect_timeout", options.get("connect_timeout", 5.0), minimum=0.1, default="5")
    pool_size = _int_option("pool_size", options.get("pool_size", DEFAULT_POOL_SIZE))
    notify = _bool_option("notify", options.get("notify", True))
    libpq = {k: str(v) for k, v in options.items() if k in LIBPQ_OPTIONS}
    return PostgresStorage(url, context, schema=schema, lease=lease, pool_size=pool_size, notify=notify,
                           connect_timeout=timeout, libpq=libpq)


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


def _conninfo(url: str) -> str:
    """The URL as libpq takes it: the scheme ``postgresql``, no query string (options come apart)."""
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest.partition("?")[0]


def _dbapi_connection(session: Any) -> Any:
    """The DB-API connection (psycopg 3 or psycopg2) of a SQLAlchemy session or connection,
    or a DB-API connection given as it is. Its transaction begins if it had not."""
    target = session
    if callable(getattr(target, "registry", None)) and hasattr(target, "session_factory"):
        target = target()  # a scoped_session (Flask-SQLAlchemy's db.session): this scope's Session
    if hasattr(target, "get_bind") and callable(getattr(target, "connection", None)):
        target = target.connection()  # a Session: its Connection, in the session's transaction
    if hasattr(target, "exec_driver_sql") and hasattr(target, "connection"):
        if not target.in_transaction():
            target.begin()
        target = target.connection  # a Connection: its pooled DB-API connection
    driver = getattr(target, "driver_connection", None) or getattr(target, "dbapi_connection", None)
    if driver is not None:
        target = driver
    if not callable(getattr(target, "cursor", None)):
        raise TypeError(
            f"session= must be a SQLAlchemy Session (Flask-SQLAlchemy's db.session), a SQLAlchemy Connection,"
            f" or a DB-API connection to the job store's database, not {type(session).__name__}"
        )
    return target


class PostgresStorage(DurableStorage):
    """Job records in PostgreSQL tables that any number of processes and hosts share."""

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True,
        outages_end=True, transactional=True,
    )
    #: With notify, an idle worker is woken by NOTIFY; this bound says how soon a stop
    #: requested from a signal handler is seen (and is the poll without notify).
    idle_wait = 1.0
    #: Waiters are woken by NOTIFY; the poll covers a notification lost in an outage, or not
    #: sent by a worker whose outcome statement began just before the waiter registered.
    waiter_poll_interval = 1.0

    def __init__(
        self, url: str, context: StoreContext, *, schema: str = "public", lease: float = DEFAULT_LEASE,
        pool_size: int = DEFAULT_POOL_SIZE, notify: bool = True, connect_timeout: float = 5.0,
        libpq: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, context)
        import psycopg
        import psycopg_pool

        self._pg = psycopg
        self.schema = schema
        self.lease = lease
        self.notify = notify
        self.key = context.config_key
        self.connect_timeout = connect_timeout
        if not notify:
            self.idle_wait = POLL_WITHOUT_NOTIFY
            self.waiter_poll_interval = POLL_WITHOUT_NOTIFY
        parts = urlsplit(url)
        self._password = unquote(parts.password or "") or str((libpq or {}).get("password") or "")
        self._conninfo = _conninfo(url)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True, "connect_timeout": max(1, round(connect_timeout)), **(libpq or {}),
        }
        if not notify:  # PgBouncer in transaction mode: a prepared statement may land on another server connection
            self._connect_kwargs["prepare_threshold"] = None
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo, min_size=0, max_size=pool_size, kwargs=self._connect_kwargs, open=False,
            timeout=connect_timeout, name=f"memqueue[{context.namespace}]",
        )
        self._pool_open = False
        self._t = {name: f"{_ident(schema)}.memqueue_{name}"
                   for name in ("jobs", "owners", "consumers", "ticks", "waiters")}
        digest = hashlib.sha1(f"{schema}.{self.namespace}".encode()).hexdigest()[:24]
        #: New jobs ("q:<queue>") and wake-ups ("w:"): idle consumer threads listen, each on its own connection.
        self.channel = "memqueue_" + digest
        #: Finished jobs somebody waits for ("d:<id>"): the session thread listens while anything waits.
        self.done_channel = "memqueue_d_" + digest
        self._tl = threading.local()
        self._thread_conns: set[Any] = set()
        self._blocked = 0
        self._lock_key = int.from_bytes(hashlib.sha1(self.owner.encode()).digest()[:8], "big") >> 1
        self._ready = False
        self._ready_lock = threading.Lock()
        self._registered = False
        self._room: int | None = None
        self._recount = 0.0
        self._plock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._written: dict[str, tuple[float | None, str | None]] = {}
        self._discards: dict[str, PostgresRecord] = {}
        self._failed_tokens: list[str] = []
        self._alive: dict[str, bool] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._watched: dict[str, list[_PollingEvent]] = {}
        self._wlock = threading.Lock()
        self._beat_wake = threading.Event()
        self._listener: Any = None
        self._next_owner_sweep = 0.0

    # -- errors -----------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`PostgresUnavailable` that says why, a :class:`SchemaError`, or a
        :class:`StorageError`; never with the password in it."""
        pg = self._pg
        text = str(exc).strip()
        if self._password:
            text = text.replace(self._password, "***")
        where = f"PostgreSQL {self.url} ({self.key})"
        if isinstance(exc, SchemaError):
            return exc
        if isinstance(exc, pg.errors.UndefinedTable):
            return SchemaError(
                f"{where}: {doing} failed: the memqueue tables are missing in schema {self.schema!r} ({text});"
                " run `flask memqueue db upgrade`"
            )
        if isinstance(exc, pg.OperationalError) or type(exc).__name__ == "PoolTimeout":
            lowered = text.lower()
            if "password authentication failed" in lowered or "no password supplied" in lowered:
                why = f"the server refused the credentials (wrong password or user name): {text}"
            elif "timeout" in lowered or "timed out" in lowered:
                why = f"no answer in time (the server is stopped, overloaded, or the network is cut): {text}"
            elif "does not exist" in lowered and "database" in lowered:
                why = f"the database does not exist: {text}"
            else:
                why = f"the server is unreachable or closed the connection: {text}"
            return PostgresUnavailable(f"{where}: {doing} failed: {why}")
        return StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {text}")

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def _conn(self, doing: str) -> Iterator[Any]:
        """A pooled connection (autocommit); any failure becomes this store's error.
        A connection that broke goes back to the pool, which drops it."""
        self._check_process()
        if not self._ready:
            self._ensure_schema()
        pg = self._pg
        try:
            with self._pool_connection(doing) as conn:
                yield conn
        except MemQueueError:
            raise
        except (pg.Error, OSError) as exc:
            raise self._error(exc, doing) from exc

    @contextmanager
    def _pool_connection(self, doing: str) -> Iterator[Any]:
        if not self._pool_open:
            with self._plock:
                if not self._pool_open:
                    self._pool.open(wait=False)
                    self._pool_open = True
        try:
            cm = self._pool.connection()
            conn = cm.__enter__()
        except Exception as exc:
            if type(exc).__name__ != "PoolTimeout":
                raise
            # The pool says only that it waited: ask the server why, once.
            raise self._error(self._diagnose() or exc, doing) from exc
        try:
            yield conn
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        cm.__exit__(None, None, None)

    def _diagnose(self) -> BaseException | None:
        """Why a connection cannot be made now (the pool only says it timed out), or None."""
        try:
            conn = self._pg.connect(self._conninfo, **self._connect_kwargs)
        except Exception as exc:
            return exc
        conn.close()
        return None

    def _ensure_schema(self) -> None:
        """Check once that the schema is current; create or migrate it in development.

        A current schema costs one read and no DDL (which would queue behind any
        open transaction that enqueued a job, and everything else behind it).
        """
        with self._ready_lock:
            if self._ready:
                return
            pg = self._pg
            try:
                with self._pool_connection("checking the schema") as conn:
                    version = self._schema_version(conn)
                    if version < SCHEMA_VERSION:
                        if not self.context.development:
                            raise SchemaError(
                                f"PostgreSQL {self.url} ({self.key}): the memqueue tables in schema"
                                f" {self.schema!r} are at version {version}, this flask-memqueue needs"
                                f" {SCHEMA_VERSION}: run `flask memqueue db upgrade` (or apply"
                                " `flask memqueue db sql` in a migration of your own). Apps with app.debug"
                                " or app.testing set create them on first use."
                            )
                        self._upgrade(conn)
            except MemQueueError:
                raise
            except (pg.Error, OSError) as exc:
                raise self._error(exc, "checking the schema") from exc
            self._ready = True

    def _schema_version(self, conn: Any) -> int:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{_ident(self.schema)}.memqueue_schema",)).fetchone()[0]
        if exists is None:
            return 0
        row = conn.execute(f"SELECT max(version) FROM {_ident(self.schema)}.memqueue_schema").fetchone()
        return int(row[0] or 0)

    def _upgrade(self, conn: Any) -> int:
        """Apply the missing migrations in one transaction under the schema's advisory lock;
        returns the version found under the lock (what this call started from)."""
        if self._schema_version(conn) >= SCHEMA_VERSION:
            return SCHEMA_VERSION
        # A session lock, then the version in a new transaction (a transaction that began
        # before another process's migration committed could still see its catalogs without it).
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_id(self.schema),))
        try:
            before = self._schema_version(conn)
            if before < SCHEMA_VERSION:
                conn.execute(schema_sql(self.schema, since=before))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(self.schema),))
        return before

    def schema_sql(self) -> str:
        """Every migration as one transaction that can run on any version (see :func:`schema_sql`)."""
        return schema_sql(self.schema)

    def upgrade_schema(self) -> tuple[int, int]:
        """Bring the schema to :data:`SCHEMA_VERSION`: ``(version before, version after)``.
        Two processes doing it at once both succeed (the advisory lock serialises them)."""
        pg = self._pg
        try:
            with self._pool_connection("upgrading the schema") as conn:
                before = self._upgrade(conn)
                after = self._schema_version(conn)
        except (pg.Error, OSError) as exc:
            raise self._error(exc, "upgrading the schema") from exc
        self._ready = True
        return before, after

    def schema_version(self) -> int:
        """The version of the memqueue tables in the database (0: none)."""
        pg = self._pg
        try:
            with self._pool_connection("reading the schema version") as conn:
                return self._schema_version(conn)
        except (pg.Error, OSError) as exc:
            raise self._error(exc, "reading the schema version") from exc

    def _one(self, sql: str, params: Any, doing: str) -> Any:
        with self._conn(doing) as conn:
            return conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Any, doing: str = "reading") -> list[Any]:
        with self._conn(doing) as conn:
            rows: list[Any] = conn.execute(sql, params).fetchall()
            return rows

    # -- inserts ----------------------------------------------------------------------------
    def _row(self, r: Record) -> tuple[Any, ...]:
        return (self.namespace, r.id, r.task, r.args, r.kwargs, r.status, r.enqueued_at, r.eta, r.queue,
                r.priority, r.unique_key, r.tick)

    def _insert_sql(self, values: str) -> str:
        """One statement: insert the rows and notify each queue that got one (sent at commit).
        ``ON CONFLICT DO NOTHING``: an insert repeated after a lost reply adds nothing."""
        return (f"WITH ins AS (INSERT INTO {self._t['jobs']} ({_INSERT_COLUMNS}) {values}"
                " ON CONFLICT (id) DO NOTHING RETURNING lane)"
                " SELECT count(*), (SELECT count(pg_notify(%s, 'q:' || l)) FROM (SELECT DISTINCT lane AS l FROM ins) d)"
                " FROM ins")

    def _insert(self, records: list[Record]) -> int:
        with self._conn(f"enqueueing {len(records)} job(s)") as conn:
            room = self._room_left(conn, len(records))
            accepted = records if room is None else records[: max(0, room)]
            if not accepted:
                return 0
            if len(accepted) == 1:
                sql = self._insert_sql("VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
                params: tuple[Any, ...] = (*self._row(accepted[0]), self.channel)
            else:
                sql = self._insert_sql(
                    "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                    " %s::float8[], %s::float8[], %s::text[], %s::int2[], %s::text[], %s::float8[])"
                )
                rows = [self._row(r)[1:] for r in accepted]
                params = (self.namespace, *([list(c) for c in zip(*rows, strict=True)]), self.channel)
            conn.execute(sql, params).fetchone()
            if self._room is not None:
                self._room -= len(accepted)
            return len(accepted)

    def _room_left(self, conn: Any, n: int) -> int | None:
        """Room under MEMQUEUE_MAXSIZE: counted when near the limit or a second old
        (a count scans the waiting rows), else the last count minus this process's inserts."""
        if not self.maxsize:
            return None
        room = self._room
        if room is None or room - n <= self.maxsize // 10 or time.time() > self._recount:
            (waiting,) = conn.execute(
                f"SELECT count(*) FROM {self._t['jobs']} WHERE ns = %s AND status IN ('queued', 'scheduled')",
                (self.namespace,),
            ).fetchone()
            room = self._room = self.maxsize - int(waiting)
            self._recount = time.time() + 1.0
        return room

    def _unique_sql(self) -> str:
        t = self._t["jobs"]
        return (
            f"WITH holder AS (SELECT {_COLUMNS} FROM {t} WHERE ns = %s AND unique_key = %s"
            f" AND status IN {_LIVE_SQL} ORDER BY seq LIMIT 1),"
            f" ins AS (INSERT INTO {t} ({_INSERT_COLUMNS})"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM holder) AND %s"
            " RETURNING lane),"
            " n AS (SELECT pg_notify(%s, 'q:' || lane) FROM ins)"
            " SELECT h.*, (SELECT count(*) FROM ins), (SELECT count(*) FROM n) FROM (SELECT 1) one"
            " LEFT JOIN holder h ON true"
        )

    def _unique_params(self, record: Record, full: bool) -> tuple[Any, ...]:
        return (self.namespace, record.unique_key, *self._row(record), not full, self.channel)

    def _unique_result(self, row: Any, record: Record) -> Record | None:
        if row[-2]:  # inserted
            return record
        if row[0] is not None:
            return PostgresRecord(*row[:-2])
        return None

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        with self._conn("enqueueing a job with a unique key") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (_UNIQUE_LOCK, f"{len(self.namespace)}:{self.namespace}:{record.unique_key}"))
            row = conn.execute(self._unique_sql(), self._unique_params(record, full)).fetchone()
        found = self._unique_result(row, record)
        if found is record and self._room is not None:
            self._room -= 1
        return found

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        with self._conn("claiming a periodic tick") as conn, conn.transaction():
            claimed = conn.execute(
                f"INSERT INTO {self._t['ticks']} AS t (ns, task, tick, job_id, claimed_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (ns, task) DO UPDATE SET tick = excluded.tick, job_id = excluded.job_id,"
                " claimed_at = excluded.claimed_at WHERE t.tick < excluded.tick RETURNING 1",
                (self.namespace, task, tick, None if record is None else record.id, now),
            ).fetchone()
            if claimed is None:
                return False
            if record is not None:
                conn.execute(self._insert_sql("VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"),
                             (*self._row(record), self.channel))
        return True

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        rows = self._all(f"SELECT task, tick, job_id, claimed_at FROM {self._t['ticks']} WHERE ns = %s",
                         (self.namespace,))
        return {task: (float(tick), job_id, float(claimed)) for task, tick, job_id, claimed in rows}

    # -- jobs in the caller's transaction ---------------------------------------------------
    def put_in_transaction(self, job: Job, session: Any) -> Job:
        """Insert ``job`` through ``session``'s connection, inside its open transaction.

        ``session``: a SQLAlchemy ``Session`` (Flask-SQLAlchemy's ``db.session``),
        a SQLAlchemy ``Connection``, or a DB-API connection (psycopg 3 or
        psycopg2), on the database of this store. The job exists for nobody else
        until that transaction commits; a rollback leaves no trace of it. Its
        ``NOTIFY`` is part of the same statement, so workers are woken at commit.

        A plain job costs the transaction one statement. With ``job.unique_key``
        it costs two (a transaction-level advisory lock on the key, then the
        look-up and the insert), so two transactions racing with one key make one
        job: the second waits for the first to end, then sees its job; the live
        holder is returned instead (it may be a job of this very transaction).
        ``MEMQUEUE_MAXSIZE`` is checked before, on the store's own connection: jobs
        of transactions still open are not counted.

        :raises QueueFull: the store holds its maximum of waiting jobs.
        """
        room = self._room_for(1)  # counted on the store's own connection, at most once a second
        if job.unique_key is None and room is not None and room <= 0:
            raise _queue_full(self.maxsize, job.name)
        full = room is not None and room <= 0
        if not self._ready:
            self._ensure_schema()
        connection = _dbapi_connection(session)
        record = self._prepare(job)
        try:
            cur = connection.cursor()
            try:
                if job.unique_key is None:
                    cur.execute(self._insert_sql("VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"),
                                (*self._row(record), self.channel))
                    holder: Record | None = record
                else:
                    cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                (_UNIQUE_LOCK, f"{len(self.namespace)}:{self.namespace}:{job.unique_key}"))
                    cur.execute(self._unique_sql(), self._unique_params(record, full))
                    holder = self._unique_result(cur.fetchone(), record)
            finally:
                cur.close()
        except self._pg.Error as exc:
            self._unprepare(job)
            raise self._error(exc, "enqueueing a job in the caller's transaction") from exc
        except BaseException:
            self._unprepare(job)
            raise
        if holder is None:
            self._unprepare(job)
            raise _queue_full(self.maxsize, job.name)
        if holder.id != record.id:
            self._unprepare(job)
            return self.job_of(holder)
        if self._room is not None:
            self._room -= 1
        return job

    def _room_for(self, n: int) -> int | None:
        """:meth:`_room_left` without a connection while the last count is fresh."""
        if not self.maxsize:
            return None
        room = self._room
        if room is None or room - n <= self.maxsize // 10 or time.time() > self._recount:
            with self._conn("counting jobs") as conn:
                return self._room_left(conn, n)
        return room

    # -- outcomes ---------------------------------------------------------------------------
    def _state(self, r: Record) -> tuple[Any, ...]:
        job = self._running.get(r.id)
        progress = message = None
        if job is not None:
            progress, message = job.progress, job.progress_message
        elif isinstance(r, PostgresRecord):
            progress, message = r.progress, r.message
        return (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback,
                r.owner, progress, message)

    _SET_STATE = ("status = %s, attempts = %s, eta = %s, started_at = %s, finished_at = %s, result = %s,"
                  " error = %s, traceback = %s, owner = %s, progress = %s, message = %s, token = NULL")

    _STATE_NAMES = ("status", "attempts", "eta", "started_at", "finished_at", "result", "error", "traceback",
                    "owner", "progress", "message")
    _SET_NAMED = ", ".join(f"{c} = %(s_{c})s" for c in _STATE_NAMES) + ", token = NULL"

    def _save_ctes(self) -> str:
        """Record an outcome of a job this owner runs (or insert it whole: eager mode), as CTEs
        ``old``, ``upd``, ``ins``, ``n`` (named parameters, see :meth:`_save_params`). Nothing
        written means a late outcome: the lease lapsed (or the session ended) and another worker
        took the job over, or this very outcome was written before (a repeat after a lost reply)."""
        t = self._t["jobs"]
        state = ", ".join(f"%(s_{c})s" for c in self._STATE_NAMES)
        return (
            f"old AS (SELECT status, owner FROM {t} WHERE id = %(s_id)s AND ns = %(ns)s),"
            f" upd AS (UPDATE {t} SET {self._SET_NAMED} WHERE id = %(s_id)s AND ns = %(ns)s AND status = 'running'"
            " AND owner = %(me)s RETURNING status),"
            f" ins AS (INSERT INTO {t} (ns, id, task, args, kwargs, enqueued_at, lane, priority, unique_key, tick,"
            f" {', '.join(self._STATE_NAMES)}) SELECT %(ns)s, %(s_id)s, %(s_task)s, %(s_args)s, %(s_kwargs)s,"
            f" %(s_enqueued_at)s, %(s_lane)s, %(s_priority)s, %(s_unique_key)s, %(s_tick)s, {state}"
            " WHERE NOT EXISTS (SELECT 1 FROM old) ON CONFLICT (id) DO NOTHING RETURNING id),"
            " n AS (SELECT pg_notify(%(dchannel)s, 'd:' || %(s_id)s) FROM upd WHERE upd.status IN"
            f" {_FINISHED_SQL} AND EXISTS (SELECT 1 FROM {self._t['waiters']} w WHERE w.ns = %(ns)s"
            " AND w.job_id IN (%(s_id)s, '*')))"
        )

    _WRITTEN = "(SELECT count(*) FROM upd) + (SELECT count(*) FROM ins) AS written, (SELECT count(*) FROM n) AS sent"

    def _save_sql(self) -> str:
        return f"WITH {self._save_ctes()} SELECT {self._WRITTEN}"

    def _save_params(self, r: Record) -> dict[str, Any]:
        params: dict[str, Any] = {f"s_{c}": v for c, v in zip(self._STATE_NAMES, self._state(r), strict=True)}
        params.update(s_id=r.id, ns=self.namespace, me=self.owner, s_task=r.task, s_args=r.args, s_kwargs=r.kwargs,
                      s_enqueued_at=r.enqueued_at, s_lane=r.queue, s_priority=r.priority, s_unique_key=r.unique_key,
                      s_tick=r.tick, dchannel=self.done_channel)
        return params

    def _save(self, record: Record) -> None:
        with self._conn("recording a job") as conn:
            row = conn.execute(self._save_sql(), self._save_params(record)).fetchone()
            if not row[0]:
                self._note_discarded(conn, record)
        self._after_outcomes([record])

    def _note_discarded(self, conn: Any, record: Record) -> None:
        stored = self._load_in(conn, record.id)
        if stored is None or (stored.status == record.status and stored.finished_at == record.finished_at):
            return  # gone, or the very outcome written before (a write repeated after a lost reply)
        logger.warning(
            "job %s (%s): the outcome this process recorded late was discarded; the job is %s in %s:"
            " this process's lease lapsed (or its session with the server ended) and another worker"
            " took it over, so it may run (or have run) again (at-least-once delivery)",
            record.id, stored.task, stored.status, self.url,
        )
        with self._plock:
            self._discards[record.id] = stored

    def _after_outcomes(self, records: list[Record]) -> None:
        with self._plock:
            for r in records:
                self._running.pop(r.id, None)
                self._written.pop(r.id, None)

    def _discarded_outcome(self, job: Job) -> Record | None:
        with self._plock:
            return self._discards.pop(job.id, None)

    # -- claims -----------------------------------------------------------------------------
    def _claim_ctes(self) -> str:
        """The next due job of a queue made running, as CTEs ending in ``claimed`` (its record
        as it was before the claim). Two partial-index walks, each ``FOR UPDATE SKIP LOCKED``:
        the best due scheduled row and the best queued row; the scheduled one wins a tie of priority."""
        t = self._t["jobs"]
        return (
            f"due AS (SELECT seq, priority, 0 AS k, status, attempts, started_at FROM {t}"
            " WHERE ns = %(ns)s AND lane = %(lane)s AND status = 'scheduled' AND eta <= %(now)s"
            " ORDER BY priority DESC, eta, seq LIMIT 1 FOR UPDATE SKIP LOCKED),"
            f" q AS (SELECT seq, priority, 1 AS k, status, attempts, started_at FROM {t}"
            " WHERE ns = %(ns)s AND lane = %(lane)s AND status = 'queued'"
            " ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED),"
            " pick AS (SELECT * FROM (SELECT * FROM due UNION ALL SELECT * FROM q) x"
            " ORDER BY priority DESC, k LIMIT 1),"
            f" claimed AS (UPDATE {t} j SET status = 'running', owner = %(me)s, token = %(token)s,"
            " attempts = j.attempts + 1, started_at = %(now)s FROM pick WHERE j.seq = pick.seq"
            " RETURNING j.id, j.task, j.args, j.kwargs, pick.status AS was, pick.attempts AS tries, j.enqueued_at,"
            " j.eta, pick.started_at AS began, j.finished_at, j.result, j.error, j.traceback, NULL::text AS nobody,"
            " j.lane, j.priority, j.unique_key, j.tick, j.progress, j.message)"
        )

    def _claim_sql(self) -> str:
        return f"WITH {self._claim_ctes()} SELECT * FROM claimed"

    def _settle_claim_sql(self) -> str:
        """One statement, one round trip, one commit: the previous job's outcome and the next claim."""
        return (f"WITH {self._save_ctes()}, {self._claim_ctes()}"
                f" SELECT c.*, {self._WRITTEN} FROM (SELECT 1) one LEFT JOIN claimed c ON true")

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        if not self._registered:
            self._register()
        token = uuid.uuid4().hex[:16]
        with self._plock:
            failed = self._failed_tokens[:]
        pg = self._pg
        claim_params = {"ns": self.namespace, "lane": queue, "now": now, "me": owner, "token": token}
        try:
            with self._conn("taking a job") as conn:
                if not failed and len(settle) <= 1:  # the usual case: one statement
                    stopped = stop()
                    if settle and not stopped:
                        row = conn.execute(self._settle_claim_sql(),
                                           {**self._save_params(settle[0]), **claim_params}).fetchone()
                        if not row[-2]:
                            self._note_discarded(conn, settle[0])
                        row = None if row[0] is None else row[:-2]
                    elif settle:
                        if not conn.execute(self._save_sql(), self._save_params(settle[0])).fetchone()[0]:
                            self._note_discarded(conn, settle[0])
                        row = None
                    else:
                        row = None if stopped else conn.execute(self._claim_sql(), claim_params).fetchone()
                else:
                    row = self._claim_in_transaction(conn, settle, failed, stop, claim_params)
        except (MemQueueError, pg.Error, OSError) as exc:
            if isinstance(exc, PostgresUnavailable) or isinstance(exc, (pg.OperationalError, OSError)):
                with self._plock:  # the next claim puts back what this one may have claimed
                    self._failed_tokens = (self._failed_tokens + [token])[-64:]
            if isinstance(exc, MemQueueError):
                raise
            raise self._error(exc, "taking a job") from exc
        if failed:
            with self._plock:
                self._failed_tokens = [t for t in self._failed_tokens if t not in failed]
        self._after_outcomes(settle)
        if row is None:
            return None
        self._start_thread()
        return PostgresRecord(*row)

    def _claim_in_transaction(
        self, conn: Any, settle: list[Record], failed: list[str], stop: Callable[[], bool], claim: dict[str, Any]
    ) -> Any:
        """The rare claim: after a lost claim reply (its jobs go back to the head of their
        queue) or with several outcomes to record. One transaction, pipelined."""
        with conn.pipeline(), conn.transaction():
            if failed:
                conn.execute(
                    f"UPDATE {self._t['jobs']} SET status = 'queued', owner = NULL, token = NULL,"
                    " attempts = attempts - 1, started_at = NULL"
                    " WHERE ns = %s AND status = 'running' AND owner = %s AND token = ANY(%s)",
                    (self.namespace, claim["me"], failed),
                )
            saves = [conn.execute(self._save_sql(), self._save_params(r)) for r in settle]
            cur = None if stop() else conn.execute(self._claim_sql(), claim)
        written = [c.fetchone() for c in saves]
        row = None if cur is None else cur.fetchone()
        for record, result in zip(settle, written, strict=True):
            if not result[0]:
                self._note_discarded(conn, record)
        return row

    def take(self, *args: Any, **kwargs: Any) -> Job | None:
        job = super().take(*args, **kwargs)
        if job is not None:
            with self._plock:
                self._running[job.id] = job
        return job

    # -- changes of one job -----------------------------------------------------------------
    def _change_sql(self, where: str) -> str:
        t = self._t["jobs"]
        return (
            f"WITH upd AS (UPDATE {t} SET {self._SET_STATE} WHERE id = %s AND ns = %s AND {where}"
            " RETURNING id, lane, status),"
            " n AS (SELECT CASE WHEN status IN ('queued', 'scheduled') THEN pg_notify(%s, 'q:' || lane)"
            " ELSE pg_notify(%s, 'd:' || id) END FROM upd)"
            " SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM n)"
        )

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        row = self._one(self._change_sql("status = ANY(%s)"),
                        (*self._state(record), job_id, self.namespace, list(from_status), self.channel,
                         self.done_channel),
                        "changing a job")
        return bool(row[0])

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        row = self._one(self._change_sql("status = 'running' AND owner = %s"),
                        (*self._state(record), job_id, self.namespace, owner, self.channel, self.done_channel),
                        "taking over the jobs of a dead worker")
        return bool(row[0])

    # -- reads ------------------------------------------------------------------------------
    def _load_in(self, conn: Any, job_id: str) -> PostgresRecord | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM {self._t['jobs']} WHERE id = %s AND ns = %s",
                           (job_id, self.namespace)).fetchone()
        return None if row is None else PostgresRecord(*row)

    def _load(self, job_id: str, visible_after: float | None) -> PostgresRecord | None:
        with self._conn("reading a job") as conn:
            record = self._load_in(conn, job_id)
        if record is None:
            return None
        if visible_after is not None and record.finished_at is not None and record.finished_at <= visible_after:
            return None
        return record

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        if not job_ids:
            return []
        extra = f" AND status IN {_FINISHED_SQL}" if finished_only else ""
        rows = self._all(f"SELECT {_COLUMNS} FROM {self._t['jobs']} WHERE ns = %s AND id = ANY(%s){extra}",
                         (self.namespace, job_ids))
        return [PostgresRecord(*row) for row in rows]

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {self._t['jobs']} WHERE ns = %s AND (%s::text IS NULL OR status = %s)"
            " AND (%s::text IS NULL OR lane = %s) AND (finished_at IS NULL OR finished_at > %s)"
            " ORDER BY enqueued_at DESC, seq DESC LIMIT %s OFFSET %s",
            (self.namespace, status, status, queue, queue, visible_after, limit, offset),
        )
        return [PostgresRecord(*row) for row in rows]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        rows = self._all(
            f"SELECT status, count(*) FROM {self._t['jobs']} WHERE ns = %s AND (%s::text IS NULL OR lane = %s)"
            " AND (finished_at IS NULL OR finished_at > %s) GROUP BY status",
            (self.namespace, queue, queue, visible_after),
        )
        return {status: int(n) for status, n in rows}

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        rows = self._all(
            f"SELECT lane, status, count(*) FROM {self._t['jobs']} WHERE ns = %s AND status IN {_LIVE_SQL}"
            " GROUP BY lane, status",
            (self.namespace,),
        )
        out: dict[str, dict[str, int]] = {}
        for lane, status, n in rows:
            out.setdefault(lane, {"queued": 0, "scheduled": 0, "running": 0})[status] = int(n)
        return out

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        wanted = list(statuses)
        plain = [s for s in wanted if due_before is None or s != "scheduled"]
        due = due_before is not None and "scheduled" in wanted
        row = self._one(
            f"SELECT count(*) FROM {self._t['jobs']} WHERE ns = %s AND (%s::text IS NULL OR lane = %s)"
            " AND (status = ANY(%s) OR (%s AND status = 'scheduled' AND eta <= %s))",
            (self.namespace, queue, queue, plain, due, due_before), "counting jobs",
        )
        return int(row[0])

    def _running_owners(self) -> set[str]:
        """The owners of running jobs, and whether each is alive (read in the same statement):
        alive while its lease runs and, if it holds a session lock taken since the server's
        last start, while that lock is held (the server releases it when the session ends)."""
        rows = self._all(
            "SELECT r.owner, coalesce(o.expires_at > extract(epoch FROM clock_timestamp())"
            " AND NOT (o.lock_key IS NOT NULL AND o.locked_at > extract(epoch FROM pg_postmaster_start_time())"
            "   AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'"
            "     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "     AND l.objsubid = 1 AND l.classid::bigint = (o.lock_key >> 32)"
            "     AND l.objid::bigint = (o.lock_key & 4294967295))), false)"
            f" FROM (SELECT DISTINCT owner FROM {self._t['jobs']} WHERE ns = %s AND status = 'running') r"
            f" LEFT JOIN {self._t['owners']} o ON o.ns = %s AND o.owner = r.owner",
            (self.namespace, self.namespace),
        )
        self._alive = {owner: bool(alive) for owner, alive in rows if owner is not None}
        now = time.time()
        if now >= self._next_owner_sweep:  # owners gone quiet long ago (killed): nobody else forgets them
            self._next_owner_sweep = now + 60.0
            with self._conn("forgetting old leases") as conn:
                conn.execute(f"DELETE FROM {self._t['owners']} WHERE ns = %s"
                             " AND expires_at < extract(epoch FROM clock_timestamp()) - 3600", (self.namespace,))
                conn.execute(f"DELETE FROM {self._t['waiters']} WHERE ns = %s AND since < %s",
                             (self.namespace, now - 3600.0))
        return set(self._alive)

    def _owner_alive(self, owner: str) -> bool:
        known = self._alive.get(owner)
        return bool(known)

    def _running_of(self, owner: str) -> list[Record]:
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {self._t['jobs']} WHERE ns = %s AND status = 'running' AND owner = %s",
            (self.namespace, owner),
        )
        return [PostgresRecord(*row) for row in rows]

    # -- retention --------------------------------------------------------------------------
    def _prune(self, finished_before: float, keep: int) -> None:
        """Small DELETEs by the finished index (no table-wide lock, no scan of waiting rows);
        what one pass leaves, the next idle second removes."""
        t = self._t["jobs"]
        with self._conn("forgetting old finished jobs") as conn:
            for _ in range(PRUNE_BATCHES):
                cur = conn.execute(
                    f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE ns = %s AND status IN {_FINISHED_SQL}"
                    " AND finished_at <= %s ORDER BY finished_at LIMIT %s)",
                    (self.namespace, finished_before, PRUNE_BATCH),
                )
                if cur.rowcount < PRUNE_BATCH:
                    break
            for _ in range(PRUNE_BATCHES):
                cur = conn.execute(
                    f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE ns = %s AND status IN {_FINISHED_SQL}"
                    " ORDER BY finished_at DESC, seq DESC OFFSET %s LIMIT %s)",
                    (self.namespace, keep, PRUNE_BATCH),
                )
                if cur.rowcount < PRUNE_BATCH:
                    break

    def _purge(self) -> int:
        t = self._t["jobs"]
        total = 0
        with self._conn("purging finished jobs") as conn:
            while True:
                cur = conn.execute(
                    f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE ns = %s AND status IN {_FINISHED_SQL}"
                    " LIMIT 5000)", (self.namespace,),
                )
                total += int(cur.rowcount)
                if cur.rowcount < 5000:
                    return total

    def _remove_waiting(self) -> list[Record]:
        rows = self._all(
            f"DELETE FROM {self._t['jobs']} WHERE ns = %s AND status IN ('queued', 'scheduled')"
            f" RETURNING seq, {_COLUMNS}",
            (self.namespace,), "dropping waiting jobs",
        )
        return [PostgresRecord(*row[1:]) for row in sorted(rows, key=lambda r: r[0])]

    def _next_eta(self, queue: str | None = None) -> float | None:
        row = self._one(
            f"SELECT min(eta) FROM {self._t['jobs']} WHERE ns = %s AND status = 'scheduled'"
            " AND (%s::text IS NULL OR lane = %s)",
            (self.namespace, queue, queue), "reading the next due time",
        )
        return None if row[0] is None else float(row[0])

    # -- declared queues --------------------------------------------------------------------
    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        t = self._t["consumers"]
        with self._conn("declaring queues") as conn, conn.transaction():
            conn.execute(f"DELETE FROM {t} WHERE ns = %s AND (owner = %s OR seen_at < %s)",
                         (self.namespace, owner, now - 3600.0))
            if queues:
                conn.execute(
                    f"INSERT INTO {t} (ns, lane, owner, seen_at) SELECT %s, l, %s, %s FROM unnest(%s::text[]) l",
                    (self.namespace, owner, now, list(queues)),
                )

    def _declared(self, seen_after: float) -> set[str]:
        rows = self._all(f"SELECT DISTINCT lane FROM {self._t['consumers']} WHERE ns = %s AND seen_at > %s",
                         (self.namespace, seen_after))
        return {lane for (lane,) in rows}

    # -- this process as an owner: lease, session lock, LISTEN, progress --------------------
    def _register(self) -> None:
        """Write this process's lease before its first claim (its jobs are never ownerless)."""
        with self._conn("writing this worker's lease") as conn:
            self._renew(conn)
        self._registered = True
        self._start_thread()

    def _renew(self, conn: Any, locked: bool = False) -> bool:
        """Renew the lease; True if it had not lapsed."""
        row = conn.execute(
            f"INSERT INTO {self._t['owners']} AS o (ns, owner, expires_at, lock_key, locked_at)"
            " VALUES (%s, %s, extract(epoch FROM clock_timestamp()) + %s, %s,"
            " CASE WHEN %s THEN extract(epoch FROM clock_timestamp()) END)"
            " ON CONFLICT (ns, owner) DO UPDATE SET expires_at = excluded.expires_at,"
            " lock_key = CASE WHEN %s THEN excluded.lock_key ELSE o.lock_key END,"
            " locked_at = CASE WHEN %s THEN excluded.locked_at ELSE o.locked_at END"
            " RETURNING (SELECT o2.expires_at FROM "
            f"{self._t['owners']} o2 WHERE o2.ns = %s AND o2.owner = %s) > extract(epoch FROM clock_timestamp())",
            (self.namespace, self.owner, self.lease, self._lock_key if locked else None, locked, locked, locked,
             self.namespace, self.owner),
        ).fetchone()
        return bool(row[0]) if row is not None and row[0] is not None else True

    def _start_thread(self) -> None:
        if self._thread is not None or self._closing.is_set() or self._pid != os.getpid():
            return
        with self._plock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._session, name=f"memqueue-postgres[{self.namespace}]", daemon=True)
            self._thread = thread
        thread.start()

    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Wait for a NOTIFY of a new job (any process, at its commit) on this thread's own
        listening connection, or :meth:`wake`, or ``timeout``. A busy consumer reads nothing:
        what arrived meanwhile is drained at once when it is idle again, so no thread is woken
        per job while the consumers are busy."""
        if not self.notify:
            return super()._sleep(timeout, queue, kicks)
        self._start_thread()
        if timeout < 0.001 or self._woken or self._kicks != kicks or self._closing.is_set():
            return self._kicks
        pg = self._pg
        conn = getattr(self._tl, "conn", None)
        try:
            if conn is None or conn.closed or conn.broken:
                self._tl.conn = conn = pg.connect(self._conninfo, **self._connect_kwargs)
                with self._plock:
                    self._thread_conns.add(conn)
                conn.execute(f"LISTEN {_ident(self.channel)}")
                return self._kicks  # look once more: a job may have committed before LISTEN
            heard = any(True for _ in conn.notifies(timeout=0.0))  # all that came while busy, at once
            if not heard and not self._woken and self._kicks == kicks:
                with self._plock:
                    self._blocked += 1
                try:
                    for _ in conn.notifies(timeout=timeout, stop_after=1):
                        break
                finally:
                    with self._plock:
                        self._blocked -= 1
        except pg.Error as exc:
            self._drop_thread_conn(conn)
            raise self._error(exc, "waiting for new jobs") from exc
        return self._kicks

    def _drop_thread_conn(self, conn: Any) -> None:
        self._tl.conn = None
        if conn is None:
            return
        with self._plock:
            self._thread_conns.discard(conn)
        try:
            conn.close()
        except Exception:  # noqa: S110 - closing a broken connection
            pass

    def _session(self) -> None:
        """The process's one session thread: hold the session lock, LISTEN for finished jobs
        (waking waiters and joins), renew the lease every lease/3 and write running jobs'
        progress. An outage is logged once, and its end."""
        next_renew = 0.0
        failing: str | None = None
        failures = 0
        while not self._closing.is_set():
            try:
                if self.notify and self._listener is None:
                    self._listen_connect()
                    next_renew = 0.0
                now = time.monotonic()
                if self._registered and now >= next_renew:
                    if self._listener is not None:
                        had = self._renew(self._listener, locked=True)
                    else:
                        with self._conn("renewing the lease") as conn:
                            had = self._renew(conn)
                    next_renew = now + self.lease / 3
                    if not had and self._running:
                        logger.warning(
                            "the lease of process %d on %s had lapsed (no renewal reached the server for %g s):"
                            " its running jobs may have been taken over by another worker; their outcome"
                            " here is discarded if so", self._pid, self.url, self.lease,
                        )
                self._write_progress()
                if failing is not None:
                    logger.warning("%s is reachable again (%s)", self.url, failing)
                    failing, failures = None, 0
                wait = max(0.0, next_renew - time.monotonic()) if self._registered else 1.0
                if self._running:
                    wait = min(wait, PROGRESS_INTERVAL)
                if self._listener is not None:
                    for note in self._listener.notifies(timeout=min(1.0, max(0.01, wait))):
                        self._heard(note.payload)
                        if self._closing.is_set():
                            break
                else:
                    self._beat_wake.wait(wait)
                    self._beat_wake.clear()
            except Exception as exc:
                self._drop_listener()
                if self._closing.is_set():
                    return
                failures += 1
                if failing is None:
                    failing = str(exc if isinstance(exc, MemQueueError) else self._error(exc, "listening"))
                    logger.error("the session thread of %s cannot reach it: %s; it keeps trying", self.url, failing)
                self._closing.wait(min(2.0, 0.05 * 2 ** min(failures, 6)))

    def _listen_connect(self) -> None:
        pg = self._pg
        if not self._ready:
            self._ensure_schema()
        try:
            conn = pg.connect(self._conninfo, **self._connect_kwargs)
        except pg.Error as exc:
            raise self._error(exc, "listening for new jobs") from exc
        try:
            conn.execute(f"LISTEN {_ident(self.done_channel)}")
            conn.execute("SELECT pg_advisory_lock(%s)", (self._lock_key,))
            if self._registered:
                self._renew(conn, locked=True)
        except BaseException:
            conn.close()
            raise
        self._listener = conn
        self._listening.set()
        # Whatever was sent while nobody here listened: consumers and waiters look again.
        self._notify()
        with self._settled:
            self._settled.notify_all()
        self._refresh_watched(None)

    def _drop_listener(self) -> None:
        self._listening.clear()
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass

    def _heard(self, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "q":
            self._notify()
        elif kind == "d":
            with self._settled:
                self._settled.notify_all()
            if value in self._watched:
                self._refresh_watched(value)

    def _write_progress(self) -> None:
        with self._plock:
            changed = []
            for jid, job in self._running.items():
                now = (job.progress, job.progress_message)
                if now[0] is not None and self._written.get(jid) != now:
                    changed.append((jid, now))
        if not changed:
            return
        with self._conn("writing progress") as conn:
            conn.execute(
                f"UPDATE {self._t['jobs']} j SET progress = p.progress, message = p.message"
                " FROM unnest(%s::text[], %s::float8[], %s::text[]) AS p(id, progress, message)"
                " WHERE j.id = p.id AND j.ns = %s AND j.status = 'running' AND j.owner = %s",
                ([c[0] for c in changed], [c[1][0] for c in changed], [c[1][1] for c in changed],
                 self.namespace, self.owner),
            )
        with self._plock:
            for jid, now in changed:
                if jid in self._running:
                    self._written[jid] = now

    def job_of(self, record: Record) -> Job:
        job = super().job_of(record)
        if isinstance(record, PostgresRecord) and record.progress is not None and record.id not in self._running:
            try:
                job.set_progress(record.progress, record.message)
            except (TypeError, ValueError):  # pragma: no cover - only this module writes it
                pass
        return job

    # -- waiters ----------------------------------------------------------------------------
    def waiter(self, job: Job) -> threading.Event | None:
        event = super().waiter(job)
        if not isinstance(event, _PollingEvent) or not self.notify:
            return event
        with self._wlock:
            self._watched.setdefault(job.id, []).append(event)
        try:  # the worker that finishes it notifies only jobs somebody waits for
            self._want(job.id)
        except MemQueueError:
            pass  # the event's own poll covers it
        self._start_thread()
        if self._listening.wait(1.0):
            try:  # finished before the listener heard: nobody will notify it again
                if self._refresh_if_finished(job):
                    event.set()
            except MemQueueError:
                pass  # the event's own poll tries again
        return event

    def _refresh_watched(self, job_id: str | None) -> None:
        with self._wlock:
            if job_id is None:
                events = [e for es in self._watched.values() for e in es]
            else:
                events = list(self._watched.get(job_id, ()))
        for event in events:
            if not event.is_set() and self._refresh_if_finished(event.job):
                event.set()
        with self._wlock:
            done = [j for j, es in self._watched.items() if all(e.is_set() for e in es)]
            for jid in done:
                del self._watched[jid]
        if done:
            self._unwant(done)

    def _want(self, job_id: str) -> None:
        """Ask whoever finishes ``job_id`` (``"*"``: every job) to notify."""
        with self._conn("waiting for a job") as conn:
            conn.execute(f"INSERT INTO {self._t['waiters']} (ns, job_id, owner, since) VALUES (%s, %s, %s, %s)"
                         " ON CONFLICT DO NOTHING", (self.namespace, job_id, self.owner, time.time()))

    def _unwant(self, job_ids: list[str]) -> None:
        try:
            with self._conn("waiting for a job") as conn:
                conn.execute(f"DELETE FROM {self._t['waiters']} WHERE ns = %s AND owner = %s AND"
                             " (job_id = ANY(%s) OR since < %s)",
                             (self.namespace, self.owner, job_ids, time.time() - 3600.0))
        except MemQueueError:
            pass  # left for the hourly sweep

    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        if not self.notify:
            return super().join(timeout, due_only=due_only, queue=queue)
        self._start_thread()  # finishes in other processes wake it (NOTIFY), not only its poll
        try:
            self._want("*")
        except MemQueueError:
            pass  # polls
        try:
            return super().join(timeout, due_only=due_only, queue=queue)
        finally:
            self._unwant(["*"])

    def wake(self) -> None:
        super().wake()
        self._beat_wake.set()
        if self._blocked and not self._closing.is_set() and self._pid == os.getpid() and self._pool_open:
            try:  # every consumer blocked in its connection (in every process: they just look again)
                with self._pool_connection("waking consumers") as conn:
                    conn.execute("SELECT pg_notify(%s, 'w:')", (self.channel,))
            except Exception:  # noqa: S110 - they end their wait within idle_wait anyway
                pass

    # -- closing ----------------------------------------------------------------------------
    def _close(self) -> None:
        self._closing.set()
        self._beat_wake.set()
        thread = self._thread
        if self._listener is not None and self._pool_open:
            try:  # the session thread blocks in its connection: a word on its channel ends the wait
                with self._pool_connection("closing") as conn:
                    conn.execute("SELECT pg_notify(%s, 'w:')", (self.done_channel,))
            except Exception:  # noqa: S110 - it ends within a second anyway
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0 + self.connect_timeout)
        self._drop_listener()
        with self._plock:
            conns, self._thread_conns = list(self._thread_conns), set()
        for conn in conns:  # consumer threads have ended (shutdown joins them first)
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing anyway
                pass
        if self._registered and self._pool_open:
            try:
                with self._pool_connection("forgetting this worker's lease") as conn:
                    conn.execute(f"DELETE FROM {self._t['owners']} o WHERE ns = %s AND owner = %s AND NOT EXISTS"
                                 f" (SELECT 1 FROM {self._t['jobs']} j WHERE j.ns = o.ns AND j.status = 'running'"
                                 " AND j.owner = o.owner)", (self.namespace, self.owner))
            except Exception:  # noqa: S110 - closing anyway; the lease lapses by itself
                pass
        if self._pool_open:
            self._pool.close(timeout=2.0)


__all__ = ["MIGRATIONS", "OPTIONS", "SCHEMA_VERSION", "PostgresStorage", "open_postgres", "schema_sql"]

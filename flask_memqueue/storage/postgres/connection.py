"""The store's connections to its database, its schema check, and its errors.

Every statement of the store runs on a connection from :class:`Connections`
(a psycopg_pool pool, autocommit), and every failure leaves it as a
:class:`~flask_memqueue.storage.postgres.errors.PostgresUnavailable` that says
why (unreachable, refused credentials, no answer in time, no such database), a
:class:`~flask_memqueue.storage.postgres.errors.SchemaError` (tables missing or
older than this version), or a :class:`~flask_memqueue.StorageError`, naming
the database with its password replaced by ``***``. psycopg is imported when
a store is made, never by importing this module.

The first connection checks the schema once: current, it costs one read and
no DDL; missing or old, an app in development (``app.debug`` or
``app.testing``) migrates it, any other gets a ``SchemaError`` naming ``flask
memqueue db upgrade``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from ...exceptions import MemQueueError, StorageError
from .errors import PostgresCredentialsRefused, PostgresUnavailable, SchemaError
from .options import Settings
from .schema import SCHEMA_VERSION, upgrade, version_in


def conninfo(url: str) -> str:
    """The URL as libpq takes it: the scheme ``postgresql``, no query string (options come apart)."""
    _scheme, _, rest = url.partition("://")
    return "postgresql://" + rest.partition("?")[0]


class Connections:
    """One store's connection pool, and the dedicated connections its listeners hold.

    :param url: the URL as given (with its password, which never leaves this object).
    :param shown: the URL as people see it (password redacted).
    :param key: the config key the URL came from, for messages.
    :param name: the pool's name (the app's namespace in it).
    :param development: create or migrate a missing or old schema instead of refusing.
    :param check: called before every statement (the store refuses use after fork).
    """

    def __init__(self, url: str, shown: str, key: str, settings: Settings, *, name: str, development: bool,
                 check: Callable[[], None]) -> None:
        import psycopg
        import psycopg_pool

        #: psycopg itself, for its exception classes.
        self.pg = psycopg
        self.url = shown
        self.key = key
        self.schema = settings.schema
        self._development = development
        self._check = check
        self._password = unquote(urlsplit(url).password or "") or str(settings.libpq.get("password") or "")
        self._conninfo = conninfo(url)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True, "connect_timeout": max(1, round(settings.connect_timeout)), **settings.libpq,
        }
        if not settings.notify:
            # PgBouncer in transaction mode: a prepared statement may land on another server connection
            self._connect_kwargs["prepare_threshold"] = None
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo, min_size=0, max_size=settings.pool_size, kwargs=self._connect_kwargs, open=False,
            timeout=settings.connect_timeout, name=name,
        )
        #: The pool was opened (it opens on first use: an app starts while the database is down).
        self.pool_open = False
        self._open_lock = threading.Lock()
        #: The schema was found current (or made so) by this process.
        self.ready = False
        self._ready_lock = threading.Lock()

    # -- errors -----------------------------------------------------------------------------
    def error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`PostgresUnavailable` that says why, a :class:`SchemaError`, or a
        :class:`StorageError`; never with the password in it."""
        pg = self.pg
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
            refusal = _refusal(text, getattr(exc, "sqlstate", None))
            if refusal is not None:
                return PostgresCredentialsRefused(f"{where}: {doing} failed: {refusal}")
            return PostgresUnavailable(f"{where}: {doing} failed: {_outage(text)}")
        return StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {text}")

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def conn(self, doing: str) -> Iterator[Any]:
        """A pooled connection (autocommit); any failure becomes this store's error.
        A connection that broke goes back to the pool, which drops it."""
        self._check()
        if not self.ready:
            self.ensure_schema()
        pg = self.pg
        try:
            with self.pooled(doing) as conn:
                yield conn
        except MemQueueError:
            raise
        except (pg.Error, OSError) as exc:
            raise self.error(exc, doing) from exc

    @contextmanager
    def pooled(self, doing: str) -> Iterator[Any]:
        """A pooled connection, without the schema check or the translation of driver errors
        (a pool that times out is asked why, once)."""
        if not self.pool_open:
            with self._open_lock:
                if not self.pool_open:
                    self._pool.open(wait=False)
                    self.pool_open = True
        try:
            cm = self._pool.connection()
            conn = cm.__enter__()
        except Exception as exc:
            if type(exc).__name__ != "PoolTimeout":
                raise
            # The pool says only that it waited: ask the server why, once.
            raise self.error(self._diagnose() or exc, doing) from exc
        try:
            yield conn
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        cm.__exit__(None, None, None)

    def connect(self) -> Any:
        """A connection of its own (autocommit, outside the pool), for a thread that LISTENs.
        Driver errors are the caller's to translate."""
        return self.pg.connect(self._conninfo, **self._connect_kwargs)

    def _diagnose(self) -> BaseException | None:
        """Why a connection cannot be made now (the pool only says it timed out), or None."""
        try:
            conn = self.connect()
        except Exception as exc:
            return exc
        conn.close()
        return None

    def one(self, sql: str, params: Any, doing: str) -> Any:
        with self.conn(doing) as conn:
            return conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any, doing: str = "reading") -> list[Any]:
        with self.conn(doing) as conn:
            rows: list[Any] = conn.execute(sql, params).fetchall()
            return rows

    def close(self) -> None:
        if self.pool_open:
            self._pool.close(timeout=2.0)

    # -- the schema -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Check once that the schema is current; create or migrate it in development.

        A current schema costs one read and no DDL (which would queue behind any
        open transaction that enqueued a job, and everything else behind it).
        """
        with self._ready_lock:
            if self.ready:
                return
            pg = self.pg
            try:
                with self.pooled("checking the schema") as conn:
                    version = version_in(conn, self.schema)
                    if version < SCHEMA_VERSION:
                        if not self._development:
                            raise self._outdated(version)
                        upgrade(conn, self.schema)
            except MemQueueError:
                raise
            except (pg.Error, OSError) as exc:
                raise self.error(exc, "checking the schema") from exc
            self.ready = True

    def _outdated(self, version: int) -> SchemaError:
        return SchemaError(
            f"PostgreSQL {self.url} ({self.key}): the memqueue tables in schema"
            f" {self.schema!r} are at version {version}, this flask-memqueue needs"
            f" {SCHEMA_VERSION}: run `flask memqueue db upgrade` (or apply"
            " `flask memqueue db sql` in a migration of your own). Apps with app.debug"
            " or app.testing set create them on first use."
        )

    def upgrade_schema(self) -> tuple[int, int]:
        """Bring the schema to :data:`SCHEMA_VERSION`: ``(version before, version after)``.
        Two processes doing it at once both succeed (the advisory lock serialises them)."""
        pg = self.pg
        try:
            with self.pooled("upgrading the schema") as conn:
                before = upgrade(conn, self.schema)
                after = version_in(conn, self.schema)
        except (pg.Error, OSError) as exc:
            raise self.error(exc, "upgrading the schema") from exc
        self.ready = True
        return before, after

    def schema_version(self) -> int:
        """The version of the memqueue tables in the database (0: none)."""
        pg = self.pg
        try:
            with self.pooled("reading the schema version") as conn:
                return version_in(conn, self.schema)
        except (pg.Error, OSError) as exc:
            raise self.error(exc, "reading the schema version") from exc


#: SQLSTATE class 28, invalid authorization specification (28000: no such role, a pg_hba.conf
#: rejection; 28P01: a wrong password).
_REFUSED_STATES = ("28000", "28P01")
#: What libpq says when the server refuses the client (a connection error carries no SQLSTATE
#: in every psycopg version, so the text is read too).
_REFUSED_TEXTS = ("password authentication failed", "no password supplied", "pg_hba.conf",
                  "role \"", "authentication failed for user", "permission denied for database",
                  "not permitted to log in")


def _refusal(text: str, sqlstate: str | None) -> str | None:
    """Why the server refused this client's credentials, and what to change; None if it did not."""
    lowered = text.lower()
    if sqlstate not in _REFUSED_STATES and not any(t in lowered for t in _REFUSED_TEXTS):
        return None
    if "role" in lowered and "does not exist" in lowered:
        why = "the server refused the credentials: no such role (check the user name in the URL)"
    elif "pg_hba.conf" in lowered:
        why = ("the server refused the credentials: its pg_hba.conf admits no connection of this user to this"
               " database from this host (a rule of the server's, or the wrong user or database)")
    elif "no password supplied" in lowered:
        why = ("the server refused the credentials: it needs a password and none was given (write it in the"
               " URL, postgresql://user:password@host/db, or in MEMQUEUE_STORAGE_OPTIONS)")
    else:
        why = "the server refused the credentials (wrong password or user name)"
    return f"{why}: {text}"


def _outage(text: str) -> str:
    """Why the server cannot be used now, from the driver's (or the pool's) message."""
    lowered = text.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return f"no answer in time (the server is stopped, overloaded, or the network is cut): {text}"
    if "does not exist" in lowered and "database" in lowered:
        return f"the database does not exist: {text}"
    return f"the server is unreachable or closed the connection: {text}"


__all__ = ["Connections", "conninfo"]

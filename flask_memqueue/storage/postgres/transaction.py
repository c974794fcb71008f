"""Jobs in the caller's transaction: the driver connection under a SQLAlchemy session.

``options(session=db.session)`` inserts a job through the connection of the
app's own SQLAlchemy session (or connection), inside its open transaction, so
the job commits or rolls back with the app's data. This module finds that
connection; :meth:`PostgresStorage.put_in_transaction
<flask_memqueue.storage.postgres.store.PostgresStorage.put_in_transaction>`
writes through it. SQLAlchemy is not imported: the objects are recognised by
what they have.
"""

from __future__ import annotations

from typing import Any


def dbapi_connection(session: Any) -> Any:
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


__all__ = ["dbapi_connection"]

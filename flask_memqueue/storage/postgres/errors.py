"""The PostgreSQL store's exceptions. No import of psycopg here:
``flask_memqueue.PostgresUnavailable`` and ``flask_memqueue.SchemaError`` are
importable (and catchable) without loading the driver."""

from __future__ import annotations

from ...exceptions import StorageError, StorageRefused


class PostgresUnavailable(StorageError):
    """The PostgreSQL server cannot be reached or refuses this client (down,
    unreachable, wrong password, no answer in time, connection cut).

    The message names the database's URL with its password replaced by ``***``
    and says which it was. A write whose answer was lost may have been done
    (the statement reached the server, the reply did not come back): every
    write of the store is written so that doing it twice changes nothing more.
    """


class PostgresCredentialsRefused(PostgresUnavailable, StorageRefused):
    """The PostgreSQL server refused this client's credentials: a wrong password,
    a role that does not exist, or a ``pg_hba.conf`` rule that rejects this
    user, database or host.

    A :class:`PostgresUnavailable` (so code that catches outages still catches
    it) and a :class:`~flask_memqueue.StorageRefused`: a configuration error,
    not an outage, that trying again will not cure. ``flask memqueue worker``
    says so once and exits 1 instead of backing off for ever.

    .. versionadded:: 1.1
    """


class SchemaError(StorageError):
    """The database has no memqueue schema, or an older one than this version needs.

    A production app never creates tables by itself: run ``flask memqueue db
    upgrade`` (or paste ``flask memqueue db sql`` into a migration). An app with
    ``app.debug`` or ``app.testing`` set creates them on first use.
    """


__all__ = ["PostgresCredentialsRefused", "PostgresUnavailable", "SchemaError"]

"""The store's tables: a versioned schema, migrated forward.

``memqueue_schema`` lists the versions applied. :data:`MIGRATIONS` are applied
in order, each once, in one transaction under an advisory lock of the
schema, so two processes upgrading at once both succeed; :func:`schema_sql`
is that transaction as text (``flask memqueue db sql``), runnable on any
version. Once the schema is current a process runs no DDL: DDL would wait
behind any open transaction that enqueued a job, and everything else behind it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import workflow_sql

FINISHED_SQL = "('succeeded', 'failed', 'cancelled', 'aborted')"
# Version 1's finished index, as it was created (version 2 replaces it).
_FINISHED_SQL_V1 = "('succeeded', 'failed', 'cancelled')"
LIVE_SQL = "('queued', 'scheduled', 'running')"

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
        f" WHERE status IN {_FINISHED_SQL_V1}",
        "CREATE INDEX memqueue_jobs_unique ON {s}.memqueue_jobs (ns, unique_key)"
        f" WHERE unique_key IS NOT NULL AND status IN {LIVE_SQL}",
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
    (2, "aborts asked of running jobs; the finished index covers aborted jobs", (
        # One row per running job asked to stop (job.abort() in any process), naming the
        # claim it was asked of (the job's token), so a later run of the job never reads it.
        """CREATE TABLE {s}.memqueue_aborts (
    ns text NOT NULL,
    id text NOT NULL,
    token text,
    reason text NOT NULL,
    PRIMARY KEY (ns, id)
)""",
        "DROP INDEX {s}.memqueue_jobs_finished",
        "CREATE INDEX memqueue_jobs_finished ON {s}.memqueue_jobs (ns, finished_at)"
        f" WHERE status IN {FINISHED_SQL}",
    )),
    (3, "paused queues", (
        """CREATE TABLE {s}.memqueue_paused (
    ns text NOT NULL,
    lane text NOT NULL,
    paused_at double precision NOT NULL,
    PRIMARY KEY (ns, lane)
)""",
    )),
    # A job's options without a column of their own (a trace context: flask_memqueue.options), as JSON.
    (4, "job options without a column of their own", (
        "ALTER TABLE {s}.memqueue_jobs ADD COLUMN IF NOT EXISTS options text",
    )),
    # Chains, groups, chords and depends_on: links, counters, group rows, and the release
    # of dependents by a trigger in the statement that records an outcome (workflow_sql.py).
    (5, "workflows: links, counters and group members; dependents released by trigger",
     workflow_sql.MIGRATION),
    # Rate limits (storage/postgres/limits.py): one fixed-window counter per app and key.
    # (5 is reserved for workflows, landing in parallel.)
    (6, "rate-limit windows", (
        """CREATE TABLE IF NOT EXISTS {s}.memqueue_rates (
    ns text NOT NULL,
    key text NOT NULL,
    window_end double precision NOT NULL,
    count integer NOT NULL,
    lim integer NOT NULL,
    period double precision NOT NULL,
    PRIMARY KEY (ns, key)
)""",
    )),
)
#: The schema version this code needs.
SCHEMA_VERSION = MIGRATIONS[-1][0]


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lock_id(schema: str) -> int:
    """The advisory lock that serialises migrations of ``schema`` (a signed 63-bit number)."""
    return int.from_bytes(hashlib.sha1(f"memqueue-schema:{schema}".encode()).digest()[:8], "big") >> 1


def schema_sql(schema: str = "public", *, since: int = 0, transaction: bool = True) -> str:
    """The SQL that brings ``schema`` from version ``since`` to :data:`SCHEMA_VERSION`:
    one transaction, serialised by an advisory lock, each migration applied only
    if ``memqueue_schema`` does not list it yet (so running it twice is harmless).
    What ``flask memqueue db sql`` prints, and what ``db upgrade`` runs."""
    s = ident(schema)
    out = (["BEGIN;"] if transaction else []) + [f"SELECT pg_advisory_xact_lock({lock_id(schema)});"]
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


def version_in(conn: Any, schema: str) -> int:
    """The version of the memqueue tables in ``schema`` (0: none), read on ``conn``."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{ident(schema)}.memqueue_schema",)).fetchone()[0]
    if exists is None:
        return 0
    row = conn.execute(f"SELECT max(version) FROM {ident(schema)}.memqueue_schema").fetchone()
    return int(row[0] or 0)


def upgrade(conn: Any, schema: str) -> int:
    """Apply the missing migrations in one transaction under the schema's advisory lock;
    returns the version found under the lock (what this call started from)."""
    if version_in(conn, schema) >= SCHEMA_VERSION:
        return SCHEMA_VERSION
    # A session lock, then the version in a new transaction (a transaction that began
    # before another process's migration committed could still see its catalogs without it).
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_id(schema),))
    try:
        before = version_in(conn, schema)
        if before < SCHEMA_VERSION:
            conn.execute(schema_sql(schema, since=before))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id(schema),))
    return before


__all__ = ["FINISHED_SQL", "LIVE_SQL", "MIGRATIONS", "SCHEMA_VERSION", "ident", "lock_id", "schema_sql",
           "upgrade", "version_in"]

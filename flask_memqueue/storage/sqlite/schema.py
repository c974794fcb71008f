"""The journal's file: its SQL schema, and opening it with every check at ``init_app``.

A file that cannot work (a folder, a missing or read-only folder, a read-only
file or mount, a damaged database, no WAL mode) is refused when the store
opens, with a :class:`~flask_memqueue.storage.sqlite.errors.JournalError`
naming the file and saying what to do, never at the first enqueue.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from .errors import JournalError

#: Seconds SQLite waits for another process's write lock before giving up.
BUSY_TIMEOUT = 30.0

_FINISHED_SQL = "('succeeded', 'failed', 'cancelled', 'aborted')"
_COLUMNS = (
    "id, task, args, kwargs, status, attempts, enqueued_at, eta,"
    " started_at, finished_at, result, error, traceback, owner, lane, priority, unique_key, tick, options"
)
_STATE_COLUMNS = "status, attempts, eta, started_at, finished_at, result, error, traceback, owner"
_STATE = "status=?, attempts=?, eta=?, started_at=?, finished_at=?, result=?, error=?, traceback=?, owner=?"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memqueue_jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    eta REAL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    traceback TEXT,
    owner TEXT,
    lane TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT,
    tick REAL,
    options TEXT
)
"""
# ``queue`` is the app's name (the namespace, as in 1.x journals); ``lane`` is
# the named queue a job waits in (MEMQUEUE_QUEUES), a column 1.x journals get
# by ALTER TABLE when a newer version opens them.
# Which queues each consuming process consumes, so that another process may
# enqueue to a queue only a worker declares (refreshed every 10 s, believed 60 s).
_CONSUMERS = """
CREATE TABLE IF NOT EXISTS memqueue_consumers (
    queue TEXT NOT NULL,
    lane TEXT NOT NULL,
    owner TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (queue, lane, owner)
)
"""
# Each periodic task's last claimed tick, one row per task (see DurableStorage._claim_tick):
# written in the transaction that inserts the tick's job, and kept after the job
# is pruned, so no process can claim that tick (or an older one) again.
_TICKS = """
CREATE TABLE IF NOT EXISTS memqueue_ticks (
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    tick REAL NOT NULL,
    job_id TEXT,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (queue, task)
)
"""
# Workflows (see docs/workflows.md, "How it scales"). One row per link (child waits on
# parent): written at enqueue, marked done (with the parent's result, for a chain's link
# or a chord's callback) in the transaction that records the parent's outcome. One
# counter row per deferred job: each parent's success decrements it, in that same
# transaction, and the one that brings it to 0 releases the job. One row per group
# member, written once. No row that every completion rewrites.
_LINKS = """
CREATE TABLE IF NOT EXISTS memqueue_links (
    queue TEXT NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    position INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    result TEXT
)
"""
_WAITS = """
CREATE TABLE IF NOT EXISTS memqueue_waits (
    queue TEXT NOT NULL,
    child TEXT NOT NULL,
    remaining INTEGER NOT NULL,
    PRIMARY KEY (queue, child)
)
"""
_GROUPS = """
CREATE TABLE IF NOT EXISTS memqueue_groups (
    queue TEXT NOT NULL,
    grp TEXT NOT NULL,
    idx INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (queue, grp, idx)
)
"""
_WORKFLOW_INDEXES = (
    "CREATE INDEX IF NOT EXISTS memqueue_links_parent ON memqueue_links (queue, parent)",
    "CREATE INDEX IF NOT EXISTS memqueue_links_child ON memqueue_links (queue, child, position)",
    "CREATE INDEX IF NOT EXISTS memqueue_groups_job ON memqueue_groups (queue, job_id)",
    # A job deleted (retention, purge, a delete): its group row, its counter, and the links
    # nobody needs any more, by key (a link to a child still deferred keeps the result it
    # carries; a link whose parent is gone goes with its child). It replaced a sweep of both
    # tables on every prune, which cost 600 ms under the write lock with 100,000 links
    # (benchmarks/journal_prune.py 100000: 600 ms before, now what the same prune costs without links).
    "CREATE TRIGGER IF NOT EXISTS memqueue_forget AFTER DELETE ON memqueue_jobs FOR EACH ROW BEGIN"
    " DELETE FROM memqueue_links WHERE queue = OLD.queue AND parent = OLD.id AND NOT EXISTS (SELECT 1"
    " FROM memqueue_jobs j WHERE j.id = memqueue_links.child AND j.status = 'deferred');"
    " DELETE FROM memqueue_links WHERE queue = OLD.queue AND child = OLD.id AND NOT EXISTS (SELECT 1"
    " FROM memqueue_jobs j WHERE j.id = memqueue_links.parent);"
    " DELETE FROM memqueue_groups WHERE queue = OLD.queue AND job_id = OLD.id;"
    " DELETE FROM memqueue_waits WHERE queue = OLD.queue AND child = OLD.id;"
    " END",
)
# Aborts asked of running jobs (job.abort() in any process): the process that runs
# the job reads its rows while it runs (Storage.abort_requests). A row names the
# attempt it was asked of (its started_at), so a job requeued and run again is not
# stopped by a request its earlier run never read; such rows go with the next request.
_ABORTS = """
CREATE TABLE IF NOT EXISTS memqueue_aborts (
    id TEXT NOT NULL PRIMARY KEY,
    started_at REAL,
    reason TEXT NOT NULL
)
"""
# The paused queues of each app (issue 24): a row per paused queue, read by every
# consuming process every half second (DurableStorage._is_paused).
_PAUSED = """
CREATE TABLE IF NOT EXISTS memqueue_paused (
    queue TEXT NOT NULL,
    lane TEXT NOT NULL,
    paused_at REAL NOT NULL,
    PRIMARY KEY (queue, lane)
)
"""
# Rate and concurrency limits (storage/sqlite/limits.py).
#: The rate windows: one row per app (``queue``) and key.
RATES = """
CREATE TABLE IF NOT EXISTS memqueue_rates (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    window_end REAL NOT NULL,
    count INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    period REAL NOT NULL,
    PRIMARY KEY (queue, key)
)
"""
#: Running rows with options only: what a limited claim counts (plain rows never enter it).
RUNNING_INDEX = (
    "CREATE INDEX IF NOT EXISTS memqueue_jobs_limited ON memqueue_jobs (queue, status)"
    " WHERE status = 'running' AND options IS NOT NULL"
)
_MIGRATIONS = (
    ("lane", "ALTER TABLE memqueue_jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'default'"),
    ("priority", "ALTER TABLE memqueue_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"),
    ("unique_key", "ALTER TABLE memqueue_jobs ADD COLUMN unique_key TEXT"),
    ("tick", "ALTER TABLE memqueue_jobs ADD COLUMN tick REAL"),
    # A job's options without a column of their own (a trace context), as one JSON object.
    ("options", "ALTER TABLE memqueue_jobs ADD COLUMN options TEXT"),
)
_LIVE_SQL = "('queued', 'scheduled', 'running')"
# One index serves both claims of a lane (queued rows have eta NULL, so they
# sort by priority then seq within it; scheduled rows by priority then eta) and
# the counts. Each index costs pages written on every commit, so there is no
# other; 1.x's (queue, status, eta, seq) index is replaced.
_INDEXES = (
    "DROP INDEX IF EXISTS memqueue_jobs_next",
    "CREATE INDEX IF NOT EXISTS memqueue_jobs_claim ON memqueue_jobs (queue, lane, status, priority DESC, eta, seq)",
    # Partial: only live rows with a unique key are in it, so the jobs without
    # one (nearly all) cost it nothing, and a finished row leaves it by itself.
    # Not UNIQUE: a requeued job takes its key back even if another holds it;
    # the check-then-insert of _insert_unique runs under the write lock.
    "CREATE INDEX IF NOT EXISTS memqueue_jobs_unique ON memqueue_jobs (queue, unique_key)"
    f" WHERE unique_key IS NOT NULL AND status IN {_LIVE_SQL}",
    # The queued claim (ORDER BY priority DESC, seq) in index order: with the claim
    # index alone SQLite cannot know that eta, between the two, is NULL in every
    # queued row, so it sorted each claim's whole priority group (EXPLAIN QUERY
    # PLAN: "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY"), a backlog of n jobs
    # costing n^2. Partial: only waiting rows are in it.
    "CREATE INDEX IF NOT EXISTS memqueue_jobs_queued ON memqueue_jobs (queue, lane, priority DESC, seq)"
    " WHERE status = 'queued'",
)

_NAMES = [c.strip() for c in _COLUMNS.split(",")]
#: Where ``priority``, ``eta`` and ``enqueued_at`` are in a ``SELECT seq, {_COLUMNS}`` row.
_PRIORITY = 1 + _NAMES.index("priority")
_ETA = 1 + _NAMES.index("eta")
_ENQUEUED_AT = 1 + _NAMES.index("enqueued_at")
_INSERT = (
    "INSERT INTO memqueue_jobs (id, queue, task, args, kwargs, status, enqueued_at, eta, lane, priority,"
    " unique_key, tick, options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_DAMAGED_ADVICE = (
    "Stop every process that uses it, then restore it from a backup, or move it aside to start with an"
    " empty journal (its jobs are lost then); the sqlite3 shell's .recover may save what can be saved"
)



def due_first(due: tuple[Any, ...], queued: tuple[Any, ...]) -> bool:
    """True if the due scheduled row ``due`` runs before ``queued``, the first queued
    row: a higher priority, or the same and an earlier due time. A queued row's
    due time is its enqueue time (its eta once requeued); it wins a tie."""
    if due[_PRIORITY] != queued[_PRIORITY]:
        return bool(due[_PRIORITY] > queued[_PRIORITY])
    queued_due = queued[_ETA] if queued[_ETA] is not None else queued[_ENQUEUED_AT]
    return bool(due[_ETA] < queued_due)


def connect(path: str, sync: str) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit), usable from any thread."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        _set_wal(conn)
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another process holds the lock.

    Switching a new journal to WAL needs an exclusive lock, and SQLite may answer
    "database is locked" at once instead of calling the busy handler (to avoid a
    deadlock): several workers opening one new journal at the same moment then
    failed at start. Retried for up to ``BUSY_TIMEOUT`` seconds, as any busy lock."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # another process is switching the journal: it takes milliseconds
        pause = min(pause * 2, 0.05)


def check_path(path: str, key: str) -> None:
    """Refuse what SQLite would only call "unable to open database file", or open read-only without a word."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):  # else SQLite says only "unable to open database file"
        raise JournalError(
            f"{key} {path!r} is a folder (not a file); it must name the journal file,"
            f" e.g. {os.path.join(path, 'memqueue.db')!r}"
        )
    if not os.path.isdir(folder):
        raise JournalError(
            f"journal {path!r} ({key}): its folder {folder!r} does not exist (or is not"
            " a folder); create it, or use a path relative to the instance folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JournalError(
            f"journal {path!r} ({key}): its folder {folder!r} is not writable by this"
            " process (SQLite writes the -wal and -shm files next to the journal)"
        )
    for name in (path, path + "-wal", path + "-shm"):
        # SQLite opens a file it may not write read-only, without a word: the
        # first enqueue would fail, and a consumer on every turn.
        if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK):
            raise JournalError(
                f"journal {path!r} ({key}): {name!r} is read-only for this process;"
                f" make it readable and writable by the user the app runs as (chmod u+rw), or point"
                f" {key} at another file"
            )


def create(w: sqlite3.Connection, path: str, key: str) -> None:
    """Check WAL mode, then create the tables and indexes (or bring an older journal up to date)."""
    mode = w.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(
            f"journal {path!r} ({key}): cannot use WAL mode (got {mode!r});"
            " put the journal on a local file system"
        )
    w.execute("BEGIN IMMEDIATE")
    try:
        w.execute(_SCHEMA)
        w.execute(_CONSUMERS)
        w.execute(_TICKS)
        w.execute(_LINKS)
        w.execute(_WAITS)
        w.execute(_GROUPS)
        w.execute(_ABORTS)
        w.execute(_PAUSED)
        w.execute(RATES)
        columns = {row[1] for row in w.execute("PRAGMA table_info(memqueue_jobs)")}
        for column, alter in _MIGRATIONS:
            if column not in columns:
                w.execute(alter)
        for statement in (*_INDEXES, *_WORKFLOW_INDEXES, RUNNING_INDEX):
            w.execute(statement)
        w.execute("COMMIT")
    except BaseException:
        if w.in_transaction:
            w.execute("ROLLBACK")
        raise


def damaged(path: str, key: str, exc: sqlite3.Error) -> JournalError | None:
    """The error for a file SQLite found damaged, or None for another failure."""
    if "malformed" not in str(exc):
        return None
    return JournalError(f"journal {path!r} ({key}): the file is damaged ({exc}). {_DAMAGED_ADVICE}")


def check_usable(conn: sqlite3.Connection, path: str, key: str) -> None:
    """Refuse at init_app a journal that every later write or read would fail on.

    Without this a damaged or read-only file opened fine and failed only
    at run time, on every turn of a consumer. Two cheap checks:

    - a write transaction that changes nothing (``UPDATE ... WHERE 0``
      still asks SQLite for a write lock on the file): catches what
      ``os.access`` cannot see, such as a read-only mount;
    - ``PRAGMA quick_check``: reads every page once (milliseconds for a
      journal of some thousand rows) and finds a page overwritten by
      garbage; the full ``integrity_check`` also compares indexes with
      rows, which costs more than an app start should pay.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE memqueue_jobs SET seq = seq WHERE 0")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise JournalError(
            f"journal {path!r} ({key}): cannot write to it ({exc}); make the file and"
            f" its folder writable by the user the app runs as, or point {key} elsewhere"
        ) from exc
    try:
        found = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        found = [str(exc)]
    if found != ["ok"]:
        shown = "; ".join(str(line) for line in found)[:500]
        raise JournalError(
            f"journal {path!r} ({key}): the file is damaged (PRAGMA quick_check: {shown})."
            f" {_DAMAGED_ADVICE}"
        )

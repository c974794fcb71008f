"""The durable store: a SQLite journal shared by every process of one host.

Turned on by ``MEMQUEUE_JOURNAL``. Only the standard library's :mod:`sqlite3`
is used, in WAL mode, with ``synchronous=NORMAL`` (survives the process dying
at any instant) or ``FULL`` (also survives power loss: one fsync per commit).

**Records, not objects.** A job is one row: queue (the app's name), task
name, JSON arguments, status, attempts, timestamps, eta, JSON result, error,
traceback and owner. Tasks are found again by their registered name, so a
job enqueued before a restart runs after it, in whichever process claims it.

**Group commit.** :meth:`SQLiteStorage.put` returns only once the job's row
is committed. Enqueuers of one process share commits by leader/follower: the
first thread to find no commit in progress becomes the leader and writes
every row queued so far in one transaction; threads arriving meanwhile add
their rows to the next batch and wait; when the leader is done, one of them
leads the next batch. N threads enqueueing at once cost about two commits,
not N, and no extra thread exists (nothing to restart after a fork).

**Claims.** Waiting jobs are a pool shared by every process with the same
queue name; any live consumer may claim one. A claim is one ``BEGIN
IMMEDIATE`` transaction (SQLite's single writer lock makes it atomic across
processes) that also records the consumer's previous job, so the consumer
pays one commit per job. A claimed row gets status ``running`` and
``owner = "<pid>:<start time>:<token>"``: the pid, the process's start time
from ``/proc/<pid>/stat`` (so a reused pid is not mistaken for the dead
owner), and the queue's random per-process token.

**Liveness and take-over.** No heartbeat: an owner is alive while
``os.kill(pid, 0)`` finds its pid, the process is not a zombie, and its start
time is the recorded one. Every consumer checks the owners of ``running``
rows when it starts and then at most every :data:`RECOVER_INTERVAL` seconds;
rows of a dead owner are taken up: the interrupted run counts as an attempt
(it was counted at claim), so the job is retried (after the task's retry
delay) if it has retries left, else marked failed with error
``"interrupted"``. Hence at-least-once: a job that was running (or had run
but was not yet recorded) when its process died runs again; no job runs
twice while its owner lives. A heartbeat would also catch a hung process,
but it would cost a write per process per beat and a lease shorter than the
longest job; a hung process's job stays running until it dies.

**Several apps.** Rows carry the app's name (``app.name``): apps of one name
share jobs, two different apps can share one file without seeing each other's.
Every query, by id too (get, cancel, requeue, refresh, settle), has
``queue=?`` in its WHERE clause: an id from another app is no job here.

**Limits.** ``MEMQUEUE_RESULT_TTL`` and ``MEMQUEUE_MAX_FINISHED`` prune
finished rows (readers in this process see them exactly; other processes
prune within a second). ``MEMQUEUE_MAXSIZE`` is counted in the file, but only
when the room left is near the limit or the count is a second old.

**Wake-up.** A consumer in the enqueuing process is woken at once by an
in-process event set after the commit. Consumers in other processes (a
``flask memqueue worker``, other gunicorn workers) find new rows by polling
the journal every :data:`POLL_INTERVAL` seconds while idle (one indexed
read). :meth:`Job.wait` on a job another process runs polls at the same
interval.

**fork.** A connection must never cross a fork: a child's
:class:`~flask_memqueue.state.AppQueue` makes a new store (a new connection),
and the inherited store is kept referenced (in ``_OPEN``) but never used or
closed in the child: every method checks the pid, and closing the parent's
connection in the child could disturb the parent's locks. A store stays
referenced until :meth:`SQLiteStorage.close` (``shutdown`` calls it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import JournalError, QueueFull, UnknownTaskError
from ..job import Job, JobStatus
from ..registry import Task
from .base import Storage

if TYPE_CHECKING:
    from flask import Flask

    from ..state import AppQueue

#: Seconds an idle consumer waits between two looks at the journal for jobs
#: that other processes enqueued (its own process wakes it at once).
POLL_INTERVAL = 0.2
#: Seconds between two checks for running jobs whose owner process died.
RECOVER_INTERVAL = 1.0
#: Seconds SQLite waits for another process's write lock before giving up.
BUSY_TIMEOUT = 30.0

SCHEDULED = JobStatus.SCHEDULED
RUNNING = JobStatus.RUNNING
_FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"
_FINAL = frozenset({"succeeded", "failed", "cancelled"})
_COLUMNS = (
    "seq, id, queue, task, args, kwargs, status, attempts, enqueued_at, eta,"
    " started_at, finished_at, result, error, traceback, owner"
)
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
    owner TEXT
);
CREATE INDEX IF NOT EXISTS memqueue_jobs_next ON memqueue_jobs (queue, status, eta, seq);
"""
# One index serves both claims (queued rows have eta NULL, so they sort by seq
# within it; scheduled rows sort by eta) and the counts by status. Each index
# costs pages written on every commit, so there is no other.

_DAMAGED_ADVICE = (
    "Stop every process that uses it, then restore it from a backup, or move it aside to start with an"
    " empty journal (its jobs are lost then); the sqlite3 shell's .recover may save what can be saved"
)

#: Every store not yet closed, referenced so that it is never garbage-collected
#: open: a forked child drops its inherited store (AppQueue makes a new one), and
#: a collected store would close its connection there, inside the parent's locks.
_OPEN: set[SQLiteStorage] = set()


# -- processes -----------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no /proc, gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot, or "" where /proc is missing."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def process_alive(pid: int, start: str) -> bool:
    """True if process ``pid`` runs and is the one that started at ``start``.

    A zombie (killed, not yet reaped) is dead: it will never finish a job.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: it exists
        pass
    fields = _proc_stat(pid)
    if fields is None:
        # No /proc (macOS): trust the pid alone. On Linux: it died just now.
        return not os.path.exists("/proc/self/stat")
    if fields[0] in ("Z", "X"):
        return False
    return not start or fields[19] == start


def _parse_owner(owner: str) -> tuple[int, str] | None:
    pid, _, rest = owner.partition(":")
    start, _, _token = rest.partition(":")
    try:
        return int(pid), start
    except ValueError:
        return None


# -- paths ---------------------------------------------------------------------------
def journal_path(app: Flask, journal: str) -> str:
    """Where ``MEMQUEUE_JOURNAL`` points: relative paths are in ``app.instance_path``.

    The instance folder is made if missing (Flask leaves that to the app);
    any other missing folder is an error, since a typo there would
    otherwise create a journal nobody looks at.
    """
    if os.path.isabs(journal):
        return journal
    try:
        os.makedirs(app.instance_path, exist_ok=True)
    except OSError as exc:
        raise JournalError(
            f"cannot create the instance folder {app.instance_path!r} for the journal {journal!r}"
            f" (MEMQUEUE_JOURNAL): {exc}"
        ) from exc
    return os.path.join(app.instance_path, journal)


class _Batch:
    """Rows waiting for one group commit, and what became of each."""

    __slots__ = ("rows", "errors", "done")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.errors: list[BaseException | None] = []
        self.done = False


class _JournalEvent(threading.Event):
    """The waiter of a job that another process may run: waits by polling the journal.

    Set at once when this process finishes the job; otherwise each
    :data:`POLL_INTERVAL` it reads the row, and once the job is finished it
    copies the outcome onto the caller's :class:`Job` and is set.
    """

    def __init__(self, storage: SQLiteStorage, job: Job) -> None:
        super().__init__()
        self._storage = storage
        self._job = job

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, deadline - time.monotonic())
            if super().wait(max(0.0, left)):
                return True
            if self._storage._refresh_if_finished(self._job):
                self.set()
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


class SQLiteStorage(Storage):
    """Job records in a SQLite file that several processes share (see the module docstring).

    :param path: the journal file (made if missing; its folder must exist).
    :param queue: the app's queue: its app's name scopes the rows, its token
        names this process as an owner, its registry finds tasks by name.
    :param sync: ``"normal"`` or ``"full"`` (``PRAGMA synchronous``).
    :param maxsize: waiting jobs (queued + scheduled) at most; 0 = no limit.
    :param max_finished: finished rows of this queue kept at most (0: none).
    :param result_ttl: seconds a finished row is kept.
    :param track_local: keep this process's enqueued :class:`Job` objects so
        its consumer runs the very object ``enqueue`` returned. AppQueue turns
        it off in an enqueue-only app that is not testing, where no local
        consumer would ever run (and drop) them.
    :raises JournalError: the file cannot be opened, is not a SQLite
        database, or cannot be written.
    """

    durable = True

    def __init__(
        self,
        path: str,
        queue: AppQueue,
        *,
        sync: str = "normal",
        maxsize: int = 10_000,
        max_finished: int = 1000,
        result_ttl: float = 3600.0,
        track_local: bool = True,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        self.path = path
        self.queue = queue
        self.name = queue.app.name
        self.sync = sync
        self.maxsize = maxsize
        self.max_finished = max_finished
        self.result_ttl = result_ttl
        self.track_local = track_local
        self._pid = os.getpid()
        #: This process as the owner of the rows it runs.
        self.owner = f"{self._pid}:{process_start_time(self._pid)}:{queue.token}"
        self._tasks = queue.registry.tasks
        # One connection for writes and one for reads, each behind its own lock
        # (WAL lets readers go on while a write commits).
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        # Group commit.
        self._gc = threading.Condition(threading.Lock())
        self._open_batch: _Batch | None = None
        self._leading = False
        # Idle consumer wake-up, and stop.
        self._wakeup = threading.Event()
        self._woken = False
        self._settled = threading.Condition(threading.Lock())
        # Jobs enqueued here and not known to be finished: id -> the Job enqueue returned.
        self._local: dict[str, Job] = {}
        # Waiters by job id: set even if the job's _Outcome was replaced under
        # them (Job.wait() racing the consumer's first touch of a fresh job).
        self._events: dict[str, _JournalEvent] = {}
        self._unsettled: list[Job] = []
        # Ids of jobs this process's consumer claimed and has not yet recorded:
        # their Job objects are ahead of their rows (see _apply_unless_ahead).
        self._held: set[str] = set()
        self._llock = threading.Lock()
        self._next_recover = 0.0
        self._next_prune = 0.0
        # Room left under MEMQUEUE_MAXSIZE as last counted (minus our inserts since).
        self._room: int | None = None
        self._recount = 0.0
        # A job finished here since the last prune: readers prune first, so the
        # limits hold exactly for what this process did (others prune within 1 s).
        self._dirty = False
        self._next_sync = 0.0
        self._open()
        _OPEN.add(self)

    # -- connections --------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> JournalError:
        return JournalError(f"journal {self.path!r} (MEMQUEUE_JOURNAL): {doing} failed: {exc}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.sync.upper()}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> None:
        """Open (creating if need be) and check the file: every error names it, at init_app."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise JournalError(
                f"journal {self.path!r} (MEMQUEUE_JOURNAL): its folder {folder!r} does not exist (or is not"
                " a folder); create it, or use a path relative to the instance folder"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise JournalError(
                f"journal {self.path!r} (MEMQUEUE_JOURNAL): its folder {folder!r} is not writable by this"
                " process (SQLite writes the -wal and -shm files next to the journal)"
            )
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            # SQLite opens a file it may not write read-only, without a word: the
            # first enqueue would fail, and a consumer on every turn (issue 9, defect 8).
            if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK):
                raise JournalError(
                    f"journal {self.path!r} (MEMQUEUE_JOURNAL): {name!r} is read-only for this process;"
                    " make it readable and writable by the user the app runs as (chmod u+rw), or point"
                    " MEMQUEUE_JOURNAL at another file"
                )
        try:
            w = self._connect()
        except sqlite3.Error as exc:
            raise self._error(exc, "opening it") from exc
        try:
            mode = w.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"journal {self.path!r} (MEMQUEUE_JOURNAL): cannot use WAL mode (got {mode!r});"
                    " put the journal on a local file system"
                )
            try:
                w.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            w.execute("SELECT count(*) FROM memqueue_jobs WHERE queue = ? AND status = 'queued'", (self.name,))
            self._check(w)
            r = self._connect()
        except sqlite3.Error as exc:
            w.close()
            if "malformed" in str(exc):
                raise JournalError(
                    f"journal {self.path!r} (MEMQUEUE_JOURNAL): the file is damaged ({exc}). {_DAMAGED_ADVICE}"
                ) from exc
            raise self._error(exc, "opening it (is it a SQLite database, and writable?)") from exc
        except BaseException:
            w.close()
            raise
        self._w, self._r = w, r

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse at init_app a journal that every later write or read would fail on.

        Without this a damaged or read-only file opened fine and failed only
        at run time, where a worker restarted its consumer a thousand times a
        second (issue 9, defect 8). Two cheap checks:

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
                f"journal {self.path!r} (MEMQUEUE_JOURNAL): cannot write to it ({exc}); make the file and"
                " its folder writable by the user the app runs as, or point MEMQUEUE_JOURNAL elsewhere"
            ) from exc
        try:
            found = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.Error as exc:
            found = [str(exc)]
        if found != ["ok"]:
            shown = "; ".join(str(line) for line in found)[:500]
            raise JournalError(
                f"journal {self.path!r} (MEMQUEUE_JOURNAL): the file is damaged (PRAGMA quick_check: {shown})."
                f" {_DAMAGED_ADVICE}"
            )

    def _writer(self) -> sqlite3.Connection:
        """The write connection (lock held). Refused in a forked child, reopened after close()."""
        if self._pid != os.getpid():
            raise JournalError(
                f"journal {self.path!r}: this store belongs to process {self._pid}; a forked child"
                " must make its own (AppQueue does that after os.fork)"
            )
        if self._w is None:
            self._w = self._connect()
        return self._w

    def _reader(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            raise JournalError(f"journal {self.path!r}: this store belongs to process {self._pid}")
        if self._r is None:
            self._r = self._connect()
        return self._r

    def _write(self, fn: Callable[[sqlite3.Connection], Any], doing: str) -> Any:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back and raise JournalError on failure."""
        with self._wlock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    value = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc
            return value

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._rlock:
            try:
                return self._reader().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, "reading") from exc

    def close(self) -> None:
        if self._pid != os.getpid():
            return  # a forked child never closes its parent's connections (and keeps it referenced)
        with self._wlock, self._rlock:
            for conn in (self._w, self._r):
                if conn is not None:
                    conn.close()
            self._w = self._r = None
        _OPEN.discard(self)

    # -- records ------------------------------------------------------------------------
    def _row_of(self, job: Job) -> tuple[Any, ...]:
        """The insert row of a new job; a TypeError names the task and the argument JSON cannot hold."""
        task = job.task
        if self._tasks.get(task.name) is not task:
            raise UnknownTaskError(
                f"{task.name!r} is not a registered task: with MEMQUEUE_JOURNAL set, a job is stored by"
                " its task's name and found again by it (after a restart, or in another process), so"
                " enqueue only functions registered with @mq.task (or their registered names)"
            )
        try:
            args = json.dumps(job.args)
            kwargs = None if not job.kwargs else json.dumps(job.kwargs)
        except (TypeError, ValueError):
            raise TypeError(_json_complaint(task.name, job.args, job.kwargs)) from None
        out = job._out
        eta = out.eta if out is not None and job.status is SCHEDULED else None  # queued rows: eta NULL
        return (job.id, self.name, task.name, args, kwargs, job.status.value, job.enqueued_at, eta)

    def _task(self, name: str) -> Task[..., Any]:
        task = self._tasks.get(name)
        if task is None:
            task = Task(_missing_task(name), name)
        return task

    def _job_of(self, row: Any) -> Job:
        """A Job for a row: this process's own object if it has one, else a new one."""
        (_seq, jid, _q, name, args, kwargs, status, attempts, enqueued_at, eta,
         started_at, finished_at, result, error, tb, _owner) = row
        with self._llock:
            job = self._local.get(jid)
            if job is not None:
                self._apply_unless_ahead(job, row)
                return job
        job = Job(self.queue, jid, self._task(name), tuple(json.loads(args)),
                  json.loads(kwargs) if kwargs else None, enqueued_at)
        _apply(job, status, attempts, eta, started_at, finished_at, result, error, tb)
        return job

    def _apply_unless_ahead(self, job: Job, row: Any) -> None:
        """Copy a row onto an existing Job, unless the object is ahead of the row. ``_llock`` held.

        A reader's row may be older than the object: read just before this
        process's consumer claimed the job, or before it recorded the outcome.
        Copying it then turned a running job back to "queued", or a finished
        one back to "running", and the consumer recorded that: the job ran
        twice, or stayed "running" for ever (found by tests/test_soak.py). So
        the object wins while this process holds the job (claimed, outcome not
        yet recorded), and a finished object only takes a finished row.
        """
        if row[6] not in _FINAL and (job.id in self._held or job.finished):
            return
        _apply_row(job, row)

    def _settle_sql(self, conn: sqlite3.Connection, job: Job) -> None:
        """Record what the consumer made of a job it ran (finished, or a retry). Transaction open."""
        out = job._outcome()
        result = None
        if job.status is JobStatus.SUCCEEDED and out.result is not None:
            try:
                result = json.dumps(out.result)
            except (TypeError, ValueError) as exc:
                job.status = JobStatus.FAILED
                out.error = (
                    f"TypeError: the result of {job.name} is not JSON-serialisable ({exc}); with"
                    " MEMQUEUE_JOURNAL set, results must be JSON values"
                )
                out.result = None
        owner = self.owner if job.status is RUNNING else None
        params = (job.status.value, job.attempts, out.eta if job.status is SCHEDULED else None,
                  out.started_at, out.finished_at, result, out.error, out.traceback, owner, job.id, self.name)
        cur = conn.execute(
            "UPDATE memqueue_jobs SET status=?, attempts=?, eta=?, started_at=?, finished_at=?,"
            " result=?, error=?, traceback=?, owner=? WHERE id=? AND queue=?",
            params,
        )
        if cur.rowcount == 0:  # eager mode: the job never went through put()
            row = self._row_of(job)
            conn.execute(
                "INSERT INTO memqueue_jobs (id, queue, task, args, kwargs, status, enqueued_at, eta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(
                "UPDATE memqueue_jobs SET status=?, attempts=?, eta=?, started_at=?, finished_at=?,"
                " result=?, error=?, traceback=?, owner=? WHERE id=? AND queue=?",
                params,
            )

    def _after_settle(self, job: Job) -> None:
        """Outside the transaction: wake waiters, forget a finished local job."""
        with self._llock:
            self._held.discard(job.id)  # recorded: the row is as new as the object
            if job.status is SCHEDULED:
                return
            self._local.pop(job.id, None)
            event = self._events.pop(job.id, None)
        self._dirty = True
        if event is not None:
            event.set()
        with self._settled:
            self._settled.notify_all()

    # -- enqueue: group commit ------------------------------------------------------------
    def put(self, job: Job) -> None:
        self._enqueue(job)

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        if retry:
            if job.eta is None:
                job._outcome().eta = time.time()
            self._write(lambda conn: self._settle_sql(conn, job), "recording a retry")
            with self._llock:
                self._held.discard(job.id)
            return
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        row = self._row_of(job)  # TypeError / UnknownTaskError before anything is queued
        jid = row[0]
        if self.track_local:
            with self._llock:
                self._local[jid] = job
        gc = self._gc
        with gc:
            batch = self._open_batch
            if batch is None:
                batch = self._open_batch = _Batch()
            index = len(batch.rows)
            batch.rows.append(row)
            batch.errors.append(None)
            while not batch.done:
                if not self._leading:
                    self._leading = True
                    self._open_batch = None  # arrivals from now on go to the next batch
                    break
                gc.wait()
        if not batch.done:  # this thread leads: commit the whole batch
            try:
                self._commit_batch(batch)
            finally:
                with gc:
                    batch.done = True
                    self._leading = False
                    gc.notify_all()
        error = batch.errors[index]
        if error is not None:
            if self.track_local:
                with self._llock:
                    self._local.pop(jid, None)
            raise error
        self._wakeup.set()

    def _commit_batch(self, batch: _Batch) -> None:
        rows = batch.rows

        def insert(conn: sqlite3.Connection) -> None:
            room = self._room
            if self.maxsize and (room is None or room - len(rows) <= self.maxsize // 10 or time.time() > self._recount):
                # Counting costs a scan of the waiting rows: done when the room
                # left is near the limit (so the limit is exact there) or 1 s old.
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled')",
                    (self.name,),
                ).fetchone()
                room = self.maxsize - waiting
                self._recount = time.time() + 1.0
            accepted: list[tuple[Any, ...]] = []
            for i, row in enumerate(rows):
                if room is not None and len(accepted) >= room:
                    batch.errors[i] = QueueFull(
                        f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); {row[2]} was not queued"
                    )
                else:
                    accepted.append(row)
            conn.executemany(
                "INSERT INTO memqueue_jobs (id, queue, task, args, kwargs, status, enqueued_at, eta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                accepted,
            )
            self._room = None if room is None else room - len(accepted)

        try:
            self._write(insert, f"enqueueing {len(rows)} job(s)")
        except BaseException as exc:
            for i in range(len(rows)):
                batch.errors[i] = exc
            # Keep only errors from here on: the waiters raise them.

    # -- the consumer ---------------------------------------------------------------------
    def take(self, timeout: float | None, done: Job | None = None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._claim(done)
        while job is None:
            if self._woken:
                self._woken = False
                return None
            wait = self._idle()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            self._wakeup.wait(wait)
            self._wakeup.clear()
            job = self._claim(None)
        return job

    def _claim(self, done: Job | None) -> Job | None:
        """In one transaction: record ``done``, then claim the next due job (unless woken to stop)."""
        # Jobs whose record failed (disk full...) are recorded with the next one,
        # so a job this live process ran is never left "running" for ever.
        # Kept before anything here can fail (recover() too): see Storage.take.
        pending = self._unsettled
        if done is not None:
            pending.append(done)

        now = time.time()
        if now >= self._next_recover:
            self._next_recover = now + RECOVER_INTERVAL
            self.recover()

        def claim(conn: sqlite3.Connection) -> Any:
            for ran in pending:
                self._settle_sql(conn, ran)
            if self._woken:
                return None
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND status='scheduled' AND eta<=?"
                " ORDER BY eta, seq LIMIT 1",
                (self.name, now),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND status='queued' AND eta IS NULL"
                    " ORDER BY seq LIMIT 1",
                    (self.name,),
                ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE memqueue_jobs SET status='running', owner=?, attempts=attempts+1, started_at=?"
                " WHERE seq=?",
                (self.owner, now, row[0]),
            )
            return row

        row = self._write(claim, "taking a job")
        settled = pending[:]
        pending.clear()
        for ran in settled:
            self._after_settle(ran)
        if row is None:
            return None
        jid = row[1]
        with self._llock:  # readers check _held under this lock: none copies an older row from now on
            self._held.add(jid)
            job = self._local.get(jid)
            if job is not None:
                _apply_row(job, row)  # the claim's own row: the truth
                job.status = RUNNING  # attempts stay as before the claim: the consumer counts this one
                return job
        job = self._job_of(row)
        job.status = RUNNING
        return job

    def _idle(self) -> float:
        """Chores of an idle consumer; returns how long it may sleep."""
        now = time.time()
        if now >= self._next_prune:
            self._next_prune = now + 1.0
            self._prune(now)
        if now >= self._next_sync and self._local:
            self._next_sync = now + 1.0
            self._sync_local()
        rows = self._read(
            "SELECT min(eta) FROM memqueue_jobs WHERE queue=? AND status='scheduled'", (self.name,)
        )
        wait = POLL_INTERVAL
        if rows and rows[0][0] is not None:
            wait = max(0.0, min(wait, rows[0][0] - now))
        return wait

    def finish(self, job: Job) -> None:
        try:
            self._write(lambda conn: self._settle_sql(conn, job), "recording a finished job")
        except JournalError:
            self._unsettled.append(job)  # recorded with the next take
            raise
        self._after_settle(job)

    # -- take-over ------------------------------------------------------------------------
    def recover(self) -> int:
        """Take up the running jobs of dead owner processes; returns how many.

        The interrupted attempt was counted at claim, so a job with retries
        left is retried (after the task's retry delay, as for a failure), and
        one without is failed with ``"interrupted"``.
        """
        owners = self._read(
            "SELECT DISTINCT owner FROM memqueue_jobs WHERE queue=? AND status='running'", (self.name,)
        )
        dead = []
        for (owner,) in owners:
            if owner is None or owner == self.owner:
                continue
            parsed = _parse_owner(owner)
            if parsed is None or not process_alive(*parsed):
                dead.append(owner)
        if not dead:
            return 0

        def take_over(conn: sqlite3.Connection) -> int:
            n = 0
            now = time.time()
            for owner in dead:
                rows = conn.execute(
                    "SELECT seq, task, attempts FROM memqueue_jobs WHERE queue=? AND status='running' AND owner=?",
                    (self.name, owner),
                ).fetchall()
                for seq, name, attempts in rows:
                    task = self._tasks.get(name)
                    if task is None:  # its retries are unknown here: at-least-once wins
                        conn.execute(
                            "UPDATE memqueue_jobs SET status='queued', owner=NULL, eta=NULL,"
                            " error='interrupted: the process running it died' WHERE seq=?",
                            (seq,),
                        )
                    elif attempts <= task.retries:  # a retry like any other, after the task's delay
                        conn.execute(
                            "UPDATE memqueue_jobs SET status='scheduled', owner=NULL, eta=?,"
                            " error='interrupted: the process running it died' WHERE seq=?",
                            (now + task.retry_in(attempts), seq),
                        )
                    else:
                        conn.execute(
                            "UPDATE memqueue_jobs SET status='failed', owner=NULL, error='interrupted',"
                            " traceback=NULL, finished_at=? WHERE seq=?",
                            (now, seq),
                        )
                    n += 1
            return n

        return int(self._write(take_over, "taking up the jobs of a dead process"))

    def _prune(self, now: float) -> None:
        """Forget finished rows of this queue beyond the TTL and the count limit."""

        self._dirty = False

        def prune(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"DELETE FROM memqueue_jobs WHERE queue=? AND status IN {_FINISHED_SQL} AND finished_at <= ?",
                (self.name, now - self.result_ttl),
            )
            conn.execute(  # keep the newest max_finished (0 keeps none, as in memory)
                "DELETE FROM memqueue_jobs WHERE seq IN (SELECT seq FROM memqueue_jobs"
                f" WHERE queue=? AND status IN {_FINISHED_SQL} AND finished_at IS NOT NULL"
                " ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                (self.name, self.max_finished),
            )

        self._write(prune, "forgetting old finished jobs")

    def _sync_local(self) -> None:
        """Drop local jobs another process finished (copying their outcome), 500 at a time."""
        with self._llock:
            ids = list(self._local)[:500]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND id IN ({marks}) AND status IN {_FINISHED_SQL}",
            [self.name, *ids],
        )
        found = {row[1] for row in rows}
        for row in rows:
            job = self._job_of(row)
            self._after_settle(job)
        # Rows gone from the journal (purged): nothing will finish them here. A
        # row is missing too while its enqueue commits (the job is in _local
        # first), which takes at most the busy timeout: younger jobs stay.
        old = time.time() - 2 * BUSY_TIMEOUT
        with self._llock:
            for jid in ids:
                mine = self._local.get(jid)
                if jid in found or mine is None or mine.status is RUNNING or mine.enqueued_at > old:
                    continue
                if not self._read("SELECT 1 FROM memqueue_jobs WHERE id=? AND queue=?", (jid, self.name)):
                    del self._local[jid]

    def _refresh_if_finished(self, job: Job) -> bool:
        rows = self._read(f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE id=? AND queue=?", (job.id, self.name))
        if not rows or rows[0][6] not in ("succeeded", "failed", "cancelled"):
            return False
        _apply_row(job, rows[0])
        with self._llock:
            self._local.pop(job.id, None)
            self._events.pop(job.id, None)
        return True

    # -- single jobs ------------------------------------------------------------------------
    def cancel(self, job: Job) -> bool:
        now = time.time()
        n = self._write(
            lambda conn: conn.execute(
                "UPDATE memqueue_jobs SET status='cancelled', error='cancelled', finished_at=?, eta=NULL"
                " WHERE id=? AND queue=? AND status IN ('queued', 'scheduled')",
                (now, job.id, self.name),
            ).rowcount,
            "cancelling a job",
        )
        if not n:
            self._refresh(job)
            return False
        job.status = JobStatus.CANCELLED
        out = job._outcome()
        out.finished_at = now
        out.error = "cancelled"
        out.eta = None
        self._after_settle(job)
        return True

    def requeue(self, job: Job) -> bool:
        n = self._write(
            lambda conn: conn.execute(
                "UPDATE memqueue_jobs SET status='queued', attempts=0, eta=NULL, started_at=NULL,"
                " finished_at=NULL, result=NULL, error=NULL, traceback=NULL, owner=NULL"
                " WHERE id=? AND queue=? AND status IN ('failed', 'cancelled')",
                (job.id, self.name),
            ).rowcount,
            "queueing a job again",
        )
        if not n:
            self._refresh(job)
            return False
        job._reset_for_requeue()
        if self.track_local:
            with self._llock:
                self._local[job.id] = job
        self._wakeup.set()
        return True

    def refresh(self, job: Job) -> None:
        self._refresh(job)

    def _refresh(self, job: Job) -> None:
        rows = self._read(f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE id=? AND queue=?", (job.id, self.name))
        if rows:
            with self._llock:
                self._apply_unless_ahead(job, rows[0])

    def _visible(self) -> float:
        """Prune if a job finished here since the last time; the cut-off of the result TTL."""
        now = time.time()
        if self._dirty:
            self._prune(now)
        return now - self.result_ttl

    def get(self, job_id: str) -> Job | None:
        # Scoped to this app's rows like every query here: two apps may share
        # one file, and an id from another app must be "no such job", never
        # that app's job (issue 9, defect 10).
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE id=? AND queue=?"
            " AND (finished_at IS NULL OR finished_at > ?)",
            (job_id, self.name, self._visible()),
        )
        if not rows:
            return None
        row = rows[0]
        local = self._local.get(job_id)
        if local is not None and row[6] == "running" and row[15] == self.owner:
            return local  # running here: the object holds progress the row does not
        return self._job_of(row)

    # -- listings ---------------------------------------------------------------------------
    def jobs(self, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        if status is None:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND (finished_at IS NULL OR finished_at > ?)"
                " ORDER BY enqueued_at DESC, seq DESC LIMIT ? OFFSET ?",
                (self.name, self._visible(), limit, offset),
            )
        else:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND status=?"
                " AND (finished_at IS NULL OR finished_at > ?)"
                " ORDER BY enqueued_at DESC, seq DESC LIMIT ? OFFSET ?",
                (self.name, status.value, self._visible(), limit, offset),
            )
        return [self._job_of(row) for row in rows]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        for status, n in self._read(
            "SELECT status, count(*) FROM memqueue_jobs WHERE queue=? AND (finished_at IS NULL OR finished_at > ?)"
            " GROUP BY status",
            (self.name, self._visible()),
        ):
            counts[status] = n
        return counts

    def depth(self) -> int:
        rows = self._read(
            "SELECT count(*) FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled')", (self.name,)
        )
        return int(rows[0][0])

    def _busy(self, due_only: bool = False) -> int:
        if due_only:
            rows = self._read(
                "SELECT count(*) FROM memqueue_jobs WHERE queue=? AND (status IN ('queued', 'running')"
                " OR (status = 'scheduled' AND eta <= ?))",
                (self.name, time.time()),
            )
        else:
            rows = self._read(
                "SELECT count(*) FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled', 'running')",
                (self.name,),
            )
        return int(rows[0][0])

    def purge_finished(self) -> int:
        n = self._write(
            lambda conn: conn.execute(
                f"DELETE FROM memqueue_jobs WHERE queue=? AND status IN {_FINISHED_SQL}", (self.name,)
            ).rowcount,
            "purging finished jobs",
        )
        return int(n)

    def drop_waiting(self) -> list[Job]:
        def drop(conn: sqlite3.Connection) -> list[Any]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled')"
                " ORDER BY seq",
                (self.name,),
            ).fetchall()
            conn.execute(
                "DELETE FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled')", (self.name,)
            )
            return rows

        jobs = [self._job_of(row) for row in self._write(drop, "dropping waiting jobs")]
        with self._llock:
            for job in jobs:
                self._local.pop(job.id, None)
        with self._settled:
            self._settled.notify_all()
        return jobs

    # -- waiting ----------------------------------------------------------------------------
    def join(self, timeout: float | None, *, due_only: bool = False) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._busy(due_only):
                return True
            wait = POLL_INTERVAL
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            with self._settled:
                self._settled.wait(wait)

    def waiter(self, job: Job) -> threading.Event | None:
        if job.finished:
            return None
        with self._llock:
            event = self._events.get(job.id)
            if event is None:
                event = self._events[job.id] = _JournalEvent(self, job)
        return event

    def wake(self) -> None:
        self._woken = True
        self._wakeup.set()

    def wake_from_signal_handler(self) -> None:
        """:meth:`wake` without taking a lock, for a signal handler.

        A handler runs in the main thread between two bytecodes, maybe while
        that thread holds the wake-up event's (non-reentrant) lock: setting
        the event there could deadlock. The flag alone is seen by a sleeping
        :meth:`take` within :data:`POLL_INTERVAL`.
        """
        self._woken = True


def _apply(
    job: Job, status: str, attempts: int, eta: float | None, started_at: float | None,
    finished_at: float | None, result: str | None, error: str | None, tb: str | None,
) -> None:
    """Copy a row's state onto a Job."""
    job.status = JobStatus(status)
    job.attempts = attempts
    if eta is not None or started_at is not None or finished_at is not None or error is not None or result is not None:
        out = job._outcome()
        out.eta = eta
        out.started_at = started_at
        out.finished_at = finished_at
        out.result = None if result is None else json.loads(result)
        out.error = error
        out.traceback = tb


def _apply_row(job: Job, row: Any) -> None:
    _apply(job, row[6], row[7], row[9], row[10], row[11], row[12], row[13], row[14])


def _json_complaint(task: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> str:
    """Which argument of a call JSON cannot hold, for the TypeError at enqueue."""
    which = "an argument"
    bad: Any = None
    for i, value in enumerate(args):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            which, bad = f"argument {i}", value
            break
    else:
        for key, value in (kwargs or {}).items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                which, bad = f"keyword argument {key!r}", value
                break
    shown = repr(bad)
    if len(shown) > 200:
        shown = shown[:200] + "…"
    return (
        f"cannot queue {task}: {which} ({type(bad).__name__}: {shown}) is not JSON-serialisable."
        " With MEMQUEUE_JOURNAL set, arguments must be JSON values (str, int, float, bool, None,"
        " and lists and dicts of them) so that another process can read them back"
    )


def _missing_task(name: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise UnknownTaskError(
            f"no task named {name!r} is registered in process {os.getpid()}: import the module that"
            " defines it in every process that shares the journal (flask memqueue worker included)"
        )

    return missing


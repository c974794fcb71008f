"""The journal's primitives: each one SQL transaction on the file (see the package's docstring).

Everything a cross-process store needs beyond its commands (group commit,
claims that record the previous job, owners and take-over, waiters, the local
job cache) is :class:`~flask_memqueue.storage.durable.DurableStorage`'s.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..base import StoreContext
from ..durable import DurableStorage, Record
from ..limits import limited_text
from .aborts import SQLiteAbortFlags
from .control import JournalControl
from .errors import JournalError
from .limits import JournalLimits
from .schema import (
    _COLUMNS,
    _FINISHED_SQL,
    _INSERT,
    _LIVE_SQL,
    _STATE,
    _STATE_COLUMNS,
    check_path,
    check_usable,
    connect,
    create,
    damaged,
)
from .schema import due_first as _due_first
from .workflows import WorkflowRecords
from .workflows import record as _record

#: Every store not yet closed, referenced so that it is never garbage-collected
#: open: a forked child drops its inherited store (its queue opens a new one),
#: and a collected store would close its connection there, inside the parent's locks.
_OPEN: set[SQLiteStorage] = set()


class SQLiteStorage(SQLiteAbortFlags, JournalControl, JournalLimits, WorkflowRecords, DurableStorage):
    """Job records in a SQLite file that the processes of one host share.

    :raises JournalError: the file cannot be opened, is not a SQLite
        database, or cannot be written (at ``init_app``).
    """

    capabilities = dataclasses.replace(DurableStorage.capabilities, workflows=True, abort_flags=True, limits=True)

    def __init__(self, path: str, context: StoreContext, *, sync: str = "normal", url: str | None = None) -> None:
        super().__init__(url or f"sqlite:///{path}", context)
        self.path = path
        self.sync = sync
        self.key = context.config_key
        # One connection for writes and one for reads, each behind its own lock
        # (WAL lets readers go on while a write commits).
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        # Room left under MEMQUEUE_MAXSIZE as last counted (minus our inserts since).
        self._room: int | None = None
        self._recount = 0.0
        self._open()
        _OPEN.add(self)

    # -- connections --------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> JournalError:
        return JournalError(f"journal {self.path!r} ({self.key}): {doing} failed: {exc}")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.sync)

    def _open(self) -> None:
        """Open (creating if need be) and check the file: every error names it, at init_app."""
        check_path(self.path, self.key)
        try:
            w = self._connect()
        except sqlite3.Error as exc:
            raise self._error(exc, "opening it") from exc
        try:
            create(w, self.path, self.key)
            w.execute("SELECT count(*) FROM memqueue_jobs WHERE queue = ? AND status = 'queued'", (self.namespace,))
            check_usable(w, self.path, self.key)
            r = self._connect()
        except sqlite3.Error as exc:
            w.close()
            raise damaged(self.path, self.key, exc) or self._error(
                exc, "opening it (is it a SQLite database, and writable?)"
            ) from exc
        except BaseException:
            w.close()
            raise
        self._w, self._r = w, r

    def _writer(self) -> sqlite3.Connection:
        """The write connection (lock held). Refused in a forked child, reopened after close()."""
        self._check_process()
        if self._w is None:
            self._w = self._connect()
        return self._w

    def _reader(self) -> sqlite3.Connection:
        self._check_process()
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

    def _close(self) -> None:
        with self._wlock, self._rlock:
            for conn in (self._w, self._r):
                if conn is not None:
                    conn.close()
            self._w = self._r = None
        _OPEN.discard(self)

    # -- the primitives -----------------------------------------------------------------
    def _insert(self, records: list[Record]) -> int:
        ns = self.namespace

        def insert(conn: sqlite3.Connection) -> int:
            room = self._room
            if self.maxsize and (
                room is None or room - len(records) <= self.maxsize // 10 or time.time() > self._recount
            ):
                # Counting costs a scan of the waiting rows: done when the room
                # left is near the limit (so the limit is exact there) or 1 s old.
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM memqueue_jobs WHERE queue=?"
                    " AND status IN ('queued', 'scheduled', 'deferred')", (ns,),
                ).fetchone()
                room = self.maxsize - waiting
                self._recount = time.time() + 1.0
            accepted = records if room is None else records[: max(0, room)]
            conn.executemany(_INSERT, [self._row(r) for r in accepted])
            self._room = None if room is None else room - len(accepted)
            return len(accepted)

        return int(self._write(insert, f"enqueueing {len(records)} job(s)"))

    def _row(self, r: Record) -> tuple[Any, ...]:
        """The values of :data:`_INSERT` for a new record."""
        return (r.id, self.namespace, r.task, r.args, r.kwargs, r.status, r.enqueued_at, r.eta, r.queue, r.priority,
                r.unique_key, r.tick, r.options)

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        ns = self.namespace

        def insert(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND unique_key=? AND unique_key IS NOT NULL"
                f" AND status IN {_LIVE_SQL} ORDER BY seq LIMIT 1",
                (ns, record.unique_key),
            ).fetchone()
            if row is not None:
                return _record(row)
            if full:
                return None
            conn.execute(_INSERT, self._row(record))
            if self._room is not None:
                self._room -= 1
            return record

        return self._write(insert, "enqueueing a job with a unique key")  # type: ignore[no-any-return]

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        ns = self.namespace

        def claim(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT tick FROM memqueue_ticks WHERE queue=? AND task=?", (ns, task)).fetchone()
            if row is not None and row[0] >= tick:
                return False
            conn.execute(
                "INSERT INTO memqueue_ticks (queue, task, tick, job_id, claimed_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (queue, task) DO UPDATE SET tick=excluded.tick, job_id=excluded.job_id,"
                " claimed_at=excluded.claimed_at",
                (ns, task, tick, None if record is None else record.id, now),
            )
            if record is not None:
                conn.execute(_INSERT, self._row(record))
                if self._room is not None:
                    self._room -= 1
            return True

        return bool(self._write(claim, "claiming a periodic tick"))

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        rows = self._read("SELECT task, tick, job_id, claimed_at FROM memqueue_ticks WHERE queue=?", (self.namespace,))
        return {task: (float(tick), job_id, float(claimed)) for task, tick, job_id, claimed in rows}

    def _save_in(self, conn: sqlite3.Connection, r: Record) -> None:
        state = (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback, r.owner)
        cur = conn.execute(f"UPDATE memqueue_jobs SET {_STATE} WHERE id=? AND queue=?", (*state, r.id, self.namespace))
        if cur.rowcount == 0:  # eager mode: the job never went through put()
            conn.execute(
                "INSERT INTO memqueue_jobs (id, queue, task, args, kwargs, enqueued_at, lane, priority, unique_key,"
                f" tick, options, {_STATE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, self.namespace, r.task, r.args, r.kwargs, r.enqueued_at, r.queue, r.priority, r.unique_key,
                 r.tick, r.options, *state),
            )
        self._outcome_in(conn, 1, r)

    def _save(self, record: Record) -> None:
        self._write(lambda conn: self._save_in(conn, record), "recording a job")

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        ns = self.namespace

        def claim(conn: sqlite3.Connection) -> Any:
            for record in settle:
                self._save_in(conn, record)
            if stop():
                return None
            # Two index walks: the best due scheduled row, the best queued row (_due_first).
            due = conn.execute(
                f"SELECT seq, {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND lane=? AND status='scheduled'"
                " AND eta<=? ORDER BY priority DESC, eta, seq LIMIT 1",
                (ns, queue, now),
            ).fetchone()
            row = conn.execute(
                f"SELECT seq, {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND lane=? AND status='queued'"
                " ORDER BY priority DESC, seq LIMIT 1",
                (ns, queue),
            ).fetchone()
            if due is not None and (row is None or _due_first(due, row)):
                row = due
            if row is not None and limited_text(row[-1]):  # a limit: pick again, past the full keys
                # with the time now that the transaction holds the journal: ``now`` was read
                # before waiting for it, and a start must count in the window it happens in
                row = self._limited_row(conn, queue, time.time())
            if row is None:
                return None
            conn.execute(
                "UPDATE memqueue_jobs SET status='running', owner=?, attempts=attempts+1, started_at=? WHERE seq=?",
                (owner, now, row[0]),
            )
            return row[1:]

        row = self._write(claim, "taking a job")
        return None if row is None else _record(row)

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        r = record
        statuses = tuple(from_status)
        marks = ",".join("?" * len(statuses))
        state = (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback, r.owner)
        # queued again (requeue): a new place, at the end of its line, as its due time is now
        again = ", seq=(SELECT max(seq) + 1 FROM memqueue_jobs)" if r.status == "queued" else ""

        return bool(self._write(  # a cancel cancels what waits on the job, in this transaction
            lambda conn: self._outcome_in(conn, conn.execute(
                f"UPDATE memqueue_jobs SET {_STATE}{again} WHERE id=? AND queue=? AND status IN ({marks})",
                (*state, job_id, self.namespace, *statuses),
            ).rowcount, r),
            "changing a job",
        ))

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        r = record
        state = (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback, r.owner)
        return bool(self._write(  # failed for good: what waits on it is cancelled, in this transaction
            lambda conn: self._outcome_in(conn, conn.execute(
                f"UPDATE memqueue_jobs SET {_STATE} WHERE id=? AND queue=? AND status='running' AND owner=?",
                (*state, job_id, self.namespace, owner),
            ).rowcount, r),
            "taking over the jobs of a dead process",
        ))

    def _load(self, job_id: str, visible_after: float | None) -> Record | None:
        if visible_after is None:
            rows = self._read(f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE id=? AND queue=?", (job_id, self.namespace))
        else:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE id=? AND queue=?"
                " AND (finished_at IS NULL OR finished_at > ?)",
                (job_id, self.namespace, visible_after),
            )
        return _record(rows[0]) if rows else None

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        marks = ",".join("?" * len(job_ids))
        extra = f" AND status IN {_FINISHED_SQL}" if finished_only else ""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND id IN ({marks}){extra}",
            (self.namespace, *job_ids),
        )
        return [_record(row) for row in rows]

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        where = ("" if status is None else " AND status=?") + ("" if queue is None else " AND lane=?")
        params: tuple[Any, ...] = (
            (self.namespace,) + (() if status is None else (status,)) + (() if queue is None else (queue,))
        )
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=?{where} AND (finished_at IS NULL OR finished_at > ?)"
            " ORDER BY enqueued_at DESC, seq DESC LIMIT ? OFFSET ?",
            (*params, visible_after, limit, offset),
        )
        return [_record(row) for row in rows]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        lane = "" if queue is None else " AND lane=?"
        rows = self._read(
            f"SELECT status, count(*) FROM memqueue_jobs WHERE queue=?{lane}"
            " AND (finished_at IS NULL OR finished_at > ?) GROUP BY status",
            (self.namespace, *(() if queue is None else (queue,)), visible_after),
        )
        return {status: int(n) for status, n in rows}

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        rows = self._read(
            "SELECT lane, status, count(*) FROM memqueue_jobs WHERE queue=?"
            " AND status IN ('queued', 'scheduled', 'running') GROUP BY lane, status",
            (self.namespace,),
        )
        out: dict[str, dict[str, int]] = {}
        for lane, status, n in rows:
            out.setdefault(lane, {"queued": 0, "scheduled": 0, "running": 0})[status] = int(n)
        return out

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        wanted = tuple(statuses)
        plain = tuple(s for s in wanted if due_before is None or s != "scheduled")
        marks = ",".join("?" * len(plain)) or "NULL"
        lane = "" if queue is None else " AND lane=?"
        sql = f"SELECT count(*) FROM memqueue_jobs WHERE queue=?{lane} AND (status IN ({marks})"
        params: list[Any] = [self.namespace, *(() if queue is None else (queue,)), *plain]
        if due_before is not None and "scheduled" in wanted:
            sql += " OR (status = 'scheduled' AND eta <= ?)"
            params.append(due_before)
        rows = self._read(sql + ")", params)
        return int(rows[0][0])

    def _running_owners(self) -> set[str]:
        rows = self._read(
            "SELECT DISTINCT owner FROM memqueue_jobs WHERE queue=? AND status='running'", (self.namespace,)
        )
        return {owner for (owner,) in rows if owner is not None}

    def _running_of(self, owner: str) -> list[Record]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND status='running' AND owner=?",
            (self.namespace, owner),
        )
        return [_record(row) for row in rows]

    def _prune(self, finished_before: float, keep: int) -> None:
        def prune(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"DELETE FROM memqueue_jobs WHERE queue=? AND status IN {_FINISHED_SQL} AND finished_at <= ?",
                (self.namespace, finished_before),
            )
            conn.execute(  # keep the newest ``keep`` (0 keeps none, as in memory)
                "DELETE FROM memqueue_jobs WHERE seq IN (SELECT seq FROM memqueue_jobs"
                f" WHERE queue=? AND status IN {_FINISHED_SQL} AND finished_at IS NOT NULL"
                " ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                (self.namespace, keep),
            )  # the trigger memqueue_forget (schema.py) drops their workflow rows, by key

        self._write(prune, "forgetting old finished jobs")

    def _purge(self) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            n = conn.execute(
                f"DELETE FROM memqueue_jobs WHERE queue=? AND status IN {_FINISHED_SQL}", (self.namespace,)
            ).rowcount  # the trigger memqueue_forget drops their workflow rows
            return int(n)

        return int(self._write(purge, "purging finished jobs"))

    def _remove_waiting(self) -> list[Record]:
        def drop(conn: sqlite3.Connection) -> list[Any]:
            # Deferred jobs wait too: left behind, they would stay deferred for ever (their parents dropped).
            where = "FROM memqueue_jobs WHERE queue=? AND status IN ('queued', 'scheduled', 'deferred')"
            rows = conn.execute(f"SELECT {_COLUMNS} {where} ORDER BY seq", (self.namespace,)).fetchall()
            conn.execute(f"DELETE {where}", (self.namespace,))  # memqueue_forget drops their workflow rows
            return rows

        return [_record(row) for row in self._write(drop, "dropping waiting jobs")]

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        ns = self.namespace

        def declare(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM memqueue_consumers WHERE queue=? AND (owner=? OR seen_at < ?)",
                         (ns, owner, now - 3600.0))
            conn.executemany("INSERT INTO memqueue_consumers (queue, lane, owner, seen_at) VALUES (?, ?, ?, ?)",
                             [(ns, lane, owner, now) for lane in queues])

        self._write(declare, "declaring queues")

    def _declared(self, seen_after: float) -> set[str]:
        rows = self._read("SELECT DISTINCT lane FROM memqueue_consumers WHERE queue=? AND seen_at > ?",
                          (self.namespace, seen_after))
        return {lane for (lane,) in rows}

    def _next_eta(self, queue: str | None = None) -> float | None:
        if queue is None:
            rows = self._read(
                "SELECT min(eta) FROM memqueue_jobs WHERE queue=? AND status='scheduled'", (self.namespace,)
            )
        else:
            rows = self._read(
                "SELECT min(eta) FROM memqueue_jobs WHERE queue=? AND lane=? AND status='scheduled'",
                (self.namespace, queue),
            )
        return None if not rows or rows[0][0] is None else float(rows[0][0])


__all__ = ["SQLiteStorage"]

"""The journal's primitives of issue 24: many jobs in one transaction, paused queues, search,
deleting finished jobs. A part of :class:`~flask_memqueue.storage.sqlite.store.SQLiteStorage`
(its only user), apart so that each class stays readable.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...jobfilter import JobFilter
from ..durable import Record
from ..sqlfilter import where_of
from .schema import _COLUMNS, _FINISHED_SQL, _INSERT, _STATE
from .workflows import record


class JournalControl(abc.ABC):
    """Issue 24's primitives in SQL, over the journal's connections."""

    namespace: str
    maxsize: int
    _room: int | None
    _recount: float
    #: After a row's write, release or cancel what waits on it (WorkflowRecords._outcome_in).
    _outcome_in: Callable[[sqlite3.Connection, int, Record], bool]

    @abc.abstractmethod
    def _write(self, fn: Callable[[sqlite3.Connection], Any], doing: str) -> Any: ...

    @abc.abstractmethod
    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    @abc.abstractmethod
    def _row(self, r: Record) -> tuple[Any, ...]: ...

    def _insert_all(self, records: list[Record]) -> bool:
        ns = self.namespace

        def insert(conn: sqlite3.Connection) -> bool:
            if self.maxsize:
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM memqueue_jobs WHERE queue=?"
                    " AND status IN ('queued', 'scheduled', 'deferred')", (ns,)
                ).fetchone()
                if waiting + len(records) > self.maxsize:
                    return False
                self._room = self.maxsize - waiting - len(records)
                self._recount = time.time() + 1.0
            conn.executemany(_INSERT, [self._row(r) for r in records])
            return True

        return bool(self._write(insert, f"enqueueing {len(records)} jobs"))

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        ns = self.namespace

        def write(conn: sqlite3.Connection) -> bool:
            if paused:
                sql = "INSERT OR IGNORE INTO memqueue_paused (queue, lane, paused_at) VALUES (?, ?, ?)"
                return bool(conn.execute(sql, (ns, queue, now)).rowcount)
            return bool(conn.execute("DELETE FROM memqueue_paused WHERE queue=? AND lane=?", (ns, queue)).rowcount)

        return bool(self._write(write, "pausing a queue" if paused else "resuming a queue"))

    def _paused(self) -> set[str]:
        return {row[0] for row in self._read("SELECT lane FROM memqueue_paused WHERE queue=?", (self.namespace,))}

    def _select(self, flt: JobFilter, limit: int, offset: int, visible_after: float) -> list[Record]:
        where, params = where_of(flt, mark="?")
        rows = self._read(
            f"SELECT {_COLUMNS} FROM memqueue_jobs WHERE queue=?{where} AND (finished_at IS NULL OR finished_at > ?)"
            " ORDER BY enqueued_at DESC, seq DESC LIMIT ? OFFSET ?",
            (self.namespace, *params, visible_after, limit, offset),
        )
        return [record(row) for row in rows]

    def _count_matching(self, flt: JobFilter, visible_after: float) -> int:
        where, params = where_of(flt, mark="?")
        rows = self._read(
            f"SELECT count(*) FROM memqueue_jobs WHERE queue=?{where} AND (finished_at IS NULL OR finished_at > ?)",
            (self.namespace, *params, visible_after),
        )
        return int(rows[0][0])

    def _delete_finished(self, job_ids: list[str]) -> int:
        ns = self.namespace

        def delete(conn: sqlite3.Connection) -> int:
            marks = ", ".join("?" * len(job_ids))
            return int(conn.execute(
                f"DELETE FROM memqueue_jobs WHERE queue=? AND id IN ({marks}) AND status IN {_FINISHED_SQL}",
                (ns, *job_ids),
            ).rowcount)

        return int(self._write(delete, "deleting jobs"))

    def _transition_many(self, changes: list[tuple[str, tuple[str, ...], Record]]) -> list[bool]:
        """A bulk action's batch in one ``BEGIN IMMEDIATE`` transaction (one fsync, one hold
        of the write lock): each row's ``UPDATE`` conditional on its status, as
        :meth:`_transition`; a cancel cancels what waits on the job in the same transaction."""
        ns = self.namespace

        def change(conn: sqlite3.Connection) -> list[bool]:
            out = []
            for job_id, statuses, r in changes:
                marks = ",".join("?" * len(statuses))
                state = (r.status, r.attempts, r.eta, r.started_at, r.finished_at, r.result, r.error, r.traceback,
                         r.owner)
                again = ", seq=(SELECT max(seq) + 1 FROM memqueue_jobs)" if r.status == "queued" else ""
                rows = conn.execute(
                    f"UPDATE memqueue_jobs SET {_STATE}{again} WHERE id=? AND queue=? AND status IN ({marks})",
                    (*state, job_id, ns, *statuses),
                ).rowcount
                out.append(self._outcome_in(conn, rows, r))
            return out

        return list(self._write(change, "changing jobs"))


__all__ = ["JournalControl"]

"""The primitives of issue 24 on PostgreSQL: many jobs in one transaction, paused queues,
search, and deleting finished jobs. Apart from the claim and insert paths so that those
stay as they are; each primitive here is one statement or one transaction.
"""

from __future__ import annotations

from typing import Any

from ...jobfilter import JobFilter
from ..durable import Record
from ..sqlfilter import where_of
from .connection import Connections
from .records import from_row, insert_row
from .schema import FINISHED_SQL, ident
from .statements import COLUMNS, Statements

#: Rows per INSERT of a batch (each a statement of unnest() arrays).
INSERT_CHUNK = 2000


class Control:
    """The statements of one store's namespace for issue 24's primitives."""

    def __init__(self, connections: Connections, sql: Statements, *, schema: str, namespace: str,
                 channel: str, maxsize: int) -> None:
        self._connections = connections
        self._sql = sql
        self._ns = namespace
        self._channel = channel
        self._maxsize = maxsize
        self._jobs = f"{ident(schema)}.memqueue_jobs"
        self._paused_table = f"{ident(schema)}.memqueue_paused"

    def insert_all(self, records: list[Record]) -> bool:
        """Every record, or none, in one transaction. The count of waiting jobs and the inserts
        run under a transaction-level advisory lock of the namespace's batches, so two batches
        never both fit in the same room."""
        ns = self._ns
        with self._connections.conn(f"enqueueing {len(records)} jobs") as conn, conn.transaction():
            if self._maxsize:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"memqueue-batch:{ns}",))
                (waiting,) = conn.execute(self._sql.count_waiting, (ns,)).fetchone()
                if int(waiting) + len(records) > self._maxsize:
                    return False
            for start in range(0, len(records), INSERT_CHUNK):
                rows = [insert_row(ns, r)[1:] for r in records[start:start + INSERT_CHUNK]]
                conn.execute(self._sql.insert_many,
                             (ns, *[list(c) for c in zip(*rows, strict=True)], self._channel)).fetchone()
        return True

    def set_paused(self, queue: str, paused: bool, now: float) -> bool:
        if paused:
            sql = (f"INSERT INTO {self._paused_table} (ns, lane, paused_at) VALUES (%s, %s, %s)"
                   " ON CONFLICT DO NOTHING")
            params: tuple[Any, ...] = (self._ns, queue, now)
        else:
            sql, params = f"DELETE FROM {self._paused_table} WHERE ns = %s AND lane = %s", (self._ns, queue)
        with self._connections.conn("pausing a queue" if paused else "resuming a queue") as conn:
            return bool(conn.execute(sql, params).rowcount)

    def paused(self) -> set[str]:
        rows = self._connections.all(f"SELECT lane FROM {self._paused_table} WHERE ns = %s", (self._ns,))
        return {lane for (lane,) in rows}

    def select(self, flt: JobFilter, limit: int, offset: int, visible_after: float) -> list[Record]:
        where, params = where_of(flt, mark="%s", like="ILIKE")
        rows = self._connections.all(
            f"SELECT {COLUMNS} FROM {self._jobs} WHERE ns = %s{where}"
            " AND (finished_at IS NULL OR finished_at > %s) ORDER BY enqueued_at DESC, seq DESC LIMIT %s OFFSET %s",
            (self._ns, *params, visible_after, limit, offset), "searching jobs",
        )
        return [from_row(row) for row in rows]

    def count(self, flt: JobFilter, visible_after: float) -> int:
        where, params = where_of(flt, mark="%s", like="ILIKE")
        row = self._connections.one(
            f"SELECT count(*) FROM {self._jobs} WHERE ns = %s{where} AND (finished_at IS NULL OR finished_at > %s)",
            (self._ns, *params, visible_after), "counting jobs",
        )
        return int(row[0])

    def delete_finished(self, job_ids: list[str]) -> int:
        with self._connections.conn("deleting jobs") as conn:
            cur = conn.execute(
                f"DELETE FROM {self._jobs} WHERE ns = %s AND id = ANY(%s) AND status IN {FINISHED_SQL}",
                (self._ns, job_ids),
            )
            return int(cur.rowcount)


__all__ = ["Control"]

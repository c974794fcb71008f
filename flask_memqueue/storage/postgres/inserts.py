"""Inserts: jobs, jobs with a unique key, periodic ticks, and jobs in the caller's transaction.

Every insert is one statement that also notifies each queue that got a job
(``pg_notify``, delivered at commit), and ``ON CONFLICT DO NOTHING``: repeated
after a lost reply it adds nothing. A unique key is serialised by a
transaction advisory lock on the key, then the look-up of its live holder
and the insert in one statement, so two enqueuers racing with one key make one job.

``MEMQUEUE_MAXSIZE`` is counted (a count scans the waiting rows) when the room
left is near the limit or the last count is a second old; in between, this
process's own inserts are taken off the last count.
"""

from __future__ import annotations

import time
from typing import Any

from ..records import Record
from .connection import Connections
from .records import from_row, insert_row
from .statements import UNIQUE_LOCK, Statements

#: The first key of the transaction advisory locks that serialise unique keys.
_UNIQUE_LOCK = 0x6D71  # "mq"


class Inserts:
    """One store's inserts and its count of the room left under ``maxsize`` (0: no bound).

    :param channel: the store's channel of new jobs (``'q:<queue>'``).
    """

    def __init__(self, connections: Connections, sql: Statements, *, namespace: str, channel: str,
                 maxsize: int) -> None:
        self._connections = connections
        self._sql = sql
        self._namespace = namespace
        self._channel = channel
        self._maxsize = maxsize
        self._room: int | None = None
        self._recount = 0.0

    def insert(self, records: list[Record]) -> int:
        """The ``_insert`` primitive: as many of ``records`` as the room allows, in one statement."""
        with self._connections.conn(f"enqueueing {len(records)} job(s)") as conn:
            room = self._room_left(conn, len(records))
            accepted = records if room is None else records[: max(0, room)]
            if not accepted:
                return 0
            ns = self._namespace
            if len(accepted) == 1:
                sql, params = self._sql.insert_one, (*insert_row(ns, accepted[0]), self._channel)
            else:
                rows = [insert_row(ns, r)[1:] for r in accepted]
                sql, params = self._sql.insert_many, (ns, *[list(c) for c in zip(*rows, strict=True)], self._channel)
            conn.execute(sql, params).fetchone()
            self.inserted(len(accepted))
            return len(accepted)

    def inserted(self, n: int) -> None:
        """This process inserted ``n`` waiting jobs since the last count."""
        if self._room is not None:
            self._room -= n

    def _room_left(self, conn: Any, n: int) -> int | None:
        """Room under MEMQUEUE_MAXSIZE: counted when near the limit or a second old
        (a count scans the waiting rows), else the last count minus this process's inserts."""
        if not self._maxsize:
            return None
        room = self._room
        if room is None or room - n <= self._maxsize // 10 or time.time() > self._recount:
            (waiting,) = conn.execute(self._sql.count_waiting, (self._namespace,)).fetchone()
            room = self._room = self._maxsize - int(waiting)
            self._recount = time.time() + 1.0
        return room

    def room_for(self, n: int) -> int | None:
        """:meth:`_room_left` without a connection while the last count is fresh."""
        if not self._maxsize:
            return None
        room = self._room
        if room is None or room - n <= self._maxsize // 10 or time.time() > self._recount:
            with self._connections.conn("counting jobs") as conn:
                return self._room_left(conn, n)
        return room

    def unique(self, record: Record, full: bool) -> Record | None:
        """The ``_insert_unique`` primitive, in a transaction of its own."""
        with (
            self._connections.conn("enqueueing a job with a unique key") as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            found = self._unique(cursor, record, full)
        if found is record:
            self.inserted(1)
        return found

    def _unique(self, cursor: Any, record: Record, full: bool) -> Record | None:
        """Under a transaction lock of the key: the live holder of ``record``'s key, else
        ``record`` inserted (unless ``full``), else None. ``cursor``: a DB-API cursor."""
        ns = self._namespace
        cursor.execute(UNIQUE_LOCK, (_UNIQUE_LOCK, f"{len(ns)}:{ns}:{record.unique_key}"))
        cursor.execute(self._sql.unique, (ns, record.unique_key, *insert_row(ns, record), not full, self._channel))
        row = cursor.fetchone()
        if row[-2]:  # inserted
            return record
        return from_row(row[:-2]) if row[0] is not None else None

    def claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        """The ``_claim_tick`` primitive."""
        with self._connections.conn("claiming a periodic tick") as conn, conn.transaction():
            claimed = conn.execute(self._sql.claim_tick, (self._namespace, task, tick,
                                                          None if record is None else record.id, now)).fetchone()
            if claimed is None:
                return False
            if record is not None:
                conn.execute(self._sql.insert_one, (*insert_row(self._namespace, record), self._channel))
        return True

    def through(self, connection: Any, record: Record, *, full: bool) -> Record | None:
        """Insert ``record`` (or find the live holder of its key) on the caller's DB-API
        connection, in its open transaction: ``_insert_unique``'s answer, nothing committed."""
        pg = self._connections.pg
        try:
            cur = connection.cursor()
            try:
                if record.unique_key is not None:
                    return self._unique(cur, record, full)
                cur.execute(self._sql.insert_one, (*insert_row(self._namespace, record), self._channel))
                return record
            finally:
                cur.close()
        except pg.Error as exc:
            raise self._connections.error(exc, "enqueueing a job in the caller's transaction") from exc


__all__ = ["Inserts"]

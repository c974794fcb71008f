"""Abort requests on SQLite: the table ``memqueue_aborts`` (see ``schema.py``).

A mixin of :class:`~flask_memqueue.storage.sqlite.store.SQLiteStorage`, kept
apart so that the store's class stays readable (tests/test_sizes.py). A row
names the attempt it was asked of (the job's ``started_at``): a job requeued
and run again is not stopped by a request its earlier run never read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

# Requests no run will read (their job stopped, or runs again): gone with the next request.
_PRUNE = (
    "DELETE FROM memqueue_aborts WHERE NOT EXISTS (SELECT 1 FROM memqueue_jobs j WHERE"
    " j.id = memqueue_aborts.id AND j.status='running' AND j.started_at IS memqueue_aborts.started_at)"
)
_REQUEST = (
    "INSERT OR REPLACE INTO memqueue_aborts (id, started_at, reason) SELECT id, started_at, ?"
    " FROM memqueue_jobs WHERE id=? AND queue=? AND status='running'"
)
_READ = (
    "SELECT a.id, a.reason FROM memqueue_aborts a JOIN memqueue_jobs j ON j.id = a.id"
    " WHERE a.id IN ({marks}) AND j.status='running' AND j.started_at IS a.started_at"
)


class SQLiteAbortFlags:
    """``_request_abort`` and ``_abort_requests`` (the capability ``abort_flags``) for SQLite."""

    if TYPE_CHECKING:  # what the store provides
        namespace: str

        def _write(self, fn: Callable[[sqlite3.Connection], Any], doing: str) -> Any: ...

        def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    def _request_abort(self, job_id: str, reason: str) -> bool:
        def request(conn: sqlite3.Connection) -> bool:
            conn.execute(_PRUNE)
            return conn.execute(_REQUEST, (reason, job_id, self.namespace)).rowcount > 0

        return bool(self._write(request, "asking a job to stop"))

    def _abort_requests(self, job_ids: list[str]) -> dict[str, str]:
        rows = self._read(_READ.format(marks=",".join("?" * len(job_ids))), job_ids)
        return {job_id: reason for job_id, reason in rows}

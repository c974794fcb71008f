"""Outcomes and claims: a consumer pays one statement per job.

The usual claim is one statement, one round trip, one commit: the previous
job's outcome (written only while the job still runs for this owner) and
``SELECT ... FOR UPDATE SKIP LOCKED`` of the next due row of the queue (two
partial indexes: queued rows by priority and insertion, scheduled rows by
priority and due time), made running, so any number of workers claim without
waiting for each other. A claim whose reply was lost (the connection cut after
the server ran it) leaves its token; the next claim puts such jobs back at
the head of their queue, in one pipelined transaction with the outcomes it records.

An outcome that finds the job no longer running for this owner was late: the
lease lapsed (or the session with the server ended) and another worker took
the job over. It is discarded (the first outcome recorded stands), logged, and
the store's record is given to the job object (``_discarded_outcome``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ...exceptions import MemQueueError
from ..limits import limited_text
from ..records import Record
from .connection import Connections
from .errors import PostgresUnavailable
from .limits import Limits
from .records import PostgresRecord, from_row, load_in, save_params
from .session import Session
from .statements import Statements

logger = logging.getLogger("flask_memqueue")

#: Tokens of failed claims kept to put their jobs back (a bound, not a tuning knob).
_MAX_FAILED_TOKENS = 64


class Claims:
    """One store's outcome writes and claims. ``session`` knows the jobs running here
    (their progress goes with their outcome) and writes the lease before the first claim."""

    def __init__(self, connections: Connections, sql: Statements, session: Session, *, namespace: str, owner: str,
                 done_channel: str, url: str) -> None:
        self._connections = connections
        self._sql = sql
        self._session = session
        self._namespace = namespace
        self._owner = owner
        self._done_channel = done_channel
        self._url = url
        self._lock = threading.Lock()
        self._discards: dict[str, PostgresRecord] = {}
        self._failed_tokens: list[str] = []
        #: Rate and concurrency limits (:mod:`~flask_memqueue.storage.postgres.limits`), set by the store.
        self.limits: Limits | None = None

    def save_params(self, r: Record) -> dict[str, Any]:
        return save_params(r, self._session.progress(r.id), namespace=self._namespace, owner=self._owner,
                           done_channel=self._done_channel)

    def save(self, record: Record) -> None:
        """The ``_save`` primitive."""
        with self._connections.conn("recording a job") as conn:
            row = conn.execute(self._sql.save, self.save_params(record)).fetchone()
            if not row[0]:
                self._note_discarded(conn, record)
        self._session.untrack([record.id])

    def discarded(self, job_id: str) -> Record | None:
        """The stored record of a job whose outcome written here was discarded (once), or None."""
        with self._lock:
            return self._discards.pop(job_id, None)

    def _note_discarded(self, conn: Any, record: Record) -> None:
        stored = load_in(conn, self._sql, self._namespace, record.id)
        if stored is None or (stored.status == record.status and stored.finished_at == record.finished_at):
            return  # gone, or the very outcome written before (a write repeated after a lost reply)
        logger.warning(
            "job %s (%s): the outcome this process recorded late was discarded; the job is %s in %s:"
            " this process's lease lapsed (or its session with the server ended) and another worker"
            " took it over, so it may run (or have run) again (at-least-once delivery)",
            record.id, stored.task, stored.status, self._url,
        )
        with self._lock:
            self._discards[record.id] = stored

    def claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> PostgresRecord | None:
        """The ``_claim`` primitive."""
        if not self._session.registered:
            self._session.register()
        token = uuid.uuid4().hex[:16]
        with self._lock:
            failed = self._failed_tokens[:]
        claim = {"ns": self._namespace, "lane": queue, "now": now, "me": owner, "token": token}
        try:
            with self._connections.conn("taking a job") as conn:
                if failed or len(settle) > 1:
                    row = self._in_transaction(conn, settle, failed, stop, claim)
                else:  # the usual case: one statement
                    row = self._once(conn, settle[0] if settle else None, stop, claim)
        except MemQueueError as exc:
            if isinstance(exc, PostgresUnavailable):
                with self._lock:  # the next claim puts back what this one may have claimed
                    self._failed_tokens = (self._failed_tokens + [token])[-_MAX_FAILED_TOKENS:]
            raise
        if failed:
            with self._lock:
                self._failed_tokens = [t for t in self._failed_tokens if t not in failed]
        self._session.untrack(r.id for r in settle)
        if row is None:
            return None
        record = from_row(row)
        if self.limits is not None and limited_text(record.options):  # checked before it starts
            found = self.limits.admit(record, claim)
            if found is None:
                return None
            record = found
        self._session.start()
        return record

    def _once(self, conn: Any, done: Record | None, stop: Callable[[], bool], claim: dict[str, Any]) -> Any:
        """The usual claim: the previous job's outcome (if any) and the next claim in one statement."""
        stopped = stop()
        if done is None:
            return None if stopped else conn.execute(self._sql.claim, claim).fetchone()
        if stopped:
            if not conn.execute(self._sql.save, self.save_params(done)).fetchone()[0]:
                self._note_discarded(conn, done)
            return None
        row = conn.execute(self._sql.settle_claim, {**self.save_params(done), **claim}).fetchone()
        if not row[-3]:
            self._note_discarded(conn, done)
        if row[0] is None and row[-1] and row[-3]:
            # A workflow job's outcome: the trigger may have released a child at the end of the
            # statement, after its claim looked. Look once more, so the child runs now, here.
            return conn.execute(self._sql.claim, claim).fetchone()
        return None if row[0] is None else row[:-3]

    def _in_transaction(
        self, conn: Any, settle: list[Record], failed: list[str], stop: Callable[[], bool], claim: dict[str, Any]
    ) -> Any:
        """The rare claim: after a lost claim reply (its jobs go back to the head of their
        queue) or with several outcomes to record. One transaction, pipelined."""
        with conn.pipeline(), conn.transaction():
            if failed:
                conn.execute(self._sql.unclaim, (self._namespace, claim["me"], failed))
            saves = [conn.execute(self._sql.save, self.save_params(r)) for r in settle]
            cur = None if stop() else conn.execute(self._sql.claim, claim)
        written = [c.fetchone() for c in saves]
        row = None if cur is None else cur.fetchone()
        for record, result in zip(settle, written, strict=True):
            if not result[0]:
                self._note_discarded(conn, record)
        return row


__all__ = ["Claims"]

"""The PostgreSQL store: :class:`PostgresStorage`, the primitives of
:class:`~flask_memqueue.storage.durable.DurableStorage` as SQL statements.

What every cross-process store shares (group commit, local job objects,
take-over decided by :meth:`Job.interrupt <flask_memqueue.job.Job.interrupt>`,
waiters) is ``DurableStorage``'s; what PostgreSQL adds is here and in the
modules beside it:

- **Inserts** (``inserts.py``): one statement with its ``NOTIFY``; unique keys
  under a transaction advisory lock of the key.
- **Claims** (``claims.py``) are one statement: ``SELECT ... FOR UPDATE SKIP
  LOCKED`` picks the next due row of a queue and ``UPDATE`` makes it running,
  so any number of workers claim without waiting for each other; the previous
  job's outcome is written in the same statement (one round trip, one
  commit). A claim whose reply was lost is put back at the head of its queue
  by the next claim.
- **Wake-ups** (``consumers.py``, ``session.py``, ``waiting.py``): ``NOTIFY``
  of new jobs to idle consumers, of finished jobs to waiters.
- **Leases and session locks** (``session.py``): the liveness of owners across hosts.
- **Jobs in the caller's transaction** (:meth:`PostgresStorage.put_in_transaction`).
- **Retention** by small deletes along the index of finished rows.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...exceptions import MemQueueError, StorageError
from ...job import Job
from ...jobfilter import JobFilter
from ..base import Capabilities, StoreContext
from ..durable import DurableStorage, Record, _queue_full
from ..limits import LimitUse
from ..waiters import PollingEvent
from .claims import Claims
from .connection import Connections
from .consumers import IdleConsumers
from .control import Control
from .inserts import Inserts
from .limits import Limits
from .options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE, DEFAULT_POOL_SIZE, Settings
from .records import PostgresRecord, from_row, load_in, state_values
from .schema import schema_sql
from .session import Session
from .statements import Statements
from .transaction import dbapi_connection
from .waiting import Watchers
from .workflows import Workflows

#: Seconds between two looks at the table of an idle worker with ``notify=false``.
POLL_WITHOUT_NOTIFY = 0.2
#: Rows one DELETE of the retention removes at most (no long lock, no table-wide scan).
PRUNE_BATCH = 500
#: Batches one pass of the retention deletes at most (the next idle second goes on).
PRUNE_BATCHES = 20


class PostgresStorage(DurableStorage):
    """Job records in PostgreSQL tables that any number of processes and hosts share."""

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True,
        outages_end=True, transactional=True, abort_flags=True, pausable=True, bulk_actions=True,
        workflows=True, limits=True,
    )
    #: With notify, an idle worker is woken by NOTIFY; this bound says how soon a stop
    #: requested from a signal handler is seen (and is the poll without notify).
    idle_wait = 1.0
    #: Waiters are woken by NOTIFY; the poll covers a notification lost in an outage, or not
    #: sent by a worker whose outcome statement began just before the waiter registered.
    waiter_poll_interval = 1.0

    def __init__(
        self, url: str, context: StoreContext, *, schema: str = "public", lease: float = DEFAULT_LEASE,
        pool_size: int = DEFAULT_POOL_SIZE, notify: bool = True, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        libpq: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, context)
        self.schema = schema
        self.lease = lease
        self.notify = notify
        self.key = context.config_key
        self.connect_timeout = connect_timeout
        if not notify:
            self.idle_wait = POLL_WITHOUT_NOTIFY
            self.waiter_poll_interval = POLL_WITHOUT_NOTIFY
        settings = Settings(schema, lease, pool_size, notify, connect_timeout, dict(libpq or {}))
        self.connections = Connections(url, self.url, self.key, settings, name=f"memqueue[{context.namespace}]",
                                       development=context.development, check=self._check_process)
        self.sql = Statements(schema)
        digest = hashlib.sha1(f"{schema}.{self.namespace}".encode()).hexdigest()[:24]
        #: New jobs ("q:<queue>") and wake-ups ("w:"): idle consumer threads listen, each on its own connection.
        self.channel = "memqueue_" + digest
        #: Finished jobs somebody waits for ("d:<id>"): the session thread listens while anything waits.
        self.done_channel = "memqueue_d_" + digest
        self._lock = threading.Lock()
        self._alive: dict[str, bool] = {}
        self._next_owner_sweep = 0.0
        self._closing = threading.Event()
        self.watchers = Watchers(self.connections, self.sql, namespace=self.namespace, owner=self.owner,
                                 refresh=self._refresh_if_finished)
        self.session = Session(
            self.connections, self.sql, namespace=self.namespace, owner=self.owner,
            lock_key=int.from_bytes(hashlib.sha1(self.owner.encode()).digest()[:8], "big") >> 1, lease=lease,
            notify=notify, done_channel=self.done_channel, closing=self._closing, on_new_jobs=self._notify,
            on_finished=self._heard_finished,
        )
        self.claims = Claims(self.connections, self.sql, self.session, namespace=self.namespace, owner=self.owner,
                             done_channel=self.done_channel, url=self.url)
        self.claims.limits = Limits(self.connections, schema, self.namespace)
        self.inserts = Inserts(self.connections, self.sql, namespace=self.namespace, channel=self.channel,
                               maxsize=self.maxsize)
        self.idle = IdleConsumers(self.connections, self.channel, self.doorbell)
        #: Workflows (workflows.py; their release is a trigger: workflow_sql.py).
        self.workflows = Workflows(self.connections, schema=schema, namespace=self.namespace, channel=self.channel,
                                   digest=digest, maxsize=self.maxsize)
        #: Issue 24's primitives: batches, paused queues, search, deletes (control.py).
        self.control = Control(self.connections, self.sql, schema=schema, namespace=self.namespace,
                               channel=self.channel, maxsize=self.maxsize)

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`~flask_memqueue.storage.postgres.errors.PostgresUnavailable` that says why,
        a :class:`~flask_memqueue.storage.postgres.errors.SchemaError`, or a :class:`StorageError`;
        never with the password in it."""
        return self.connections.error(exc, doing)

    def _limit_uses(self, now: float) -> list[LimitUse]:
        return self.claims.limits.uses(now) if self.claims.limits is not None else []

    # -- inserts (inserts.py) --------------------------------------------------------------
    def _insert(self, records: list[Record]) -> int:
        return self.inserts.insert(records)

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        return self.inserts.unique(record, full)

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        return self.inserts.claim_tick(task, tick, record, now)

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        rows = self.connections.all(self.sql.ticks, (self.namespace,))
        return {task: (float(tick), job_id, float(claimed)) for task, tick, job_id, claimed in rows}

    # -- batches, paused queues, search, deletes (control.py) -------------------------------
    def _insert_all(self, records: list[Record]) -> bool:
        inserted = self.control.insert_all(records)
        if inserted:
            self.inserts.inserted(len(records))
        return inserted

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        return self.control.set_paused(queue, paused, now)

    def _paused(self) -> set[str]:
        return self.control.paused()

    def _select(self, flt: JobFilter, limit: int, offset: int, visible_after: float) -> list[Record]:
        return self.control.select(flt, limit, offset, visible_after)

    def _count_matching(self, flt: JobFilter, visible_after: float) -> int:
        return self.control.count(flt, visible_after)

    def _delete_finished(self, job_ids: list[str]) -> int:
        return self.control.delete_finished(job_ids)

    # -- workflows (workflows.py; the release is workflow_sql.py's trigger) --------------------
    def _insert_workflow(self, records: list[Record], links: list[tuple[str, str, int]],
                         groups: list[tuple[str, int, str]], now: float) -> list[str]:
        changed = self.workflows.insert(records, links, groups, now)
        self.inserts.inserted(len(records))
        return changed

    def _dependents(self, job_id: str) -> list[str]:
        return self.workflows.dependents(job_id)

    def _dependents_many(self, job_ids: list[str]) -> dict[str, list[str]]:
        return self.workflows.dependents_many(job_ids)

    def _group_members(self, group_id: str) -> list[Record]:
        return self.workflows.members(group_id)

    def put_in_transaction(self, job: Job, session: Any) -> Job:
        """Insert ``job`` through ``session``'s connection, inside its open transaction.

        ``session``: a SQLAlchemy ``Session`` (Flask-SQLAlchemy's ``db.session``),
        a SQLAlchemy ``Connection``, or a DB-API connection (psycopg 3 or
        psycopg2), on the database of this store. The job exists for nobody else
        until that transaction commits; a rollback leaves no trace of it. Its
        ``NOTIFY`` is part of the same statement, so workers are woken at commit.

        A plain job costs the transaction one statement. With ``job.unique_key``
        it costs two (a transaction-level advisory lock on the key, then the
        look-up and the insert), so two transactions racing with one key make one
        job: the second waits for the first to end, then sees its job; the live
        holder is returned instead (it may be a job of this very transaction).
        ``MEMQUEUE_MAXSIZE`` is checked before, on the store's own connection: jobs
        of transactions still open are not counted.

        :raises QueueFull: the store holds its maximum of waiting jobs.
        """
        room = self.inserts.room_for(1)  # counted on the store's own connection, at most once a second
        if job.unique_key is None and room is not None and room <= 0:
            raise _queue_full(self.maxsize, job.name)
        if not self.connections.ready:
            self.connections.ensure_schema()
        connection = dbapi_connection(session)
        record = self._prepare(job)
        try:
            holder = self.inserts.through(connection, record, full=room is not None and room <= 0)
        except BaseException:
            self.codec.forget(job.id)
            raise
        if holder is None or holder.id != record.id:
            self.codec.forget(job.id)
            if holder is None:
                raise _queue_full(self.maxsize, job.name)
            return self.job_of(holder)
        self.inserts.inserted(1)
        return job

    # -- outcomes and claims (claims.py) ----------------------------------------------------
    def _save(self, record: Record) -> None:
        self.claims.save(record)

    def _discarded_outcome(self, job: Job) -> Record | None:
        return self.claims.discarded(job.id)

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        return self.claims.claim(settle, owner, now, stop, queue)

    def _on_claimed(self, job: Job) -> None:
        self.session.track(job)  # its progress is written while it runs

    def _change(self, sql: str, job_id: str, condition: Any, record: Record, doing: str) -> bool:
        params = (*state_values(record, self.session.progress(record.id)), job_id, self.namespace, condition,
                  self.channel, self.done_channel)
        return bool(self.connections.one(sql, params, doing)[0])

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        sql = self.sql.requeue if record.status == "queued" else self.sql.transition
        return self._change(sql, job_id, list(from_status), record, "changing a job")

    def _transition_many(self, changes: list[tuple[str, tuple[str, ...], Record]]) -> list[bool]:
        """A bulk action's batch in one transaction, its statements sent in one pipeline (one
        round trip, one commit); each row's update conditional on its status, as
        :meth:`_transition`. Row locks only, on the batch's rows: no table-wide lock."""
        with self.connections.conn(f"changing {len(changes)} jobs") as conn, conn.transaction(), conn.pipeline():
            cursors = []
            for job_id, statuses, record in changes:
                sql = self.sql.requeue if record.status == "queued" else self.sql.transition
                params = (*state_values(record, self.session.progress(record.id)), job_id, self.namespace,
                          list(statuses), self.channel, self.done_channel)
                cursors.append(conn.execute(sql, params))
            return [bool(cur.fetchone()[0]) for cur in cursors]  # the first fetch syncs the pipeline

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        return self._change(self.sql.take_over, job_id, owner, record, "taking over the jobs of a dead worker")

    # -- reads ------------------------------------------------------------------------------
    def _load(self, job_id: str, visible_after: float | None) -> PostgresRecord | None:
        with self.connections.conn("reading a job") as conn:
            record = load_in(conn, self.sql, self.namespace, job_id)
        if record is None:
            return None
        if visible_after is not None and record.finished_at is not None and record.finished_at <= visible_after:
            return None
        return record

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        if not job_ids:
            return []
        sql = self.sql.load_many_finished if finished_only else self.sql.load_many
        return [from_row(row) for row in self.connections.all(sql, (self.namespace, job_ids))]

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        rows = self.connections.all(self.sql.list, (self.namespace, status, status, queue, queue, visible_after,
                                                    limit, offset))
        return [from_row(row) for row in rows]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        rows = self.connections.all(self.sql.count, (self.namespace, queue, queue, visible_after))
        return {status: int(n) for status, n in rows}

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for lane, status, n in self.connections.all(self.sql.queue_counts, (self.namespace,)):
            out.setdefault(lane, {"queued": 0, "scheduled": 0, "running": 0})[status] = int(n)
        return out

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        wanted = list(statuses)
        plain = [s for s in wanted if due_before is None or s != "scheduled"]
        due = due_before is not None and "scheduled" in wanted
        row = self.connections.one(self.sql.busy, (self.namespace, queue, queue, plain, due, due_before),
                                   "counting jobs")
        return int(row[0])

    def _next_eta(self, queue: str | None = None) -> float | None:
        row = self.connections.one(self.sql.next_eta, (self.namespace, queue, queue), "reading the next due time")
        return None if row[0] is None else float(row[0])

    def _running_owners(self) -> set[str]:
        """The owners of running jobs, and whether each is alive (read in the same statement:
        see ``statements.running_owners``). Leases and waiters of processes gone quiet long
        ago (killed) are forgotten here too, once a minute: nobody else would."""
        rows = self.connections.all(self.sql.running_owners, (self.namespace, self.namespace))
        self._alive = {owner: bool(alive) for owner, alive in rows if owner is not None}
        now = time.time()
        if now >= self._next_owner_sweep:
            self._next_owner_sweep = now + 60.0
            with self.connections.conn("forgetting old leases") as conn:
                conn.execute(self.sql.forget_old_leases, (self.namespace,))
                conn.execute(self.sql.forget_old_waiters, (self.namespace, now - 3600.0))
        return set(self._alive)

    def _owner_alive(self, owner: str) -> bool:
        return bool(self._alive.get(owner))

    def _request_abort(self, job_id: str, reason: str) -> bool:
        with self.connections.conn("asking a job to stop") as conn:
            conn.execute(self.sql.forget_aborts, (self.namespace,))
            return bool(conn.execute(self.sql.abort, (reason, job_id, self.namespace)).rowcount)

    def _abort_requests(self, job_ids: list[str]) -> dict[str, str]:
        rows = self.connections.all(self.sql.aborts, (self.namespace, job_ids), "reading abort requests")
        return {job_id: reason for job_id, reason in rows}

    def _running_of(self, owner: str) -> list[Record]:
        return [from_row(row) for row in self.connections.all(self.sql.running_of, (self.namespace, owner))]

    # -- retention --------------------------------------------------------------------------
    def _prune(self, finished_before: float, keep: int) -> None:
        """Small DELETEs by the finished index (no table-wide lock, no scan of waiting rows);
        what one pass leaves, the next idle second removes."""
        with self.connections.conn("forgetting old finished jobs") as conn:
            for sql, limit in ((self.sql.prune_before, finished_before), (self.sql.prune_beyond, keep)):
                for _ in range(PRUNE_BATCHES):
                    if conn.execute(sql, (self.namespace, limit, PRUNE_BATCH)).rowcount < PRUNE_BATCH:
                        break

    def _purge(self) -> int:
        total = 0
        with self.connections.conn("purging finished jobs") as conn:
            while True:
                cur = conn.execute(self.sql.purge, (self.namespace,))
                total += int(cur.rowcount)
                if cur.rowcount < 5000:
                    return total

    def _remove_waiting(self) -> list[Record]:
        rows = self.connections.all(self.sql.remove_waiting, (self.namespace,), "dropping waiting jobs")
        return [from_row(row[1:]) for row in sorted(rows, key=lambda r: r[0])]

    # -- declared queues --------------------------------------------------------------------
    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        with self.connections.conn("declaring queues") as conn, conn.transaction():
            conn.execute(self.sql.undeclare, (self.namespace, owner, now - 3600.0))
            if queues:
                conn.execute(self.sql.declare, (self.namespace, owner, now, list(queues)))

    def _declared(self, seen_after: float) -> set[str]:
        return {lane for (lane,) in self.connections.all(self.sql.declared, (self.namespace, seen_after))}

    # -- wake-ups and waiters ---------------------------------------------------------------
    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Wait for a NOTIFY of a new job (any process, at its commit) on this thread's own
        listening connection (``consumers.py``), or :meth:`wake`, or ``timeout``."""
        if not self.notify:
            return super()._sleep(timeout, queue, kicks)
        self.session.start()
        bell = self.doorbell
        if timeout < 0.001 or bell.woken or bell.kicks != kicks or self._closing.is_set():
            return bell.kicks
        return self.idle.sleep(timeout, kicks)

    def wake(self) -> None:
        super().wake()
        self.session.wake()
        if not self._closing.is_set():
            self.idle.wake()  # every consumer blocked in its connection looks again

    def _heard_finished(self, job_id: str | None) -> None:
        """The session thread heard that ``job_id`` finished somewhere (None: any may have)."""
        self.waiters.notify()
        self.watchers.heard(job_id)

    def waiter(self, job: Job) -> threading.Event | None:
        event = super().waiter(job)
        if not isinstance(event, PollingEvent) or not self.notify:
            return event
        self.watchers.watch(event)
        self.session.start()
        if self.session.listening.wait(1.0):
            try:  # finished before the listener heard: nobody will notify it again
                if self._refresh_if_finished(job):
                    event.set()
            except MemQueueError:
                pass  # the event's own poll tries again
        return event

    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        if not self.notify:
            return super().join(timeout, due_only=due_only, queue=queue)
        self.session.start()  # finishes in other processes wake it (NOTIFY), not only its poll
        try:
            self.watchers.want("*")
        except MemQueueError:
            pass  # polls
        try:
            return super().join(timeout, due_only=due_only, queue=queue)
        finally:
            self.watchers.unwant(["*"])

    def job_of(self, record: Record) -> Job:
        job = super().job_of(record)
        if isinstance(record, PostgresRecord) and record.progress is not None and not self.session.runs(record.id):
            try:
                job.set_progress(record.progress, record.message)
            except (TypeError, ValueError):  # pragma: no cover - only this module writes it
                pass
        return job

    # -- the schema -------------------------------------------------------------------------
    def schema_sql(self) -> str:
        """Every migration as one transaction that can run on any version (see :func:`schema_sql`)."""
        return schema_sql(self.schema)

    def upgrade_schema(self) -> tuple[int, int]:
        """Bring the schema to :data:`SCHEMA_VERSION`: ``(version before, version after)``.
        Two processes doing it at once both succeed (the advisory lock serialises them)."""
        return self.connections.upgrade_schema()

    def schema_version(self) -> int:
        """The version of the memqueue tables in the database (0: none)."""
        return self.connections.schema_version()

    # -- closing ----------------------------------------------------------------------------
    def _close(self) -> None:
        self._closing.set()
        self.session.stop(2.0 + self.connect_timeout)
        self.idle.close()  # consumer threads have ended (shutdown joins them first)
        self.session.forget_lease()
        self.connections.close()


__all__ = ["POLL_WITHOUT_NOTIFY", "PostgresStorage"]

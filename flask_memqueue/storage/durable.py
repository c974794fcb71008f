"""What every store shared between processes needs, written once.

A cross-process store (the SQLite journal, Redis, a third party's) keeps
*records*, not objects. :class:`DurableStorage` implements the whole storage
contract over the record primitives a backend implements
(:class:`~flask_memqueue.storage.primitives.Primitives`: SQL, Redis calls),
composing one part per concern, each in its own module:

- **The codec** (:mod:`~flask_memqueue.storage.records`): jobs <-> records
  (JSON arguments and results), and this process's own Job objects: the
  process that enqueued a job keeps the object ``enqueue`` returned, so its
  own consumer runs that very object.
- **Group commit** (:mod:`~flask_memqueue.storage.groupcommit`): enqueuers of
  one process share writes; N threads cost about two writes, not N.
- **Claims** (here): one primitive records the consumer's previous job and
  claims the next due one, so a consumer pays one write per job.
- **Owners and take-over** (:mod:`~flask_memqueue.storage.owners`, and
  :meth:`DurableStorage.recover`): a claimed record names its owner. Every
  consumer checks the owners of running records when it starts and every
  :data:`RECOVER_INTERVAL` s; a dead owner's jobs are taken over as
  :meth:`Job.interrupt <flask_memqueue.job.Job.interrupt>` decides (one
  attempt counted, then the task's retry policy), with a write conditional
  on the record still being that owner's, so two reclaimers never both take a job.
- **Waiters** (:mod:`~flask_memqueue.storage.waiters`): ``Job.wait()`` on a
  job this process finishes is woken at once, whichever object it waits on; a
  job another process runs is polled for every :data:`POLL_INTERVAL` s.
- **Limits** (here): finished records beyond ``result_ttl``/``max_finished``
  are pruned by idle consumers and before reads in a process that finished jobs.

Delivery is at-least-once: a job that was running (or had run but was not
yet recorded) when its process died runs again; no job runs twice while its
owner lives.
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..exceptions import ConfigurationError, MemQueueError, QueueClosed, QueueFull, UnknownTaskError
from ..job import Job, JobStatus, describe_task
from ..jobfilter import JobFilter
from .base import Capabilities, Link, Storage, StoreContext, TickInfo, redact_url
from .groupcommit import GroupCommit
from .housekeeping import Housekeeping
from .limits import LimitUse
from .owners import owner_of_this_process, parse_owner, process_alive, process_start_time
from .primitives import POLL_INTERVAL, Primitives
from .records import FINISHED, WAITING, Codec, Record, copy_outcome, restore
from .takeover import take_over_dead_owners
from .waiters import PollingEvent, Waiters
from .wakeups import Doorbell

#: Seconds a process believes the paused queues it read (a pause made elsewhere is obeyed within it).
PAUSE_POLL = 0.5
#: Seconds between two checks for running jobs whose owner process died.
RECOVER_INTERVAL = 1.0
#: A consuming process says again which queues it consumes this often...
DECLARE_INTERVAL = 10.0
#: ...and another process believes it for this long after the last time.
DECLARED_FOR = 60.0


class _FormerNames:
    """The state of the parts under the names a backend written before ``DurableStorage``
    was split into them uses (its ``_sleep``, ``wake`` or enqueue path), so it keeps working."""

    codec: Codec
    waiters: Waiters
    doorbell: Doorbell

    @property
    def _kicks(self) -> int:
        return self.doorbell.kicks

    @property
    def _woken(self) -> bool:
        return self.doorbell.woken

    @_woken.setter
    def _woken(self, value: bool) -> None:
        self.doorbell.woken = value

    @property
    def _kick(self) -> threading.Condition:
        return self.doorbell.cond

    @property
    def _settled(self) -> threading.Condition:
        """Notified whenever a job settles here (``join()`` sleeps on it)."""
        return self.waiters.settled

    def _unprepare(self, job: Job) -> None:
        """The job's record was not inserted after all: forget it as local."""
        self.codec.forget(job.id)


class _DurableWorkflows(Primitives):
    """Workflows over the record primitives (``_insert_workflow``, ``_dependents``,
    ``_group_members``): a part of :class:`DurableStorage`."""

    codec: Codec
    _closed: bool
    _prepare: Callable[[Job], Record]
    _notify: Callable[[], None]
    job_of: Callable[[Record], Job]

    # -- workflows (a backend that implements _insert_workflow declares capabilities.workflows) --
    def put_workflow(self, jobs: list[Job], links: list[Link]) -> None:
        if self._closed:
            raise QueueClosed(f"the queue was shut down; the workflow's {len(jobs)} jobs were not queued")
        records: list[Record] = []
        try:
            for job in jobs:
                records.append(self._prepare(job))
            groups = [(job.options.group, i, job.id) for i, job in enumerate(j for j in jobs if j.options.group)]
            changed: list[str] = self._guard(
                "enqueueing a workflow", self._insert_workflow, records,
                [tuple(link) for link in links], groups, time.time(),
            )
        except BaseException:
            for record in records:
                self.codec.forget(record.id)
            raise
        if changed:  # a parent had finished already: those jobs were released or cancelled at once
            # Only a cancel is copied onto the local object: a released job may already be
            # claimed, run and settled by a consumer of this process (the same object, and its
            # claim copies the bound arguments), so an older record read here must not overwrite it.
            mine = {job.id: job for job in jobs}
            for record in self._guard("reading", self._load_many, changed, False):
                found = mine.get(record.id)
                if found is not None and record.status == "cancelled" and not found.finished:
                    restore(found, record)
                    self.codec.forget(found.id)
        self._notify()

    def dependents(self, job_id: str) -> list[str]:
        return list(self._guard("reading", self._dependents, job_id))

    def dependents_many(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        return dict(self._guard("reading", self._dependents_many, list(job_ids))) if job_ids else {}

    def group_jobs(self, group_id: str) -> list[Job] | None:
        records = self._guard("reading", self._group_members, group_id)
        return [self.job_of(r) for r in records] or None


class _Steering(Primitives):
    """Issue 24's verbs of a durable store, over its primitives: many jobs in one write,
    paused queues, search and delete. Apart from :class:`DurableStorage` to keep each class
    readable; :class:`DurableStorage` is the only class that uses it."""

    codec: Codec
    doorbell: Doorbell
    maxsize: int
    _paused_seen: set[str]
    _paused_until: float

    @abc.abstractmethod
    def _prepare(self, job: Job) -> Record: ...

    @abc.abstractmethod
    def _notify(self) -> None: ...

    @abc.abstractmethod
    def _visible(self) -> float: ...

    @abc.abstractmethod
    def job_of(self, record: Record) -> Job: ...

    @abc.abstractmethod
    def _after_settle(self, job: Job) -> None: ...

    @abc.abstractmethod
    def _refresh(self, job: Job) -> None: ...

    def act_on_batch(self, action: str, jobs: list[Job], done: Callable[[Job], None] | None = None) -> int:
        """One write of the backend per batch (``capabilities.bulk_actions``): a delete is
        :meth:`_delete_finished` of the batch's ids; a retry or a cancel is decided per job
        on a probe, as :meth:`requeue` and :meth:`cancel` do, and written by
        :meth:`_transition_many`, each conditional on the record's state."""
        if action == "delete":
            ids = [job.id for job in jobs]
            finished = set()  # which ones the delete takes, read first only when someone asks
            if done is not None:
                finished = {r.id for r in self._guard("reading", self._load_many, ids, True)}
            n = int(self._guard("deleting jobs", self._delete_finished, ids))
            for job in jobs:
                self.codec.forget(job.id)
                if job.id in finished and done is not None:
                    done(job)
            return n
        now = time.time()
        retry = action == "retry"
        statuses = ("failed", "cancelled", "aborted") if retry else tuple(WAITING)
        probes, changes = [], []
        for job in jobs:
            probe = self.codec.probe(job)
            if retry:
                probe.reset_for_requeue(now)
            else:
                probe.mark_cancelled(now)
            probes.append(probe)
            changes.append((job.id, statuses, self.codec.record_of(probe)))
        flags = self._guard("queueing jobs again" if retry else "cancelling jobs", self._transition_many, changes)
        n = 0
        for job, probe, changed in zip(jobs, probes, flags, strict=True):
            if not changed:
                self._refresh(job)
                continue
            copy_outcome(probe, job)
            if retry:
                self.codec.requeued(job)
            else:
                self._after_settle(job)
            n += 1
            if done is not None:
                done(job)
        if retry and n:
            self._notify()
        return n

    def put_many(self, jobs: list[Job]) -> None:
        """Every job in one write of the backend (:meth:`_insert_all`): all of them, or none."""
        if not jobs:
            return
        records: list[Record] = []
        try:
            for job in jobs:
                records.append(self._prepare(job))
            inserted = bool(self._guard(f"enqueueing {len(records)} jobs", self._insert_all, records))
        except BaseException:
            for record in records:
                self.codec.forget(record.id)
            raise
        if not inserted:
            for record in records:
                self.codec.forget(record.id)
            raise QueueFull(
                f"MEMQUEUE_MAXSIZE is {self.maxsize}: a batch of {len(jobs)} jobs does not fit beside the"
                " jobs waiting in the store, so none of it was queued"
            )
        self._notify()

    # -- rate and concurrency limits ------------------------------------------------------------
    def limit_uses(self) -> list[LimitUse]:
        return list(self._guard("reading the limits", self._limit_uses, time.time()))

    # -- pause and resume ---------------------------------------------------------------------
    def _is_paused(self, queue: str) -> bool:
        """Whether ``queue`` is paused, as read from the store at most :data:`PAUSE_POLL` s ago
        (so every process obeys a pause made anywhere within that, plus one claim)."""
        now = time.monotonic()
        if now >= self._paused_until:
            self._paused_seen = set(self._guard("reading the paused queues", self._paused))
            self._paused_until = now + PAUSE_POLL
        return queue in self._paused_seen

    def pause(self, queue: str) -> bool:
        changed = bool(self._guard("pausing a queue", self._set_paused, queue, True, time.time()))
        self._paused_until = 0.0  # this process obeys at its next claim
        return changed

    def resume(self, queue: str) -> bool:
        changed = bool(self._guard("resuming a queue", self._set_paused, queue, False, time.time()))
        self._paused_until = 0.0
        self.doorbell.ring()  # this process's idle consumers look again now
        return changed

    def paused(self) -> set[str]:
        return set(self._guard("reading the paused queues", self._paused))

    def delete(self, job: Job) -> bool:
        if not self._guard("deleting a job", self._delete_finished, [job.id]):
            return False
        self.codec.forget(job.id)
        return True

    def find(self, flt: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        records = self._guard("searching jobs", self._select, flt, limit, offset, self._visible())
        return [self.job_of(r) for r in records]

    def count_matching(self, flt: JobFilter) -> int:
        return int(self._guard("counting jobs", self._count_matching, flt, self._visible()))


class DurableStorage(_DurableWorkflows, _Steering, Storage, _FormerNames):
    """Base of the stores that several processes share: the contract, written once,
    over the record primitives a backend implements (the ``_`` abstract methods of
    :class:`~flask_memqueue.storage.primitives.Primitives`).
    """

    capabilities = Capabilities(shared=True, persistent=True, json_only=True, signal_safe_wake=True,
                                reopen_after_fork=True, pausable=True, bulk_actions=True)

    def __init__(self, url: str, context: StoreContext) -> None:
        #: The store's URL as people see it (password redacted); a backend that
        #: needs the password to connect keeps the URL it was given itself.
        self.url = redact_url(url)
        self.context = context
        self.namespace = context.namespace
        self.maxsize = context.maxsize
        self.max_finished = context.max_finished
        self.result_ttl = context.result_ttl
        self.local_jobs = context.local_jobs
        self._pid = os.getpid()
        #: This process as the owner of the records it runs.
        self.owner = owner_of_this_process(context.token)
        #: The parts it composes: the record codec, the group-commit writer, the
        #: waiters, the idle consumers' wake-up, the chores (limits, declared queues).
        self.codec = Codec(context, self.owner, self.url)
        # looked up per write: a test (or a wrapper) may replace the primitive on the instance
        self.writer = GroupCommit(lambda records: self._insert(records), self._wrap, self.maxsize)
        self.waiters = Waiters()
        self.doorbell = Doorbell()
        self.chores = Housekeeping(self, self.codec, self._after_settle, result_ttl=self.result_ttl,
                                   max_finished=self.max_finished, declare_every=DECLARE_INTERVAL)
        self._closed = False
        # Jobs whose record failed (disk full...): recorded with the next claim.
        self._unsettled: list[Job] = []
        self._ulock = threading.Lock()
        self._next_recover = 0.0
        # The paused queues as last read, and until when (monotonic) that read stands.
        self._paused_seen: set[str] = set()
        self._paused_until = 0.0

    # -- hooks with state -------------------------------------------------------------------
    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Wait up to ``timeout`` s for work in ``queue``, unless this process enqueued
        (or :meth:`wake` ran) since the consumer saw the kick generation ``kicks``; returns
        the generation now. A store whose server can block until a job arrives from any
        process (Redis ``BLPOP``) overrides it, so that a consumer wakes within
        milliseconds of another process's enqueue instead of at its next poll."""
        return self.doorbell.sleep(timeout, kicks)

    def _on_claimed(self, job: Job) -> None:  # noqa: B027 - optional hook
        """``job`` was just claimed by a consumer of this process and is about to run.
        A store that tracks running jobs (Redis: its heartbeat writes their progress
        and renews their lease) starts here; the default does nothing."""

    def _check_process(self) -> None:
        if self._pid != os.getpid():
            raise self._error(
                RuntimeError(f"this store belongs to process {self._pid}; a forked child must open its own"),
                "using it after fork",
            )

    # -- records <-> jobs (the codec) -------------------------------------------------------
    def record_of(self, job: Job) -> Record:
        """A job as a record (see :meth:`Codec.record_of <flask_memqueue.storage.records.Codec.record_of>`)."""
        return self.codec.record_of(job)

    def job_of(self, record: Record) -> Job:
        """A Job for a record: this process's own object if it has one, else a new one."""
        return self.codec.job_of(record)

    # -- enqueue ----------------------------------------------------------------------------
    def put(self, job: Job) -> None:
        self._enqueue(job)

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        if retry:
            if job.eta is None:
                job.mark_scheduled(time.time())
            self._write_settle(job, "recording a retry")
            return
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        record = self._prepare(job)
        error = self.writer.write(record)
        if error is not None:
            self.codec.forget(record.id)
            raise error
        self._notify()

    def _prepare(self, job: Job) -> Record:
        """Check a job about to be inserted and make its record; register it as local.

        :raises QueueClosed, UnknownTaskError, TypeError: nothing was inserted.
        """
        if self._closed:
            raise QueueClosed(f"the queue was shut down; {describe_task(job.name)} was not queued")
        task = job.task
        if self.context.task(task.name) is not task:
            raise UnknownTaskError(
                f"{task.name!r} is not a registered task: with a store that other processes share"
                f" ({self.url}), a job is stored by its task's name and found again by it (after a"
                " restart, or in another process), so enqueue only functions registered with @mq.task"
                " (or their registered names)"
            )
        return self.codec.encode_new(job)  # a TypeError before anything is queued

    def _full(self) -> bool:
        """MEMQUEUE_MAXSIZE for the writes outside group commit (unique keys, ticks): a count first."""
        return bool(self.maxsize) and self._guard("reading", self._busy, WAITING, None) >= self.maxsize

    def put_unique(self, job: Job) -> Job:
        if job.unique_key is None:
            raise ValueError("put_unique() needs a job with a unique_key")
        full = self._full()
        record = self._prepare(job)
        try:
            holder: Record | None = self._guard(
                "enqueueing a job with a unique key", self._insert_unique, record, full
            )
        except BaseException:
            self.codec.forget(record.id)
            raise
        if holder is None or holder.id != record.id:
            self.codec.forget(record.id)
            if holder is None:
                raise _queue_full(self.maxsize, job.name)
            return self.job_of(holder)
        self._notify()
        return job

    def claim_tick(self, task: str, tick: float, job: Job | None) -> bool:
        record = None
        if job is not None:
            if self._full():
                raise _queue_full(self.maxsize, job.name)
            record = self._prepare(job)
        try:
            claimed = bool(self._guard("claiming a periodic tick", self._claim_tick, task, tick, record, time.time()))
        except BaseException:
            if record is not None:
                self.codec.forget(record.id)
            raise
        if record is not None:
            if claimed:
                self._notify()
            else:
                self.codec.forget(record.id)
        return claimed

    def last_ticks(self) -> dict[str, TickInfo]:
        rows: dict[str, tuple[float, str | None, float]] = self._guard("reading", self._ticks)
        return {task: TickInfo(*row) for task, row in rows.items()}

    def _notify(self) -> None:
        """Wake this process's idle consumers: a job was queued here."""
        self.doorbell.ring()

    # -- the consumer -----------------------------------------------------------------------
    def take(
        self,
        timeout: float | None,
        done: Job | None = None,
        *,
        queue: str = "default",
        stop: Callable[[], bool] | None = None,
    ) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        stopped = stop if stop is not None else self._is_woken
        kicks = self._kicks
        job = self._take_next(done, queue, stopped)
        while job is None:
            if stop is None:
                if self.doorbell.woken:
                    self.doorbell.woken = False
                    return None
            elif stop():
                return None
            wait = self.chores.idle(queue)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            kicks = self._sleep(wait, queue, kicks)
            job = self._take_next(None, queue, stopped)
        return job

    def _is_woken(self) -> bool:
        return self.doorbell.woken

    def _take_next(self, done: Job | None, queue: str, stop: Callable[[], bool]) -> Job | None:
        """Record ``done`` and claim the next due job, in one write (unless woken to stop)."""
        # Jobs whose record failed (disk full...) are recorded with the next one,
        # so a job this live process ran is never left "running" for ever. Kept
        # before anything here can fail (recover() too): see Storage.take.
        # Several consumer threads share the list: each takes all of it at once.
        with self._ulock:
            pending, self._unsettled = self._unsettled, []
        if done is not None:
            pending.append(done)
        try:
            now = time.time()
            if now >= self._next_recover:
                self._next_recover = now + RECOVER_INTERVAL
                self.recover()
            settle = [self.codec.record_of(ran) for ran in pending]
            if self._is_paused(queue):
                stop = _always  # record what ran, claim nothing
            try:
                record = self._claim(settle, self.owner, now, stop, queue)
            except Exception as exc:
                raise self._wrap(exc, "taking a job") from exc
        except BaseException:
            with self._ulock:
                self._unsettled.extend(pending)
            raise
        for ran in pending:
            self._after_settle(ran)
        if record is None:
            return None
        job = self.codec.claimed(record)
        self._on_claimed(job)
        return job

    def finish(self, job: Job) -> None:
        try:
            self._write_settle(job, "recording a finished job")
        except MemQueueError:
            with self._ulock:
                self._unsettled.append(job)  # recorded with the next take
            raise

    def _write_settle(self, job: Job, doing: str) -> None:
        self._guard(doing, self._save, self.codec.record_of(job))
        self._after_settle(job)

    def _after_settle(self, job: Job) -> None:
        """After a write: wake waiters (with the outcome on their objects), forget a finished local job."""
        stored = self._discarded_outcome(job)
        if stored is not None:  # taken over meanwhile: the store's record is the truth, not this object
            restore(job, stored)
        if self.codec.settled(job):
            self.chores.dirty = True
            self.waiters.finished(job)

    # -- take-over --------------------------------------------------------------------------
    def recover(self) -> int:
        """Take over the running jobs of dead owners; returns how many.

        What happens to each is decided by :meth:`Job.interrupt
        <flask_memqueue.job.Job.interrupt>`; each write is conditional on the
        record still being the dead owner's, so two reclaimers never both
        take a job, and a reclaimer that dies mid-way holds no lock.
        """
        return take_over_dead_owners(self, self.codec)

    # -- housekeeping -----------------------------------------------------------------------
    def _visible(self) -> float:
        return self.chores.visible()

    def _refresh_if_finished(self, job: Job) -> bool:
        record = self._guard("reading", self._load, job.id, None)
        if record is None or record.status not in FINISHED:
            return False
        restore(job, record)
        self.codec.forget(job.id)
        return True

    # -- single jobs ------------------------------------------------------------------------
    # A cancel or a requeue is a write conditional on the record's state: it is decided
    # (by the job's own lifecycle method) on a probe, and the job takes the decision only
    # once the store accepted it, so no reader sees a cancel that did not happen.
    def cancel(self, job: Job) -> bool:
        probe = self.codec.probe(job)
        probe.mark_cancelled(time.time())
        if not self._guard("cancelling a job", self._transition, job.id, WAITING, self.codec.record_of(probe)):
            self._refresh(job)
            return False
        copy_outcome(probe, job)
        self._after_settle(job)
        return True

    def request_abort(self, job_id: str, reason: str) -> bool:
        return bool(self._guard("asking a job to stop", self._request_abort, job_id, reason))

    def abort_requests(self, job_ids: Iterable[str]) -> dict[str, str]:
        ids = list(job_ids)
        if not ids:
            return {}
        return dict(self._guard("reading abort requests", self._abort_requests, ids))

    def requeue(self, job: Job) -> bool:
        probe = self.codec.probe(job)
        probe.reset_for_requeue(time.time())
        record = self.codec.record_of(probe)
        if not self._guard("queueing a job again", self._transition, job.id, ("failed", "cancelled", "aborted"),
                           record):
            self._refresh(job)
            return False
        copy_outcome(probe, job)
        self.codec.requeued(job)
        self._notify()
        return True

    def _refresh(self, job: Job) -> None:
        record = self._guard("reading", self._load, job.id, None)
        if record is not None:
            with self.codec.lock:
                self.codec.restore_unless_ahead(job, record)

    def get(self, job_id: str) -> Job | None:
        known = self.codec.local.get(job_id)  # before the read: its outcome may be written meanwhile
        record = self._guard("reading", self._load, job_id, self._visible())
        if record is None:
            return None
        return known if self.codec.outran(known, record) else self.job_of(record)  # (job_of: ours if any)

    # -- listings ---------------------------------------------------------------------------
    def jobs(
        self, status: JobStatus | None = None, limit: int = 50, offset: int = 0, *, queue: str | None = None
    ) -> list[Job]:
        value = None if status is None else status.value
        records = self._guard("reading", self._list, value, limit, offset, self._visible(), queue)
        return [self.job_of(r) for r in records]

    def queue_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = self._guard("reading", self._queue_counts)
        return counts

    def counts(self, queue: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        counts.update(self._guard("reading", self._count, self._visible(), queue))
        return counts

    def depth(self, queue: str | None = None) -> int:
        return int(self._guard("reading", self._busy, WAITING, None, queue))

    def purge_finished(self) -> int:
        return int(self._guard("purging finished jobs", self._purge))

    def drop_waiting(self) -> list[Job]:
        jobs = [self.job_of(r) for r in self._guard("dropping waiting jobs", self._remove_waiting)]
        for job in jobs:
            self.codec.forget(job.id)
        self.waiters.notify()
        return jobs

    # -- waiting ----------------------------------------------------------------------------
    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            due_before = time.time() if due_only else None  # due_only: jobs scheduled for later do not count
            busy = self._guard("reading", self._busy, ("queued", "running", "scheduled"), due_before, queue)
            if not busy:
                return True
            wait = POLL_INTERVAL
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            self.waiters.sleep(wait)

    def waiter(self, job: Job) -> threading.Event | None:
        if job.finished:
            return None
        event = PollingEvent(job, self._refresh_if_finished, self._waiter_poll)
        self.waiters.add(event)
        return event

    def _waiter_poll(self) -> float:
        return self.waiter_poll_interval

    def wake(self) -> None:
        self.doorbell.ring_to_stop()

    def wake_from_signal_handler(self) -> None:
        """:meth:`wake` without taking a lock, for a signal handler.

        A handler runs in the main thread between two bytecodes, maybe while
        that thread holds the wake-up event's (non-reentrant) lock: setting
        the event there could deadlock. The flag alone is seen by a sleeping
        :meth:`take` within :data:`POLL_INTERVAL`.
        """
        self.doorbell.woken = True

    def declare_queues(self, queues: Iterable[str]) -> None:
        self.chores.declare(tuple(sorted(set(queues))))

    def known_queues(self) -> set[str]:
        return set(self._guard("reading", self._declared, time.time() - DECLARED_FOR))

    def close(self) -> None:
        if self._pid != os.getpid():
            return  # a forked child never closes its parent's connections
        self.chores.undeclare()
        self._closed = True
        self._close()


def _always() -> bool:
    return True


#: The waiter event under the name backends imported it by.
_PollingEvent = PollingEvent


def _queue_full(maxsize: int, task: str) -> QueueFull:
    return QueueFull(
        f"the queue holds {maxsize} waiting jobs (MEMQUEUE_MAXSIZE); {describe_task(task)} was not queued"
    )


def check_options(options: Mapping[str, Any], known: Mapping[str, str], url: str) -> None:
    """Refuse an option the backend does not know, naming where options come from."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = ", ".join(f"{k} ({v})" for k, v in known.items()) or "none"
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS: unknown option(s) {', '.join(map(repr, unknown))}"
            f" for {redact_url(url)}; this backend takes: {listing}"
        )


__all__ = [
    "FINISHED",
    "POLL_INTERVAL",
    "RECOVER_INTERVAL",
    "WAITING",
    "DurableStorage",
    "Record",
    "check_options",
    "parse_owner",
    "process_alive",
    "process_start_time",
]

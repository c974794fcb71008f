"""What every store shared between processes needs, written once.

A cross-process store (the SQLite journal; Redis next) keeps *records*, not
objects: another process reads them back, so a job is its task's name, JSON
arguments and its state. Around those records every such store needs the
same machinery, which lives here so that a backend is only its storage
commands (SQL, Redis calls) behind the primitives of :class:`DurableStorage`:

- **Job objects.** The process that enqueued a job keeps the object
  ``enqueue`` returned (``local_jobs``), so its own consumer runs that very
  object and ``job.result`` fills in without a read; any other job is made
  from its record, with the task found by name.
- **Group commit.** Enqueuers of one process share writes: the first thread
  to find none in progress leads and writes every record queued so far in one
  write; threads arriving meanwhile join the next batch. N threads cost about
  two writes, not N, and no extra thread exists (nothing to restart after fork).
- **Claims.** One primitive records the consumer's previous job and claims
  the next due one, so a consumer pays one write per job.
- **Owners and take-over.** A claimed record names its owner
  ``"<pid>:<start time>:<token>"``. Every consumer checks the owners of
  running records when it starts and every :data:`RECOVER_INTERVAL` s; a
  dead owner's jobs are taken over as :meth:`Job.interrupt
  <flask_memqueue.job.Job.interrupt>` decides (one attempt counted, then the
  task's retry policy), with a write conditional on the record still being
  that owner's, so two reclaimers never both take a job.
- **Waiters.** ``Job.wait()`` on a job this process finishes is woken at
  once, whichever object it waits on (the outcome is copied onto it); a job
  another process runs is polled for every :data:`POLL_INTERVAL` s.
- **Limits.** Finished records beyond ``result_ttl``/``max_finished`` are
  pruned by idle consumers and before reads in a process that finished jobs.

Delivery is at-least-once: a job that was running (or had run but was not
yet recorded) when its process died runs again; no job runs twice while its
owner lives.
"""

from __future__ import annotations

import abc
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError, MemQueueError, QueueClosed, QueueFull, StorageError, UnknownTaskError
from ..job import Job, JobStatus, describe_task
from .base import Capabilities, Storage, StoreContext, TickInfo, redact_url

#: Seconds an idle consumer waits between two looks at the store for jobs
#: that other processes enqueued (its own process wakes it at once).
POLL_INTERVAL = 0.2
#: Seconds between two checks for running jobs whose owner process died.
RECOVER_INTERVAL = 1.0
#: A local job whose record is missing this long after its enqueue was purged.
LOCAL_GRACE = 60.0
#: A consuming process says again which queues it consumes this often...
DECLARE_INTERVAL = 10.0
#: ...and another process believes it for this long after the last time.
DECLARED_FOR = 60.0

RUNNING = JobStatus.RUNNING
SCHEDULED = JobStatus.SCHEDULED
SUCCEEDED = JobStatus.SUCCEEDED
#: Argument types a JSON round trip gives back unchanged (NaN and infinities are refused before).
_PLAIN = (str, int, float, bool, type(None))
FINISHED = ("succeeded", "failed", "cancelled")
WAITING = ("queued", "scheduled")


@dataclass(slots=True)
class Record:
    """One job as a cross-process store keeps it: plain values and JSON text only."""

    id: str
    task: str
    args: str  # JSON array
    kwargs: str | None  # JSON object, or None for no keywords
    status: str
    attempts: int
    enqueued_at: float
    eta: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None  # JSON
    error: str | None = None
    traceback: str | None = None
    owner: str | None = None
    #: The named queue the record waits in; a consumer claims from its own queue only.
    queue: str = "default"
    #: -100..100; higher is claimed first within its queue.
    priority: int = 0
    #: While the record is live (queued, scheduled, running), no other record of
    #: its namespace with this key may be inserted by :meth:`DurableStorage._insert_unique`.
    unique_key: str | None = None
    #: For a periodic task's job: the Unix time of the tick it was queued for.
    tick: float | None = None


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


def parse_owner(owner: str) -> tuple[int, str] | None:
    """``(pid, start time)`` of an owner string, or None if it is not one."""
    pid, _, rest = owner.partition(":")
    start, _, _token = rest.partition(":")
    try:
        return int(pid), start
    except ValueError:
        return None


class _Batch:
    """Records waiting for one group write, and what became of each."""

    __slots__ = ("records", "errors", "done")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.errors: list[BaseException | None] = []
        self.done = False


class _PollingEvent(threading.Event):
    """The waiter of one ``Job.wait()`` call on a job another process may run.

    Set at once when this process finishes the job (its outcome is copied onto
    the waiting object first); otherwise every :data:`POLL_INTERVAL` it reads
    the record, and once the job is finished copies the outcome and is set.
    """

    def __init__(self, storage: DurableStorage, job: Job) -> None:
        super().__init__()
        self._storage = storage
        self.job = job

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = self._storage.waiter_poll_interval
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            if super().wait(max(0.0, left)):
                return True
            if self._storage._refresh_if_finished(self.job):
                self.set()
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


class DurableStorage(Storage):
    """Base of the stores that several processes share: the contract, written once,
    over the record primitives a backend implements (the ``_`` abstract methods).

    Every primitive is one atomic step of the backend (a transaction, a
    script); the namespace (the app's name) scopes every one of them, so two
    apps sharing a file or a server never see each other's jobs.
    """

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True
    )

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
        self.owner = f"{self._pid}:{process_start_time(self._pid)}:{context.token}"
        # Group commit.
        self._gc = threading.Condition(threading.Lock())
        self._open_batch: _Batch | None = None
        self._leading = False
        # Idle consumers' wake-up: a generation bumped by every local enqueue,
        # so a consumer that looked at the store before the bump never sleeps
        # through it (several threads may wait; an Event cleared by one would
        # leave another asleep for a poll interval).
        self._kick = threading.Condition(threading.Lock())
        self._kicks = 0
        self._woken = False
        self._closed = False
        self._settled = threading.Condition(threading.Lock())
        # Jobs enqueued here and not known to be finished: id -> the Job enqueue returned.
        self._local: dict[str, Job] = {}
        # Waiters by job id (one per Job.wait() call, each bound to its own object).
        self._events: dict[str, list[_PollingEvent]] = {}
        self._unsettled: list[Job] = []
        # Jobs this process's consumer claimed and has not yet recorded: their
        # Job objects are ahead of their records (see _restore_unless_ahead).
        # By id, the claimed record's JSON arguments: recording the outcome
        # needs them (a record is whole) without encoding them again.
        self._held: dict[str, tuple[str, str | None]] = {}
        self._llock = threading.Lock()
        self._next_recover = 0.0
        self._next_declare = 0.0
        self._declared_here: tuple[str, ...] = ()
        self._next_prune = 0.0
        self._next_sync = 0.0
        # A job finished here since the last prune: readers prune first, so the
        # limits hold exactly for what this process did (others prune within 1 s).
        self._dirty = False

    # -- the primitives a backend implements ----------------------------------------------
    @abc.abstractmethod
    def _insert(self, records: list[Record]) -> int:
        """Add ``records`` (status queued or scheduled) in one write, in order, as many
        as ``maxsize`` allows; return how many were added (a prefix of the list)."""

    @abc.abstractmethod
    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        """In one write: save ``settle`` (as :meth:`_save`), then, unless ``stop()``,
        make the next due record of ``queue`` running (owner ``owner``, attempts + 1,
        started ``now``) and return it as it was before: the highest priority
        first; within a priority, due scheduled records (by eta, then insertion)
        before queued ones (in insertion order)."""

    @abc.abstractmethod
    def _save(self, record: Record) -> None:
        """Overwrite the state of ``record`` (matched by id); insert it if missing."""

    @abc.abstractmethod
    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        """Overwrite the state of ``job_id`` with ``record``'s if its status is one of
        ``from_status`` (cancel, requeue); False if it is not (or it is gone)."""

    @abc.abstractmethod
    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        """Overwrite ``job_id`` with ``record`` if it is still running for ``owner``."""

    @abc.abstractmethod
    def _load(self, job_id: str, visible_after: float | None) -> Record | None:
        """The record of ``job_id``, unless it finished at or before ``visible_after``."""

    @abc.abstractmethod
    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        """The records among ``job_ids`` that exist (and are finished, if asked)."""

    @abc.abstractmethod
    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        """Records (of ``queue`` if given) newest enqueued first (ties: newest inserted first)."""

    @abc.abstractmethod
    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        """How many records (of ``queue`` if given) by status (finished ones only
        if finished after ``visible_after``)."""

    @abc.abstractmethod
    def _queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue with live records: how many are queued, scheduled and running."""

    @abc.abstractmethod
    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        """How many records (of ``queue`` if given) have one of ``statuses``
        (scheduled ones only if due before ``due_before`` when it is given)."""

    @abc.abstractmethod
    def _running_owners(self) -> set[str]:
        """The owners of running records."""

    @abc.abstractmethod
    def _running_of(self, owner: str) -> list[Record]:
        """The running records of ``owner``."""

    @abc.abstractmethod
    def _prune(self, finished_before: float, keep: int) -> None:
        """Delete finished records that finished at or before ``finished_before``,
        and all but the newest ``keep`` finished ones."""

    @abc.abstractmethod
    def _purge(self) -> int:
        """Delete every finished record; return how many."""

    @abc.abstractmethod
    def _remove_waiting(self) -> list[Record]:
        """Delete every waiting record and return them, oldest first."""

    @abc.abstractmethod
    def _next_eta(self, queue: str | None = None) -> float | None:
        """The earliest eta of a scheduled record (of ``queue`` if given)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release connections."""

    # Unique keys and periodic ticks: three small primitives. The caller checks
    # MEMQUEUE_MAXSIZE before (by a count, as precise as a group write's).
    @abc.abstractmethod
    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        """In one write: the live record (queued, scheduled or running) whose
        ``unique_key`` is ``record.unique_key``, if there is one (the oldest, if a
        requeue made two); else, unless ``full`` (the store holds MEMQUEUE_MAXSIZE
        waiting jobs), insert ``record`` (as :meth:`_insert` would) and return it;
        else None. The caller compares the returned id with ``record.id``."""

    @abc.abstractmethod
    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        """In one write: if the last claimed tick of ``task`` is before ``tick`` (or
        there is none), make ``tick`` its last claimed tick (with ``record``'s id, or
        None, claimed at ``now``), insert ``record`` if given, and return True;
        otherwise write nothing and return False. One row per task and namespace,
        kept after its job finished: it is what makes a tick run once."""

    @abc.abstractmethod
    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        """Each task's last claimed tick in this namespace: ``(tick, job id or None, claimed at)``."""

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:  # noqa: B027 - optional
        """Record that ``owner`` consumes ``queues`` (seen at ``now``); with no queues,
        forget ``owner``'s. A backend without it: enqueues check this process's queues only."""

    def _declared(self, seen_after: float) -> set[str]:
        """Queues some owner declared after ``seen_after``."""
        return set()

    def _owner_alive(self, owner: str) -> bool:
        """Whether the process ``owner`` names still runs. Host-local by default
        (pid and start time); a store spanning hosts overrides it (leases)."""
        parsed = parse_owner(owner)
        return parsed is not None and process_alive(*parsed)

    # -- hooks a backend may override (the defaults suit a store on one host) ----------------
    #: Seconds an idle consumer sleeps at most before it looks at the store again. Polling
    #: stores keep it short; a store that blocks in its server until a job arrives
    #: (:meth:`_sleep`) makes it longer: then it only bounds how soon a stop request made
    #: from a signal handler (which may not call the server) is seen.
    idle_wait: float = POLL_INTERVAL
    #: Seconds between two reads of a job's record by ``Job.wait()`` on a job another
    #: process may run. A store that tells waiters when a job finishes (pub/sub) makes
    #: it long: the poll is then only a safety net for a lost notification.
    waiter_poll_interval: float = POLL_INTERVAL

    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Wait up to ``timeout`` s for work in ``queue``, unless this process enqueued
        (or :meth:`wake` ran) since the consumer saw the kick generation ``kicks``; returns
        the generation now. A store whose server can block until a job arrives from any
        process (Redis ``BLPOP``) overrides it, so that a consumer wakes within
        milliseconds of another process's enqueue instead of at its next poll."""
        with self._kick:
            if self._kicks == kicks and not self._woken:
                self._kick.wait(timeout)
            return self._kicks

    def _discarded_outcome(self, job: Job) -> Record | None:
        """The stored record of ``job`` if the last write of its outcome by this process
        was discarded, else None. A store with leases discards the late outcome of a job
        whose lease lapsed and that another process took over (the first outcome
        recorded stands); the object then takes the stored record. A store that takes
        over only the jobs of dead processes never discards one: the default."""
        return None

    def _error(self, exc: BaseException, doing: str) -> MemQueueError:
        """The error raised when a primitive fails: a :class:`StorageError` (a backend
        may return its own subclass) naming the store, its password redacted."""
        return StorageError(f"storage {self.url}: {doing} failed: {exc}")

    def _check_process(self) -> None:
        if self._pid != os.getpid():
            raise self._error(
                RuntimeError(f"this store belongs to process {self._pid}; a forked child must open its own"),
                "using it after fork",
            )

    # -- records <-> jobs -----------------------------------------------------------------
    def record_of(self, job: Job) -> Record:
        """A job as a record. Arguments JSON cannot hold are a TypeError naming the
        task and the argument; a result JSON cannot hold fails the job (decided by
        the job's lifecycle) with a message saying so."""
        jid = job.id
        encoded = self._held.get(jid)  # a job this consumer claimed: its arguments as stored
        if encoded is not None:
            args, kwargs = encoded
        else:
            try:
                args = json.dumps(job.args, allow_nan=False)
                kwargs = None if not job.kwargs else json.dumps(job.kwargs, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                raise TypeError(_json_complaint(job.task.name, job.args, job.kwargs, self.url)) from None
        status = job.status
        eta, started_at, finished_at, value, error, traceback = job.outcome()
        result = None
        if status is SUCCEEDED and value is not None:
            try:
                result = json.dumps(value, allow_nan=False)
                if type(value) not in _PLAIN:  # every object of the job, in every process, holds the same value
                    job.succeed(json.loads(result), finished_at or time.time())
            except (TypeError, ValueError, RecursionError) as exc:
                job.fail(
                    f"TypeError: the result of {job.name} is not JSON-serialisable ({exc}); with a store"
                    " that other processes share, results must be JSON values",
                    None, time.time(), fatal=True,
                )
                status = job.status
                eta, started_at, finished_at, value, error, traceback = job.outcome()
        return Record(
            jid, job.task.name, args, kwargs, status.value, job.attempts, job.enqueued_at,
            eta if status is SCHEDULED else None, started_at, finished_at, result, error, traceback,
            self.owner if status is RUNNING else None, job.queue, job.priority, job.unique_key, job.tick,
        )

    def job_of(self, record: Record) -> Job:
        """A Job for a record: this process's own object if it has one, else a new one."""
        with self._llock:
            job = self._local.get(record.id)
            if job is not None:
                self._restore_unless_ahead(job, record)
                return job
        return self._detached(record)

    def _restore_unless_ahead(self, job: Job, record: Record) -> None:
        """Copy a record onto an existing Job unless the object is ahead of it. ``_llock`` held.

        A reader's record may be older than the object: read just before this
        process's consumer claimed the job, or before it recorded the outcome.
        Copying it then would turn a running job back to "queued", or a
        finished one back to "running", and the consumer would record that:
        the job would run twice, or stay "running" for ever. So the object
        wins while this process holds the job (claimed, outcome not yet
        recorded), and a finished object only takes a finished record.
        """
        if record.status not in FINISHED and (job.id in self._held or job.finished):
            return
        _restore(job, record)

    # -- enqueue: group commit ------------------------------------------------------------
    def put(self, job: Job) -> None:
        self._enqueue(job)

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        if retry:
            if job.eta is None:
                job.mark_scheduled(time.time())
            self._write_settle(job, "recording a retry")
            return
        self._enqueue(job)

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
        record = self.record_of(job)  # a TypeError before anything is queued
        # What any other process will see: the enqueuer sees the same (a tuple
        # stays a tuple; inside it, tuples become lists, int keys strings).
        if job.kwargs or not all(type(a) in _PLAIN for a in job.args):  # else the round trip is the identity
            job.args = tuple(json.loads(record.args))
            if job.kwargs:
                job.kwargs = json.loads(record.kwargs or "{}")
        jid = job.key = record.id  # from now on the id is the key: no formatting per read
        if self.local_jobs:  # before the insert: a consumer here may claim it at once
            with self._llock:
                self._local[jid] = job
        return record

    def _unprepare(self, job: Job) -> None:
        """The job's record was not inserted after all: forget it as local."""
        if self.local_jobs:
            with self._llock:
                self._local.pop(job.id, None)

    def _full(self) -> bool:
        """MEMQUEUE_MAXSIZE for the writes outside group commit (unique keys, ticks): a count first."""
        return bool(self.maxsize) and self._guard("reading", self._busy, WAITING, None) >= self.maxsize

    def _check_room(self, job: Job) -> None:
        if self._full():
            raise _queue_full(self.maxsize, job.name)

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
            self._unprepare(job)
            raise
        if holder is None:
            self._unprepare(job)
            raise _queue_full(self.maxsize, job.name)
        if holder.id != record.id:
            self._unprepare(job)
            return self.job_of(holder)
        self._notify()
        return job

    def claim_tick(self, task: str, tick: float, job: Job | None) -> bool:
        record = None
        if job is not None:
            self._check_room(job)
            record = self._prepare(job)
        try:
            claimed = bool(self._guard("claiming a periodic tick", self._claim_tick, task, tick, record, time.time()))
        except BaseException:
            if job is not None:
                self._unprepare(job)
            raise
        if job is not None:
            if not claimed:
                self._unprepare(job)
            else:
                self._notify()
        return claimed

    def last_ticks(self) -> dict[str, TickInfo]:
        rows: dict[str, tuple[float, str | None, float]] = self._guard("reading", self._ticks)
        return {task: TickInfo(*row) for task, row in rows.items()}

    def _enqueue(self, job: Job) -> None:
        record = self._prepare(job)
        jid = job.id
        gc = self._gc
        with gc:
            batch = self._open_batch
            if batch is None:
                batch = self._open_batch = _Batch()
            index = len(batch.records)
            batch.records.append(record)
            batch.errors.append(None)
            while not batch.done:
                if not self._leading:
                    self._leading = True
                    self._open_batch = None  # arrivals from now on go to the next batch
                    break
                gc.wait()
        if not batch.done:  # this thread leads: write the whole batch
            try:
                self._write_batch(batch)
            finally:
                with gc:
                    batch.done = True
                    self._leading = False
                    gc.notify_all()
        error = batch.errors[index]
        if error is not None:
            if self.local_jobs:
                with self._llock:
                    self._local.pop(jid, None)
            raise error
        self._notify()

    def _notify(self) -> None:
        """Wake this process's idle consumers: a job was queued here."""
        with self._kick:
            self._kicks += 1
            self._kick.notify_all()

    def _write_batch(self, batch: _Batch) -> None:
        records = batch.records
        try:
            accepted = self._insert(records)
        except BaseException as exc:
            error = self._wrap(exc, f"enqueueing {len(records)} job(s)") if isinstance(exc, Exception) else exc
            if error is not exc:
                error.__cause__ = exc
            for i in range(len(records)):
                batch.errors[i] = error
            return
        for i in range(accepted, len(records)):
            batch.errors[i] = QueueFull(
                f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE);"
                f" {describe_task(records[i].task)} was not queued"
            )

    # -- the consumer ---------------------------------------------------------------------
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
                if self._woken:
                    self._woken = False
                    return None
            elif stop():
                return None
            wait = self._idle(queue)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            kicks = self._sleep(wait, queue, kicks)
            job = self._take_next(None, queue, stopped)
        return job

    def _is_woken(self) -> bool:
        return self._woken

    def _take_next(self, done: Job | None, queue: str, stop: Callable[[], bool]) -> Job | None:
        """Record ``done`` and claim the next due job, in one write (unless woken to stop)."""
        # Jobs whose record failed (disk full...) are recorded with the next one,
        # so a job this live process ran is never left "running" for ever. Kept
        # before anything here can fail (recover() too): see Storage.take.
        # Several consumer threads share the list: each takes all of it at once.
        with self._llock:
            pending, self._unsettled = self._unsettled, []
        if done is not None:
            pending.append(done)
        try:
            now = time.time()
            if now >= self._next_recover:
                self._next_recover = now + RECOVER_INTERVAL
                self.recover()
            settle = [self.record_of(ran) for ran in pending]
            try:
                record = self._claim(settle, self.owner, now, stop, queue)
            except Exception as exc:
                raise self._wrap(exc, "taking a job") from exc
        except BaseException:
            with self._llock:
                self._unsettled.extend(pending)
            raise
        for ran in pending:
            self._after_settle(ran)
        if record is None:
            return None
        with self._llock:  # readers check _held under this lock: none copies an older record from now on
            self._held[record.id] = (record.args, record.kwargs)
            job = self._local.get(record.id)
            if job is not None:
                _restore(job, record)  # the claim's own record: the truth
        if job is None:
            job = self._detached(record)
        job.mark_running()  # attempts stay as before the claim: the consumer counts this one
        return job

    def _idle(self, queue: str) -> float:
        """Chores of an idle consumer of ``queue``; returns how long it may sleep."""
        now = time.time()
        if self._declared_here and now >= self._next_declare:
            self._next_declare = now + DECLARE_INTERVAL
            self._guard("declaring queues", self._declare, self.owner, self._declared_here, now)
        if now >= self._next_prune:
            self._next_prune = now + 1.0
            self._do_prune(now)
        if now >= self._next_sync and self._local:
            self._next_sync = now + 1.0
            self._sync_local()
        wait = self.idle_wait
        eta = self._guard("reading", self._next_eta, queue)
        if eta is not None:
            wait = max(0.0, min(wait, eta - now))
        return wait

    def finish(self, job: Job) -> None:
        try:
            self._write_settle(job, "recording a finished job")
        except MemQueueError:
            with self._llock:
                self._unsettled.append(job)  # recorded with the next take
            raise

    def _write_settle(self, job: Job, doing: str) -> None:
        record = self.record_of(job)
        self._guard(doing, self._save, record)
        self._after_settle(job)

    def _after_settle(self, job: Job) -> None:
        """After a write: wake waiters (with the outcome on their objects), forget a finished local job."""
        stored = self._discarded_outcome(job)
        if stored is not None:  # taken over meanwhile: the store's record is the truth, not this object
            _restore(job, stored)
        with self._llock:
            self._held.pop(job.id, None)  # recorded: the record is as new as the object
            if not job.finished:
                return
            self._local.pop(job.id, None)
            events = self._events.pop(job.id, ())
        self._dirty = True
        for event in events:
            if event.job is not job:
                _copy_outcome(job, event.job)
            event.set()
        with self._settled:
            self._settled.notify_all()

    # -- take-over ------------------------------------------------------------------------
    def recover(self) -> int:
        """Take over the running jobs of dead owners; returns how many.

        What happens to each is decided by :meth:`Job.interrupt
        <flask_memqueue.job.Job.interrupt>`; each write is conditional on the
        record still being the dead owner's, so two reclaimers never both
        take a job, and a reclaimer that dies mid-way holds no lock.
        """
        owners = self._guard("reading", self._running_owners)
        dead = [o for o in owners if o and o != self.owner and not self._owner_alive(o)]
        n = 0
        now = time.time()
        for owner in dead:
            for record in self._guard("reading", self._running_of, owner):
                job = self._detached(record)
                job.interrupt(now, task_known=not job.task.missing)
                new = self.record_of(job)  # no longer running: no owner
                if self._guard("taking over the jobs of a dead process", self._take_over_one, record.id, owner, new):
                    n += 1
        return n

    def _detached(self, record: Record) -> Job:
        """A fresh Job for a record, never this process's local object."""
        kwargs = json.loads(record.kwargs) if record.kwargs else None
        job = Job(self.context.host, record.id, self.context.task(record.task),
                  tuple(json.loads(record.args)), kwargs, record.enqueued_at,
                  queue=record.queue, priority=record.priority, unique_key=record.unique_key, tick=record.tick)
        _restore(job, record)
        return job

    # -- housekeeping -----------------------------------------------------------------------
    def _do_prune(self, now: float) -> None:
        self._dirty = False
        self._guard("forgetting old finished jobs", self._prune, now - self.result_ttl, self.max_finished)

    def _visible(self) -> float:
        """Prune if a job finished here since the last time; the cut-off of the result TTL."""
        now = time.time()
        if self._dirty:
            self._do_prune(now)
        return now - self.result_ttl

    def _sync_local(self) -> None:
        """Drop local jobs another process finished (copying their outcome), 500 at a time."""
        with self._llock:
            ids = list(self._local)[:500]
        if not ids:
            return
        finished = self._guard("reading", self._load_many, ids, True)
        found = {r.id for r in finished}
        for record in finished:
            self._after_settle(self.job_of(record))
        # Records gone from the store (purged): nothing will finish them here.
        # A record is missing too while its enqueue is written (the job is in
        # _local first): young jobs stay.
        old = time.time() - LOCAL_GRACE
        candidates = [j for j in ids if j not in found]
        with self._llock:
            stale = [j for j in candidates if (m := self._local.get(j)) is not None
                     and m.status is not RUNNING and m.enqueued_at <= old]
        if stale:
            present = {r.id for r in self._guard("reading", self._load_many, stale, False)}
            with self._llock:
                for jid in stale:
                    if jid not in present:
                        self._local.pop(jid, None)

    def _refresh_if_finished(self, job: Job) -> bool:
        record = self._guard("reading", self._load, job.id, None)
        if record is None or record.status not in FINISHED:
            return False
        _restore(job, record)
        with self._llock:
            self._local.pop(job.id, None)
        return True

    def _guard(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a primitive, ``fn(*args)``; its failure becomes this store's error, naming the store."""
        try:
            return fn(*args)
        except MemQueueError:
            raise
        except Exception as exc:
            raise self._wrap(exc, doing) from exc

    def _wrap(self, exc: Exception, doing: str) -> MemQueueError:
        return exc if isinstance(exc, MemQueueError) else self._error(exc, doing)

    # -- single jobs ------------------------------------------------------------------------
    def cancel(self, job: Job) -> bool:
        probe = self._detached_copy(job)
        probe.mark_cancelled(time.time())
        record = self.record_of(probe)
        if not self._guard("cancelling a job", self._transition, job.id, WAITING, record):
            self._refresh(job)
            return False
        _copy_outcome(probe, job)
        self._after_settle(job)
        return True

    def requeue(self, job: Job) -> bool:
        probe = self._detached_copy(job)
        probe.reset_for_requeue()
        record = self.record_of(probe)
        if not self._guard("queueing a job again", self._transition, job.id, ("failed", "cancelled"), record):
            self._refresh(job)
            return False
        job.reset_for_requeue()
        if self.local_jobs:
            with self._llock:
                self._local[job.id] = job
        self._notify()
        return True

    def _detached_copy(self, job: Job) -> Job:
        copy = Job(self.context.host, job.id, job.task, job.args, job.kwargs, job.enqueued_at, job.status,
                   job.queue, job.priority, job.unique_key, job.tick)
        _copy_outcome(job, copy)
        return copy

    def _refresh(self, job: Job) -> None:
        record = self._guard("reading", self._load, job.id, None)
        if record is not None:
            with self._llock:
                self._restore_unless_ahead(job, record)

    def get(self, job_id: str) -> Job | None:
        record = self._guard("reading", self._load, job_id, self._visible())
        if record is None:
            return None
        return self.job_of(record)  # this process's own object, if it has one (it holds progress)

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
        with self._llock:
            for job in jobs:
                self._local.pop(job.id, None)
        with self._settled:
            self._settled.notify_all()
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
            with self._settled:
                self._settled.wait(wait)

    def waiter(self, job: Job) -> threading.Event | None:
        if job.finished:
            return None
        event = _PollingEvent(self, job)
        with self._llock:
            self._events.setdefault(job.id, []).append(event)
        return event

    def wake(self) -> None:
        with self._kick:
            self._woken = True
            self._kicks += 1
            self._kick.notify_all()

    def wake_from_signal_handler(self) -> None:
        """:meth:`wake` without taking a lock, for a signal handler.

        A handler runs in the main thread between two bytecodes, maybe while
        that thread holds the wake-up event's (non-reentrant) lock: setting
        the event there could deadlock. The flag alone is seen by a sleeping
        :meth:`take` within :data:`POLL_INTERVAL`.
        """
        self._woken = True

    def declare_queues(self, queues: Iterable[str]) -> None:
        names = tuple(sorted(set(queues)))
        if names == self._declared_here:
            return
        self._declared_here = names
        now = time.time()
        self._next_declare = now + DECLARE_INTERVAL
        self._guard("declaring queues", self._declare, self.owner, names, now)

    def known_queues(self) -> set[str]:
        return set(self._guard("reading", self._declared, time.time() - DECLARED_FOR))

    def close(self) -> None:
        if self._pid != os.getpid():
            return  # a forked child never closes its parent's connections
        if self._declared_here:
            try:
                self._declare(self.owner, (), time.time())
            except Exception:  # closing anyway; the entries expire by themselves
                pass
        self._closed = True
        self._close()


def _queue_full(maxsize: int, task: str) -> QueueFull:
    return QueueFull(
        f"the queue holds {maxsize} waiting jobs (MEMQUEUE_MAXSIZE); {describe_task(task)} was not queued"
    )


def _restore(job: Job, record: Record) -> None:
    """Copy a record's state onto a Job."""
    job.restore(
        JobStatus(record.status), record.attempts, eta=record.eta, started_at=record.started_at,
        finished_at=record.finished_at, result=None if record.result is None else json.loads(record.result),
        error=record.error, traceback=record.traceback, progress=job.progress, message=job.progress_message,
    )


def _copy_outcome(source: Job, target: Job) -> None:
    """Give ``target`` (another object for the same job) ``source``'s state."""
    target.restore(
        source.status, source.attempts, eta=source.eta, started_at=source.started_at,
        finished_at=source.finished_at, result=source.result, error=source.error, traceback=source.traceback,
        progress=source.progress, message=source.progress_message,
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


def _json_complaint(task: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, url: str) -> str:
    """Which argument of a call JSON cannot hold, for the TypeError at enqueue."""
    which = "an argument"
    bad: Any = None
    items: list[tuple[str, Any]] = [(f"argument {i}", v) for i, v in enumerate(args)]
    items += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    for label, value in items:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            which, bad = label, value
            break
    try:
        shown = repr(bad)
    except Exception:
        shown = f"<{type(bad).__name__}>"
    if len(shown) > 200:
        shown = shown[:200] + "…"
    return (
        f"cannot queue {task}: {which} ({type(bad).__name__}: {shown}) is not JSON-serialisable."
        f" With a store that other processes share ({url}), arguments must be JSON values (str, int,"
        " finite float, bool, None, and lists and dicts of them) so that another process can read them back"
    )


__all__ = [
    "DurableStorage",
    "Record",
    "check_options",
    "parse_owner",
    "process_alive",
    "process_start_time",
]

"""Jobs as records and records as jobs: the codec of the stores that processes share.

A cross-process store keeps *records*, not objects: another process reads them
back, so a job is its task's name, JSON arguments and its state. This module
turns a :class:`~flask_memqueue.job.Job` into a :class:`Record` and back, and
keeps this process's own Job objects (``local_jobs``): the process that
enqueued a job keeps the object ``enqueue`` returned, so its own consumer runs
that very object and ``job.result`` fills in without a read; any other job is
made from its record, with its task found by name.

Nothing here decides what happens to a job (the methods of ``Job`` do) or
talks to a backend (:mod:`~flask_memqueue.storage.durable` does).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..job import Job, JobStatus
from ..options import from_stored, stored_extras
from .base import StoreContext

RUNNING = JobStatus.RUNNING
SCHEDULED = JobStatus.SCHEDULED
SUCCEEDED = JobStatus.SUCCEEDED
#: Argument types a JSON round trip gives back unchanged (NaN and infinities are refused before).
_PLAIN = (str, int, float, bool, type(None))
FINISHED = ("succeeded", "failed", "cancelled", "aborted")
#: Statuses of jobs that wait: they count toward MEMQUEUE_MAXSIZE, and a cancel takes them.
WAITING = ("queued", "scheduled", "deferred")


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
    #: its namespace with this key may be inserted by :meth:`DurableStorage._insert_unique
    #: <flask_memqueue.storage.durable.DurableStorage._insert_unique>`.
    unique_key: str | None = None
    #: For a periodic task's job: the Unix time of the tick it was queued for.
    tick: float | None = None
    #: The job's options that have no column of their own, as one JSON object
    #: (:func:`~flask_memqueue.options.stored_extras`: a workflow's links, its group);
    #: None for nearly every job. Keyword-only, so that a backend's subclass that adds
    #: fields keeps building its records from rows positionally.
    options: str | None = field(default=None, kw_only=True)


class Codec:
    """Records <-> Job objects for one store, and this process's own objects.

    :param context: what the queue told the store (the host jobs are bound to,
        the task lookup by name, ``local_jobs``).
    :param owner: this process as the owner of the records it runs.
    :param url: the store's URL as people see it, for error messages.
    """

    def __init__(self, context: StoreContext, owner: str, url: str) -> None:
        self.context = context
        self.owner = owner
        self.url = url
        self.local_jobs = context.local_jobs
        #: Guards :attr:`local` and :attr:`held` (readers compare a record with an object under it).
        self.lock = threading.Lock()
        #: Jobs enqueued here and not known to be finished: id -> the Job ``enqueue`` returned.
        self.local: dict[str, Job] = {}
        #: Jobs this process's consumer claimed and has not yet recorded: their Job
        #: objects are ahead of their records (see :meth:`restore_unless_ahead`). By
        #: id, the claimed record's JSON arguments: recording the outcome needs them
        #: (a record is whole) without encoding them again.
        self.held: dict[str, tuple[str, str | None]] = {}

    # -- job -> record ----------------------------------------------------------------------
    def record_of(self, job: Job) -> Record:
        """A job as a record. Arguments JSON cannot hold are a TypeError naming the
        task and the argument; a result JSON cannot hold fails the job (decided by
        the job's lifecycle) with a message saying so."""
        jid = job.id
        encoded = self.held.get(jid)  # a job this consumer claimed: its arguments as stored
        if encoded is not None:
            args, kwargs = encoded
        else:
            try:
                args = json.dumps(job.args, allow_nan=False)
                kwargs = None if not job.kwargs else json.dumps(job.kwargs, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                raise TypeError(json_complaint(job.task.name, job.args, job.kwargs, self.url)) from None
        status = job.status
        eta, started_at, finished_at, value, error, traceback = job.outcome()
        result = None
        if status is SUCCEEDED and value is not None:
            result = self._result(job, value, finished_at)
            if result is None:  # not JSON: the job failed instead (decided by its lifecycle)
                status = job.status
                eta, started_at, finished_at, value, error, traceback = job.outcome()
        return Record(
            jid, job.task.name, args, kwargs, status.value, job.attempts, job.enqueued_at,
            eta if status is SCHEDULED else None, started_at, finished_at, result, error, traceback,
            self.owner if status is RUNNING else None, job.queue, job.priority, job.unique_key, job.tick,
            options=stored_extras(job.options),
        )

    @staticmethod
    def _result(job: Job, value: Any, finished_at: float | None) -> str | None:
        """The JSON text of a succeeded job's result; None after failing the job for one JSON cannot hold."""
        try:
            result = json.dumps(value, allow_nan=False)
            if type(value) not in _PLAIN:  # every object of the job, in every process, holds the same value
                job.succeed(json.loads(result), finished_at or time.time())
            return result
        except (TypeError, ValueError, RecursionError) as exc:
            job.fail(
                f"TypeError: the result of {job.name} is not JSON-serialisable ({exc}); with a store"
                " that other processes share, results must be JSON values",
                None, time.time(), fatal=True,
            )
            return None

    def encode_new(self, job: Job) -> Record:
        """The record of a job about to be inserted; the job is registered as local.

        After it the enqueuer's object holds what any other process will read
        (a tuple stays a tuple; inside it, tuples become lists, int keys strings).

        :raises TypeError: an argument JSON cannot hold; nothing was registered.
        """
        record = self.record_of(job)
        if job.kwargs or not all(type(a) in _PLAIN for a in job.args):  # else the round trip is the identity
            job.args = tuple(json.loads(record.args))
            if job.kwargs:
                job.kwargs = json.loads(record.kwargs or "{}")
        jid = job.key = record.id  # from now on the id is the key: no formatting per read
        if self.local_jobs:  # before the insert: a consumer here may claim it at once
            with self.lock:
                self.local[jid] = job
        return record

    def forget(self, job_id: str) -> None:
        """The job is no longer this process's to track (never inserted, dropped, finished elsewhere)."""
        if self.local_jobs:
            with self.lock:
                self.local.pop(job_id, None)

    def requeued(self, job: Job) -> None:
        """``job`` waits again: this process's object is the one its consumer will run."""
        if self.local_jobs:
            with self.lock:
                self.local[job.id] = job

    # -- record -> job ----------------------------------------------------------------------
    def job_of(self, record: Record) -> Job:
        """A Job for a record: this process's own object if it has one, else a new one."""
        with self.lock:
            job = self.local.get(record.id)
            if job is not None:
                self.restore_unless_ahead(job, record)
                return job
        return self.detached(record)

    def detached(self, record: Record) -> Job:
        """A fresh Job for a record, never this process's local object."""
        kwargs = json.loads(record.kwargs) if record.kwargs else None
        context = self.context
        options = None if record.options is None else from_stored(
            record.queue, record.priority, record.unique_key, record.tick, record.options)
        job = Job(context.host, record.id, context.task(record.task), tuple(json.loads(record.args)), kwargs,
                  record.enqueued_at, queue=record.queue, priority=record.priority, unique_key=record.unique_key,
                  tick=record.tick, options=options)
        restore(job, record)
        return job

    def probe(self, job: Job) -> Job:
        """A copy of ``job`` to decide a transition on before the store accepts it.

        A cancel or a requeue is written only if the record is still in the
        state the object shows; until the write succeeded nobody may see the
        decision on ``job`` itself (``Job.wait()`` would return for a cancel
        that did not happen).
        """
        copy = Job(self.context.host, job.id, job.task, job.args, job.kwargs, job.enqueued_at, job.status,
                   options=job.options)
        copy_outcome(job, copy)
        return copy

    def claimed(self, record: Record) -> Job:
        """The Job a consumer of this process runs for the record it just claimed."""
        with self.lock:  # readers check `held` under this lock: none copies an older record from now on
            self.held[record.id] = (record.args, record.kwargs)
            job = self.local.get(record.id)
            if job is not None:
                restore(job, record)  # the claim's own record: the truth
                if job.options.bind is not None:  # released with a result bound in by the store
                    job.args = tuple(json.loads(record.args))
        if job is None:
            job = self.detached(record)
        job.mark_running()  # attempts stay as before the claim: the consumer counts this one
        return job

    def settled(self, job: Job) -> bool:
        """``job``'s state was written: it is no longer ahead of its record. True if it is
        finished (then it is forgotten as local)."""
        with self.lock:
            self.held.pop(job.id, None)  # recorded: the record is as new as the object
            if not job.finished:
                return False
            self.local.pop(job.id, None)
        return True

    def restore_unless_ahead(self, job: Job, record: Record) -> None:
        """Copy a record onto an existing Job unless the object is ahead of it. :attr:`lock` held.

        A reader's record may be older than the object: read just before this
        process's consumer claimed the job, or before it recorded the outcome.
        Copying it then would turn a running job back to "queued", or a
        finished one back to "running", and the consumer would record that:
        the job would run twice, or stay "running" for ever. So the object
        wins while this process holds the job (claimed, outcome not yet
        recorded), and a finished object only takes a finished record.
        """
        if record.status not in FINISHED and (job.id in self.held or job.finished):
            return
        restore(job, record)

    def outran(self, known: Job | None, record: Record) -> bool:
        """Whether ``known``, this process's object for a job looked up *before* its record
        was read, is newer than that record: it finished, and was recorded and forgotten
        as local while the read was in flight (the record, older, says "running").

        A reader that built a Job from such a record answered "running", with no result,
        after the job's :meth:`~flask_memqueue.job.Job.wait` had returned. The same rule as
        :meth:`restore_unless_ahead`: a finished object only takes a finished record.
        """
        if known is None or not known.finished or record.status in FINISHED:
            return False
        with self.lock:
            return self.local.get(record.id) is None  # still local: job_of answers with it anyway

    def stale_local(self, candidates: list[str], enqueued_before: float) -> list[str]:
        """Among ``candidates``, the local jobs not running here and enqueued before the time given."""
        with self.lock:
            return [j for j in candidates if (m := self.local.get(j)) is not None
                    and m.status is not RUNNING and m.enqueued_at <= enqueued_before]


def restore(job: Job, record: Record) -> None:
    """Copy a record's state onto a Job (its progress stays the object's)."""
    job.restore(
        JobStatus(record.status), record.attempts, eta=record.eta, started_at=record.started_at,
        finished_at=record.finished_at, result=None if record.result is None else json.loads(record.result),
        error=record.error, traceback=record.traceback, progress=job.progress, message=job.progress_message,
    )


def copy_outcome(source: Job, target: Job) -> None:
    """Give ``target`` (another object for the same job) ``source``'s state."""
    target.restore(
        source.status, source.attempts, eta=source.eta, started_at=source.started_at,
        finished_at=source.finished_at, result=source.result, error=source.error, traceback=source.traceback,
        progress=source.progress, message=source.progress_message,
    )


def json_complaint(task: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, url: str) -> str:
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


__all__ = ["FINISHED", "WAITING", "Codec", "Record", "copy_outcome", "json_complaint", "restore"]

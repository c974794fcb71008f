"""The storage contract: what the consumer and the routes may ask of a store.

A store holds job records in four places (waiting now, scheduled for later,
running, finished) and moves them between those places under its own lock.
It never calls a task: the consumer does that. So a durable store (the SQLite
journal) or a remote one can replace the memory store without the consumer or
the HTTP routes knowing.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import Job, JobStatus


class Storage(abc.ABC):
    """Abstract base of every store. All methods are thread-safe."""

    #: True for stores whose jobs outlive the process (arguments must be JSON).
    durable = False

    @abc.abstractmethod
    def put(self, job: Job) -> None:
        """Queue ``job`` (status QUEUED) behind every waiting job.

        :raises QueueFull: the store holds its maximum of waiting jobs.
        """

    @abc.abstractmethod
    def schedule(self, job: Job, *, retry: bool = False) -> None:
        """Hold ``job`` (status SCHEDULED, ``job.eta`` set) until it is due.

        A ``retry`` comes back from the running place and is never refused,
        so a failing job is not lost to a full queue.

        :raises QueueFull: not a retry, and the store is full.
        """

    @abc.abstractmethod
    def take(self, timeout: float | None, done: Job | None = None) -> Job | None:
        """Move the next due job to RUNNING and return it.

        Due scheduled jobs come first, then waiting jobs in FIFO order.
        Blocks up to ``timeout`` seconds (None: until woken) when nothing is
        due, and returns None then, or when :meth:`wake` is called.

        ``done`` is the job this consumer ran last: it is recorded first, as
        :meth:`finish` would (or as a retry, if its status is SCHEDULED), in
        the same critical section, so the consumer takes one lock per job.

        If it raises, ``done`` is still the store's to record: it must do so
        on a later call (the consumer backs off and calls again with
        ``done=None``), so a job that ran is never left RUNNING.
        """

    @abc.abstractmethod
    def finish(self, job: Job) -> None:
        """Record that a running job reached a final state (set on the job)."""

    @abc.abstractmethod
    def cancel(self, job: Job) -> bool:
        """Cancel a waiting job. False if it is running or finished."""

    @abc.abstractmethod
    def requeue(self, job: Job) -> bool:
        """Queue a failed or cancelled job again (the dashboard's retry).

        False if the job is not finished-and-unsuccessful.
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with that id, if the store still holds it."""

    @abc.abstractmethod
    def jobs(self, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        """Jobs, newest enqueued first, optionally of one status."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """How many jobs the store holds, by status value."""

    @abc.abstractmethod
    def depth(self) -> int:
        """How many jobs wait (queued + scheduled)."""

    @abc.abstractmethod
    def purge_finished(self) -> int:
        """Forget every finished job; returns how many."""

    @abc.abstractmethod
    def join(self, timeout: float | None, *, due_only: bool = False) -> bool:
        """Block until no job waits or runs. False on timeout.

        With ``due_only``, jobs scheduled for later do not count (shutdown
        drains what is due; it does not wait an hour for a job due in one).
        """

    @abc.abstractmethod
    def waiter(self, job: Job) -> threading.Event | None:
        """An event set when ``job`` finishes; None if it has finished already."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Make a blocked :meth:`take` return now (used to stop the consumer)."""

    @abc.abstractmethod
    def drop_waiting(self) -> list[Job]:
        """Remove every waiting job and return them (shutdown without a journal)."""

    def refresh(self, job: Job) -> None:  # noqa: B027 - optional hook
        """Copy the stored state of ``job`` onto this object.

        For stores where one job can have several :class:`Job` objects (a
        durable store makes one per read, and another process may run the
        job): :meth:`Job.wait` calls it when its waiter fired but the object
        it was called on was not the one that finished. The memory store
        holds one live object per job, so it has nothing to do.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections. The memory store has none."""

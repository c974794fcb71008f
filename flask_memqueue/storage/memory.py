"""The default store: jobs in this process's memory.

Hot path: :meth:`MemoryStorage.put` takes one lock and, only when the consumer
sleeps, releases one wake-up lock. The consumer blocks on that lock when idle
(no polling) and takes one lock per job. Waiting jobs sit in a deque in the
order they were numbered, so a lookup by id is a binary search, not a dict
entry per job. Numbers are taken before this store's lock (``AppQueue.enqueue``
makes the Job first), so two enqueuers can reach :meth:`MemoryStorage.put` in
the other order; ``put`` keeps the deque sorted anyway (see there).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError, QueueClosed, QueueFull
from ..job import JobStatus, describe_task
from .base import Capabilities, Storage, StoreContext, redact_url

if TYPE_CHECKING:
    from ..job import Job

QUEUED = JobStatus.QUEUED
SCHEDULED = JobStatus.SCHEDULED
RUNNING = JobStatus.RUNNING
_seq = attrgetter("key")


def open_memory(url: str, options: Mapping[str, Any], context: StoreContext) -> MemoryStorage:
    """The ``memory://`` entry point (the default store). It takes no options."""
    if options:
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS: memory:// takes no options, not"
            f" {', '.join(map(repr, sorted(options)))}"
        )
    rest = url.split("://", 1)[1]
    if rest.split("?", 1)[0] not in ("", "/"):
        raise ConfigurationError(f"MEMQUEUE_STORAGE: write the memory store as 'memory://', not {redact_url(url)!r}")
    return MemoryStorage(context.token, context.maxsize, context.max_finished, context.result_ttl)


class MemoryStorage(Storage):
    """Waiting, scheduled, running and recently finished jobs, in memory.

    :param token: the queue's id prefix; ids with another prefix are not ours.
    :param maxsize: waiting jobs (queued + scheduled) at most; 0 = no limit.
    :param max_finished: finished jobs kept for lookups at most.
    :param result_ttl: seconds a finished job is kept.
    """

    #: Jobs live in this process only: the fast path keeps live objects.
    capabilities = Capabilities()
    url = "memory://"

    def __init__(self, token: str, maxsize: int = 10_000, max_finished: int = 1000, result_ttl: float = 3600.0):
        self.token = token
        self.maxsize = maxsize
        self.max_finished = max_finished
        self.result_ttl = result_ttl
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._ready: deque[Job] = deque()  # ascending key: enqueue order
        self._scheduled: list[tuple[float, int, Job]] = []  # heap of (due, tiebreak, job)
        self._tiebreak = itertools.count()
        self._running: dict[int | str, Job] = {}
        self._finished: OrderedDict[int | str, Job] = OrderedDict()  # in finishing order
        self._joiners = 0
        # Job.wait() events by job id, set when the job reaches a final state.
        # Kept here, not on the job, so the consumer (which fills in the job
        # without this lock) can never overwrite one.
        self._waiters: dict[int | str, threading.Event] = {}
        # A lock used as a binary semaphore: held while nobody needs waking.
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._sleeping = False
        self._sleep_for: float | None = None
        self._woken = False
        self._closed = False
        self._next_expiry = 0.0

    # -- the hot path ------------------------------------------------------
    def put(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosed(f"the queue was shut down; {describe_task(job.name)} was not queued")
            ready = self._ready
            if self.maxsize and len(ready) + len(self._scheduled) >= self.maxsize:
                raise QueueFull(
                    f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); "
                    f"{describe_task(job.name)} was not queued"
                )
            if ready and ready[-1].key > job.key:  # type: ignore[operator]  # keys here are ints
                # Numbered before a job that got the lock first (threads race
                # between next(ids) and this lock). Appending would break the
                # deque's order, and get()/cancel() binary-search it: the job
                # would be invisible and uncancellable while it waits. Insert
                # it in number order instead; it lands a few places from the
                # end, so this costs little, and only when enqueuers race.
                bisect.insort_right(ready, job, key=_seq)
            else:
                ready.append(job)
            if self._sleeping:
                self._sleeping = False
                self._wakeup.release()

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        due = job.eta if job.eta is not None else time.time()
        with self._lock:
            if self._closed and not retry:
                raise QueueClosed(f"the queue was shut down; {job.name} was not scheduled")
            if not retry and self.maxsize and len(self._ready) + len(self._scheduled) >= self.maxsize:
                raise QueueFull(
                    f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); "
                    f"{job.name} was not scheduled"
                )
            if retry:
                self._running.pop(job.key, None)
            heapq.heappush(self._scheduled, (due, next(self._tiebreak), job))
            if self._sleeping:  # the consumer may sleep past this job's due time
                self._sleeping = False
                self._wakeup.release()

    def take(self, timeout: float | None, done: Job | None = None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if done is not None:
            self._lock.acquire()
            event = None
            try:
                event = self._settle(done)
                job = self._take_locked(deadline)
                if job is not None or not self._sleeping:
                    return job
            finally:
                self._lock.release()
                if event is not None:
                    event.set()
            # _sleeping is set: a producer will release the wake-up lock, so we
            # must sleep on it now, or a second release would find it unlocked.
            self._sleep()
        while True:
            with self._lock:
                job = self._take_locked(deadline)
                if job is not None or not self._sleeping:
                    return job
            self._sleep()

    def _take_locked(self, deadline: float | None) -> Job | None:
        """The next due job, or None; sets ``_sleeping`` when the caller should sleep. Lock held."""
        self._sleep_for = None
        sched = self._scheduled
        if sched:
            now = time.time()
            due = sched[0][0]
            if due <= now:
                job = heapq.heappop(sched)[2]
                job.status = RUNNING  # Job.mark_running(), inlined: the hot path
                self._running[job.key] = job
                return job
            self._sleep_for = due - now
        if self._ready:
            job = self._ready.popleft()
            job.status = RUNNING  # Job.mark_running(), inlined: the hot path
            self._running[job.key] = job
            return job
        if self._woken:
            self._woken = False
            return None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sleep_for = left if self._sleep_for is None else min(self._sleep_for, left)
        self._sleeping = True
        return None

    def _sleep(self) -> None:
        """Block until a producer releases the wake-up lock, or the sleep is over."""
        wait = self._sleep_for
        if not self._wakeup.acquire(True, -1 if wait is None else wait):
            with self._lock:
                if self._sleeping:
                    self._sleeping = False
                else:  # released just as we timed out: take the release back
                    self._wakeup.acquire(False)

    def finish(self, job: Job) -> None:
        with self._lock:
            event = self._settle(job)
        if event is not None:
            event.set()

    def _settle(self, job: Job) -> threading.Event | None:
        """Record a job the consumer ran: finished, or back to the schedule.

        Returns the event of a ``Job.wait()`` to set once the lock is released.
        Lock held.
        """
        self._running.pop(job.key, None)
        event = None
        if job.status is SCHEDULED:  # a retry, due later: a shutdown's join need not wait for it
            heapq.heappush(self._scheduled, (job.eta or 0.0, next(self._tiebreak), job))
        else:
            self._remember(job)
            if self._waiters:
                event = self._waiters.pop(job.key, None)
        if self._joiners and not (self._ready or self._running):
            self._drained.notify_all()
        return event

    def _remember(self, job: Job) -> None:
        """Keep a finished job for lookups, within both bounds. Lock held."""
        finished = self._finished
        if self.max_finished:
            finished[job.key] = job
            if len(finished) > self.max_finished:
                finished.popitem(last=False)
        now = job.finished_at
        if now is None or now >= self._next_expiry:
            self._expire(now or time.time())

    def _expire(self, now: float) -> None:
        """Forget finished jobs older than the TTL (at most once a second). Lock held."""
        self._next_expiry = now + 1.0
        finished = self._finished
        limit = now - self.result_ttl
        while finished:
            oldest = next(iter(finished.values()))
            if (oldest.finished_at or 0.0) > limit:
                break
            finished.popitem(last=False)

    # -- single jobs -------------------------------------------------------
    def _remove_waiting(self, job: Job) -> bool:
        """Take a waiting job out of its place. Lock held."""
        if job.status is QUEUED:
            ready = self._ready
            if job.key.__class__ is int:
                i = bisect.bisect_left(ready, job.key, key=_seq)
                if i < len(ready) and ready[i] is job:
                    del ready[i]
                    return True
        for i, entry in enumerate(self._scheduled):
            if entry[2] is job:
                self._scheduled[i] = self._scheduled[-1]
                self._scheduled.pop()
                heapq.heapify(self._scheduled)
                return True
        return False

    def cancel(self, job: Job) -> bool:
        with self._lock:
            if job.status not in (QUEUED, SCHEDULED) or not self._remove_waiting(job):
                return False
            job.mark_cancelled(time.time())
            event = self._settle(job)
        if event is not None:
            event.set()
        return True

    def requeue(self, job: Job) -> bool:
        with self._lock:
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                return False
            self._finished.pop(job.key, None)
            job.reset_for_requeue()
            # A requeued job keeps its old number, so it cannot join the
            # number-ordered deque; as a due "scheduled" entry it runs next.
            heapq.heappush(self._scheduled, (0.0, next(self._tiebreak), job))
            if self._sleeping:
                self._sleeping = False
                self._wakeup.release()
        return True

    def get(self, job_id: str) -> Job | None:
        token, _, number = job_id.rpartition("-")
        if token != self.token:
            return None
        try:
            seq: int | str = int(number)
        except ValueError:
            return None
        with self._lock:
            self._expire(time.time())
            job = self._running.get(seq) or self._finished.get(seq)
            if job is not None:
                return job
            ready = self._ready
            i = bisect.bisect_left(ready, seq, key=_seq)
            if i < len(ready) and ready[i].key == seq:
                return ready[i]
            for entry in self._scheduled:
                if entry[2].key == seq:
                    return entry[2]
        return None

    # -- listings ----------------------------------------------------------
    def jobs(self, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        with self._lock:
            self._expire(time.time())
            sources: list[Iterable[Job]] = []
            if status is None or status is QUEUED or status is SCHEDULED:
                sched = sorted((e[2] for e in self._scheduled), key=_order, reverse=True)
                sources.append(sched)
                if status is None or status is QUEUED:
                    sources.append(reversed(self._ready))
            if status is None or status is RUNNING:
                sources.append(sorted(self._running.values(), key=_order, reverse=True))
            if status is None or status.finished:
                sources.append(sorted(self._finished.values(), key=_order, reverse=True))
            merged: Iterator[Job] = heapq.merge(*sources, key=_order, reverse=True)
            if status is not None:
                merged = (j for j in merged if j.status is status)
            return list(itertools.islice(merged, offset, offset + limit))

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._expire(time.time())
            counts = dict.fromkeys((s.value for s in JobStatus), 0)
            counts["queued"] = len(self._ready)
            counts["running"] = len(self._running)
            for entry in self._scheduled:
                counts[entry[2].status.value] += 1
            for job in self._finished.values():
                counts[job.status.value] += 1
        return counts

    def depth(self) -> int:
        return len(self._ready) + len(self._scheduled)

    def purge_finished(self) -> int:
        with self._lock:
            n = len(self._finished)
            self._finished.clear()
        return n

    def drop_waiting(self) -> list[Job]:
        with self._lock:
            self._closed = True  # an enqueue racing with shutdown must not slip in after this
            dropped = list(self._ready) + [e[2] for e in self._scheduled]
            self._ready.clear()
            self._scheduled.clear()
            if self._joiners and not self._running:
                self._drained.notify_all()
        return dropped

    # -- waiting -----------------------------------------------------------
    def join(self, timeout: float | None, *, due_only: bool = False) -> bool:
        def idle() -> bool:
            if self._ready or self._running:
                return False
            if due_only:
                return not self._scheduled or self._scheduled[0][0] > time.time()
            return not self._scheduled

        with self._drained:
            self._joiners += 1
            try:
                return self._drained.wait_for(idle, timeout)
            finally:
                self._joiners -= 1

    def waiter(self, job: Job) -> threading.Event | None:
        with self._lock:
            if job.finished:
                return None
            event = self._waiters.get(job.key)
            if event is None:
                event = self._waiters[job.key] = threading.Event()
            return event

    def wake(self) -> None:
        with self._lock:
            self._woken = True
            if self._sleeping:
                self._sleeping = False
                self._wakeup.release()


def _order(job: Job) -> tuple[float, int, str]:
    """Newest-first sort key that works for int and str ids alike.

    Ids of one enqueue time are compared by length first, so 10 comes after 9.
    """
    seq = str(job.key)
    return (job.enqueued_at, len(seq), seq)

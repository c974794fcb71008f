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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from time import sleep as _sleep
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError, DependencyError, QueueClosed, QueueFull
from ..job import JobStatus, describe_task
from .base import (
    Capabilities,
    Link,
    Storage,
    StoreContext,
    TickInfo,
    dependency_cancelled,
    dependency_failed,
    redact_url,
)
from .limits import LimitUse, MemoryLimiter, drop_held, is_limited

if TYPE_CHECKING:
    from ..job import Job, JobOptions

QUEUED = JobStatus.QUEUED
SCHEDULED = JobStatus.SCHEDULED
RUNNING = JobStatus.RUNNING
DEFERRED = JobStatus.DEFERRED
SUCCEEDED = JobStatus.SUCCEEDED
FAILED = JobStatus.FAILED
_seq = attrgetter("key")
#: Groups and dependents lists kept for lookups at least (beyond MEMQUEUE_MAX_FINISHED).
_WORKFLOW_MEMORY = 1000
#: Seconds an idle consumer sleeps at most before it looks at its lane again (it finds
#: nothing and sleeps on): a lock takes no timeout beyond ``threading.TIMEOUT_MAX``, and
#: a job scheduled 300 years ahead made the consumer's sleep raise OverflowError.
_LONGEST_NAP = 3600.0


class _Waiting:
    """What a deferred job still waits for: a counter, and the results it will be given.

    One per deferred job; a parent's completion decrements one counter and
    fills one slot, so a chord of 100,000 members costs each member O(1)
    (no list of ids rewritten per completion).
    """

    __slots__ = ("remaining", "results")

    def __init__(self, remaining: int, slots: int) -> None:
        self.remaining = remaining
        self.results: list[Any] = [None] * slots


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


class _Sleeper:
    """A consumer thread's place among a lane's sleepers: its wake-up lock, held while
    nobody needs waking, and the job a put handed it (see :meth:`MemoryStorage.put`)."""

    __slots__ = ("lock", "job")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.job: Job | None = None


class _Lane:
    """One named queue's waiting jobs, and the consumer threads asleep on it.

    Ready jobs sit in one deque per priority, each in job-number order (so a
    lookup by id is a binary search), with the priorities that have jobs kept
    in ``negprios`` (negated, ascending: the highest priority first). Jobs
    scheduled for later wait in a heap by due time; once due they move to
    ``due``, a heap by (priority, due time), and compete with ready jobs by
    priority, then due time (a ready job's is its enqueue time). Nearly every app has
    one priority per queue: then a take is a ``popleft`` as before.
    """

    __slots__ = ("name", "ready", "negprios", "scheduled", "due", "sleepers", "running", "paused", "held_slots")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: dict[int, deque[Job]] = {}
        self.negprios: list[int] = []
        self.scheduled: list[tuple[float, int, Job]] = []
        self.due: list[tuple[int, float, int, Job]] = []
        #: One per sleeping consumer thread (its pre-acquired lock, and the job a
        #: put hands it); a producer releases one (the thread wakes), wake() all.
        self.sleepers: list[_Sleeper] = []
        #: The lane's running jobs by key.
        self.running: dict[int | str, Job] = {}
        #: ``pause()``: take no job from this lane until ``resume()``.
        self.paused = False
        #: Jobs waiting for a concurrency slot, per key (the limiter's, for this lane).
        self.held_slots: dict[str, deque[tuple[float, int, Job]]] = {}

    def waiting(self) -> int:
        return sum(map(len, self.ready.values())) + len(self.scheduled) + len(self.due) + self.held()

    def held(self) -> int:
        """Jobs of this lane waiting for a concurrency slot (:class:`MemoryLimiter`)."""
        return sum(len(d) for d in self.held_slots.values()) if self.held_slots else 0

    def idle(self) -> bool:
        return not (self.negprios or self.due or self.running)

    def waiting_jobs(self) -> Iterator[Job]:
        for d in self.ready.values():
            yield from d
        for entry in self.scheduled:
            yield entry[2]
        for dentry in self.due:
            yield dentry[3]
        for held in self.held_slots.values():
            for hentry in held:
                yield hentry[2]


class _Finished:
    """The most recently finished jobs, at most ``limit``, oldest first, findable by key.

    Once an ``OrderedDict``: adding a job and dropping the oldest cost about
    0.25 µs per job of a 3.8 µs drain (the C OrderedDict rebuilds its node
    index as its dict resizes under that churn). Here the jobs sit in a
    ``deque(maxlen=limit)``, which drops the oldest by itself, and finishing a
    job is an append and a count: nothing else on the consumer's path. The
    index (key -> finishing number, which tells where the job is in the deque,
    if it is still there) is brought up to date by the lookups that need it,
    from the jobs finished since the last one: a drain nobody looks into
    pays no dict store per job (issue 19: 3.4 % of a drained job's
    instructions, and its memory traffic), a lookup after n finished jobs
    pays n stores once. The index only grows between rebuilds from the deque
    (when it holds twice ``limit`` keys, most of them of jobs dropped since).
    Lock held throughout.
    """

    __slots__ = ("jobs", "limit", "count", "index", "indexed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Finished jobs, oldest first.
        self.jobs: deque[Job] = deque(maxlen=limit)
        #: Jobs finished so far (the number of the newest).
        self.count = 0
        # key -> finishing number, for the jobs finished up to number `indexed`.
        self.index: dict[int | str, int] = {}
        self.indexed = 0

    def add(self, job: Job) -> None:
        if self.limit:  # (MemoryStorage.take inlines this)
            self.jobs.append(job)
            self.count += 1

    def _catch_up(self) -> None:
        """Index the jobs finished since the last lookup (those still in the deque)."""
        jobs = self.jobs
        new = min(self.count - self.indexed, len(jobs))
        index = self.index
        if len(index) + new > 2 * self.limit:  # mostly keys of jobs dropped since: start again
            index = self.index = {}
            new = len(jobs)
        number = self.count - new
        tail = list(itertools.islice(reversed(jobs), new))
        tail.reverse()
        for job in tail:
            number += 1
            index[job.key] = number
        self.indexed = self.count

    def get(self, key: int | str) -> Job | None:
        if self.indexed != self.count:
            self._catch_up()
        n = self.index.get(key)
        if n is None:
            return None
        jobs = self.jobs
        i = n - (self.count - len(jobs)) - 1  # jobs[0] finished as number count - len + 1
        if i < 0:
            return None  # dropped since
        job = jobs[i]
        return job if job.key == key else None

    def expire(self, limit: float) -> None:
        """Drop the jobs that finished at or before Unix time ``limit``."""
        jobs = self.jobs
        while jobs:
            out = jobs[0]._out
            if out is not None and (out.finished_at or 0.0) > limit:
                break
            jobs.popleft()

    def discard(self, job: Job) -> None:
        """Forget ``job`` (requeued): rebuild without it (rare; O(n))."""
        kept = [j for j in self.jobs if j is not job]
        if len(kept) == len(self.jobs):
            return
        self.clear()
        for j in kept:
            self.add(j)

    def clear(self) -> None:
        self.jobs.clear()
        self.index = {}
        self.indexed = self.count

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)


class _MemoryBook(Storage):
    """What a :class:`MemoryStorage` holds, and what reads it or settles a job in it.

    The base of :class:`MemoryStorage`, which adds the hot path (put, take)
    and the verbs on single jobs: two classes so that each stays readable.
    """

    def __init__(self, token: str, maxsize: int = 10_000, max_finished: int = 1000, result_ttl: float = 3600.0):
        self.token = token
        self.maxsize = maxsize
        self.max_finished = max_finished
        self.result_ttl = result_ttl
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._lanes: dict[str, _Lane] = {}
        self._waiting = 0  # jobs waiting in every lane: MEMQUEUE_MAXSIZE bounds it
        self._tiebreak = itertools.count()
        self._finished = _Finished(max_finished)
        # put()'s cache: the options of the last job it queued, and their lane and deque.
        self._put_options: JobOptions | None = None
        self._put_place: tuple[_Lane, deque[Job]] | None = None
        self._joiners = 0
        # Job.wait() events by job id, set when the job reaches a final state.
        # Kept here, not on the job, so the consumer (which fills in the job
        # without this lock) can never overwrite one.
        self._waiters: dict[int | str, threading.Event] = {}
        self._tls = threading.local()  # each consumer thread's own wake-up lock
        self._woken = False
        self._closed = False
        self._next_expiry = 0.0
        # Unique keys -> the live job holding each (released in _settle when it finishes).
        self._unique: dict[str, Job] = {}
        # Periodic tasks' last claimed ticks (this process's: the scheduler's host
        # lock makes it the one process of the app on the host that claims them).
        self._ticks: dict[str, TickInfo] = {}
        # Workflows: deferred jobs by key, what each still waits for, and the edges
        # from each parent not yet finished to its children ((child key, position)).
        # Empty unless workflows are used: the hot path checks `_deps` only.
        self._deferred: dict[int | str, Job] = {}
        self._pending: dict[int | str, _Waiting] = {}
        self._deps: dict[int | str, list[tuple[int | str, int]]] = {}
        # For lookups: each parent's children ids, each group's members (bounded).
        self._children: dict[int | str, list[str]] = {}
        self._groups: dict[str, list[Job]] = {}
        # Rate and concurrency limits (capabilities.limits): `_in_use` is the limiter's count of
        # admitted jobs per key, empty unless a limited job runs (the hot path checks it only).
        self._limiter = MemoryLimiter()
        self._in_use = self._limiter.in_use

    def _lane(self, name: str) -> _Lane:
        """The lane of queue ``name``, made on first use. Lock held."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(name)
        return lane

    def _lanes_of(self, queue: str | None) -> list[_Lane]:
        """Every lane, or the lane of ``queue`` (none if it never had a job). Lock held."""
        if queue is None:
            return list(self._lanes.values())
        lane = self._lanes.get(queue)
        return [] if lane is None else [lane]

    # -- settling a job the consumer ran ------------------------------------
    def _settle(self, job: Job) -> threading.Event | None:
        """Record a job the consumer ran: finished, or back to the schedule.

        Returns the event of a ``Job.wait()`` to set once the lock is released.
        Lock held. (``take`` inlines the common case.)
        """
        lane = self._lane(job.options.queue)
        lane.running.pop(job.key, None)
        if self._in_use and job.options.concurrency is not None:
            self._freed(job)
        event = None
        out = job._out
        if job.status is SCHEDULED:  # a retry, due later: a shutdown's join need not wait for it
            heapq.heappush(lane.scheduled, ((out.eta if out is not None else None) or 0.0, next(self._tiebreak), job))
            self._waiting += 1
        else:
            self._finished.add(job)
            now = out.finished_at if out is not None else None
            if now is None or now >= self._next_expiry:
                self._expire(now or time.time())
            if self._waiters:
                event = self._waiters.pop(job.key, None)
            if self._unique:
                key = job.options.unique_key
                if key is not None and self._unique.get(key) is job:
                    del self._unique[key]  # finished: its key is free
            if self._deps and job.key in self._deps:
                self._outcome_reached(job, now or time.time())
        if self._joiners and lane.idle():
            self._drained.notify_all()
        return event

    def _outcome_reached(self, parent: Job, now: float) -> None:
        """``parent`` finished: release or cancel what waits on it (:class:`_MemoryFlows`). Lock held."""

    # -- rate and concurrency limits (storage/limits.py) ---------------------------------------
    def _freed(self, job: Job) -> None:
        """``job`` (a limited one, admitted) left running, or was cancelled while due: its slot
        is free; the first job held for that slot goes back to its lane's heap. Lock held."""
        entry = self._limiter.release(job, [lane.held_slots for lane in self._lanes.values()])
        if entry is not None:
            lane = self._lane(entry[2].options.queue)
            heapq.heappush(lane.scheduled, entry)
            if lane.sleepers:
                lane.sleepers.pop().lock.release()

    def _limited_entry(self, lane: _Lane, job: Job, due: float) -> None:
        """Put a limited job in ``lane``'s heap, due at ``due``: it is checked when it comes due
        (:meth:`MemoryLimiter.admit`), never taken from the ready deques. Lock held."""
        heapq.heappush(lane.scheduled, (due, next(self._tiebreak), job))
        self._limiter.seen = True

    def limit_uses(self) -> list[LimitUse]:
        if not self._limiter.seen:  # /stats asks every time: an app without limits pays nothing
            return []
        with self._lock:
            waiting = [j for lane in self._lanes.values() for j in lane.waiting_jobs() if is_limited(j.options)]
            return self._limiter.uses(time.time(), waiting)

    def _expire(self, now: float) -> None:
        """Forget finished jobs older than the TTL (at most once a second). Lock held."""
        self._next_expiry = now + 1.0
        self._finished.expire(now - self.result_ttl)

    # -- abort requests -----------------------------------------------------
    def request_abort(self, job_id: str, reason: str) -> bool:
        """The job object is the record: its ``abort_requested`` turns true at once."""
        job = self.get(job_id)
        with self._lock:
            if job is None or job.status is not JobStatus.RUNNING:
                return False
            job._outcome().abort = reason
        return True

    def abort_requests(self, job_ids: Iterable[str]) -> dict[str, str]:
        found = {}
        for job_id in job_ids:
            job = self.get(job_id)
            reason = None if job is None or job.status is not JobStatus.RUNNING else job._outcome().abort
            if reason is not None:
                found[job_id] = reason
        return found

    # -- many jobs, pause and resume (issue 24) ---------------------------------------------
    def put_many(self, jobs: list[Job]) -> None:
        """Every job in one hold of the lock: all of them, or none (a full store, a closed queue)."""
        if not jobs:
            return
        with self._lock:
            if self._closed:
                raise QueueClosed(f"the queue was shut down; {len(jobs)} job(s) were not queued")
            if self.maxsize and self._waiting + len(jobs) > self.maxsize:
                raise QueueFull(
                    f"the queue holds {self._waiting} waiting jobs and MEMQUEUE_MAXSIZE is {self.maxsize}:"
                    f" a batch of {len(jobs)} does not fit, so none of it was queued"
                )
            now = time.time()
            woken: set[str] = set()
            for job in jobs:
                options = job.options
                lane = self._lanes.get(options.queue) or self._lane(options.queue)
                if job.status is SCHEDULED:
                    heapq.heappush(lane.scheduled, (job.eta if job.eta is not None else now, next(self._tiebreak), job))
                elif is_limited(options):
                    self._limited_entry(lane, job, job.enqueued_at)
                else:
                    ready = lane.ready.get(options.priority)
                    if ready and ready[-1].key < job.key:  # type: ignore[operator]  # keys here are ints
                        ready.append(job)
                    else:
                        _insert_ready(lane, ready, job)
                woken.add(options.queue)
            self._waiting += len(jobs)
            self._put_options = self._put_place = None
            for name in woken:
                _wake_all(self._lanes[name])

    def pause(self, queue: str) -> bool:
        with self._lock:
            lane = self._lane(queue)
            was, lane.paused = lane.paused, True
        return not was

    def resume(self, queue: str) -> bool:
        with self._lock:
            lane = self._lanes.get(queue)
            if lane is None or not lane.paused:
                return False
            lane.paused = False
            _wake_all(lane)
        return True

    def paused(self) -> set[str]:
        with self._lock:
            return {name for name, lane in self._lanes.items() if lane.paused}

    def delete(self, job: Job) -> bool:
        with self._lock:
            if not job.finished or self._finished.get(job.key) is not job:
                return False
            self._finished.discard(job)
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
            return self._find(seq)

    def _find(self, seq: int | str) -> Job | None:
        """The job of key ``seq`` wherever it is. Lock held."""
        self._expire(time.time())
        job = self._finished.get(seq)
        if job is not None:
            return job
        job = self._deferred.get(seq) if self._deferred else None
        if job is not None:
            return job
        for lane in self._lanes.values():
            job = lane.running.get(seq)
            if job is not None:
                return job
            for ready in lane.ready.values():
                i = bisect.bisect_left(ready, seq, key=_seq)
                if i < len(ready) and ready[i].key == seq:
                    return ready[i]
            job = next((j for j in _waiting_apart(lane) if j.key == seq), None)
            if job is not None:
                return job
        return None

    # -- listings ----------------------------------------------------------
    def jobs(
        self, status: JobStatus | None = None, limit: int = 50, offset: int = 0, *, queue: str | None = None
    ) -> list[Job]:
        with self._lock:
            self._expire(time.time())
            lanes = self._lanes_of(queue)
            sources: list[Iterable[Job]] = []
            if status is None or status is QUEUED or status is SCHEDULED or status is DEFERRED:
                waiting = [j for lane in lanes for j in lane.waiting_jobs()]
                waiting += [j for j in self._deferred.values() if queue is None or j.queue == queue]
                sources.append(sorted(waiting, key=_order, reverse=True))
            if status is None or status is RUNNING:
                sources.append(sorted((j for lane in lanes for j in lane.running.values()), key=_order, reverse=True))
            if status is None or status.finished:
                sources.append(sorted(self._finished, key=_order, reverse=True))
            merged: Iterator[Job] = heapq.merge(*sources, key=_order, reverse=True)
            if status is not None:
                merged = (j for j in merged if j.status is status)
            if queue is not None:
                merged = (j for j in merged if j.queue == queue)
            return list(itertools.islice(merged, offset, offset + limit))

    def counts(self, queue: str | None = None) -> dict[str, int]:
        with self._lock:
            self._expire(time.time())
            counts = dict.fromkeys((s.value for s in JobStatus), 0)
            lanes = self._lanes_of(queue)
            counts["running"] = sum(len(lane.running) for lane in lanes)
            counts["deferred"] = sum(1 for j in self._deferred.values() if queue is None or j.queue == queue)
            for lane in lanes:
                counts["queued"] += sum(map(len, lane.ready.values())) + lane.held()
                for entry in lane.scheduled:
                    counts[entry[2].status.value] += 1
                for dentry in lane.due:
                    counts[dentry[3].status.value] += 1
            for job in self._finished:
                if queue is None or job.queue == queue:
                    counts[job.status.value] += 1
        return counts

    def queue_counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for name, lane in self._lanes.items():
                row = {"queued": sum(map(len, lane.ready.values())) + lane.held(), "scheduled": 0,
                       "running": len(lane.running)}
                for job in itertools.chain((e[2] for e in lane.scheduled), (e[3] for e in lane.due)):
                    row[job.status.value] += 1
                out[name] = row
        return out

    def depth(self, queue: str | None = None) -> int:
        if queue is None:
            return self._waiting
        with self._lock:
            lane = self._lanes.get(queue)
            return 0 if lane is None else lane.waiting()

    def purge_finished(self) -> int:
        with self._lock:
            n = len(self._finished)
            self._finished.clear()
        return n

    def drop_waiting(self) -> list[Job]:
        with self._lock:
            self._closed = True  # an enqueue racing with shutdown must not slip in after this
            dropped = [job for lane in self._lanes.values() for job in lane.waiting_jobs()]
            dropped += self._deferred.values()
            self._deferred.clear()
            self._pending.clear()
            self._deps.clear()
            dropped.sort(key=_seq_order)
            self._put_options = self._put_place = None  # the deques it holds are dropped here
            for lane in self._lanes.values():
                lane.ready.clear()
                lane.negprios.clear()
                lane.scheduled.clear()
                lane.due.clear()
                lane.held_slots.clear()
            self._waiting = 0
            if self._joiners:
                self._drained.notify_all()
        return dropped

    # -- waiting -----------------------------------------------------------
    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        def idle() -> bool:
            lanes = self._lanes_of(queue)
            now = time.time()
            for lane in lanes:
                if not lane.idle():
                    return False
                if lane.scheduled and (not due_only or lane.scheduled[0][0] <= now):
                    return False
            return True

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
            for lane in self._lanes.values():
                while lane.sleepers:
                    lane.sleepers.pop().lock.release()


#: The first pause of a contended acquire (doubling up to _CONTENDED_MAX), in seconds.
_CONTENDED_FIRST = 2e-5
_CONTENDED_MAX = 1e-3


class _MemoryFlows(_MemoryBook):
    """Workflows on the memory store (``capabilities.workflows``): deferred jobs, the links to
    their parents, and their release or cancel under the store's lock, in the critical
    section that records the parent's outcome (:meth:`_MemoryBook._settle` calls
    :meth:`_outcome_reached`)."""

    # -- workflows ---------------------------------------------------------
    def put_workflow(self, jobs: list[Job], links: list[Link]) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosed(f"the queue was shut down; the workflow's {len(jobs)} jobs were not queued")
            if self.maxsize and self._waiting + len(jobs) > self.maxsize:
                raise QueueFull(
                    f"the workflow's {len(jobs)} jobs do not fit: the queue holds {self._waiting} of at most"
                    f" {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); none of them was queued"
                )
            mine = {job.id: job for job in jobs}
            parents = self._outside_parents(mine, links)
            # Checked: from here on nothing raises, so the workflow is queued whole.
            self._hold(jobs, links)
            for link in links:
                parent = mine.get(link.parent) or parents[link.parent]
                child = mine[link.child]
                self._deps.setdefault(parent.key, []).append((child.key, link.position))
                self._children.setdefault(parent.key, []).append(child.id)
            self._waiting += len(jobs)
            for job in jobs:
                if job.status is not DEFERRED:
                    self._place(job)
            now = time.time()
            for parent in parents.values():  # a parent that finished already counts now
                if parent.status.finished:
                    self._outcome_reached(parent, now)
            self._bound_lookups()

    def _outside_parents(self, mine: dict[str, Job], links: list[Link]) -> dict[str, Job]:
        """The parents the workflow names that it does not hold, found in the store. Lock held.

        :raises DependencyError: one of them is not in the store.
        """
        parents: dict[str, Job] = {}
        for link in links:
            if link.parent in mine or link.parent in parents:
                continue
            parent = self._by_id(link.parent)
            if parent is None:
                raise _missing(link.parent)
            parents[link.parent] = parent
        return parents

    def _hold(self, jobs: list[Job], links: list[Link]) -> None:
        """Register the workflow's deferred jobs (their counters and result slots) and its groups. Lock held."""
        slots: dict[str, int] = {}
        counts: dict[str, int] = {}
        for link in links:
            counts[link.child] = counts.get(link.child, 0) + 1
            if link.position >= 0:
                slots[link.child] = max(slots.get(link.child, 0), link.position + 1)
        for job in jobs:
            if job.status is DEFERRED:
                self._deferred[job.key] = job
                self._pending[job.key] = _Waiting(counts.get(job.id, 0), slots.get(job.id, 0))
            group = job.options.group
            if group is not None:
                self._groups.setdefault(group, []).append(job)

    def _by_id(self, job_id: str) -> Job | None:
        token, _, number = job_id.rpartition("-")
        if token != self.token:
            return None
        try:
            return self._find(int(number))
        except ValueError:
            return None

    def _place(self, job: Job) -> None:
        """Put a waiting job (counted in ``_waiting`` already) where a consumer takes it. Lock held."""
        lane = self._lane(job.options.queue)
        if job.status is SCHEDULED:
            heapq.heappush(lane.scheduled, (job.eta if job.eta is not None else time.time(), next(self._tiebreak), job))
        elif is_limited(job.options):
            self._limited_entry(lane, job, time.time())
        else:
            _insert_ready(lane, lane.ready.get(job.options.priority), job)
        if lane.sleepers:
            lane.sleepers.pop().lock.release()

    def _outcome_reached(self, parent: Job, now: float) -> None:
        """``parent`` finished: release or cancel what waits on it, transitively. Lock held.

        The same critical section records the parent's outcome, so a dependent is
        released exactly once, and never left waiting on a finished job.
        """
        stack: list[tuple[Job, str | None]] = [(parent, None)]
        while stack:
            done, reason = stack.pop()
            edges = self._deps.pop(done.key, None)
            if not edges:
                continue
            succeeded = done.status is SUCCEEDED
            for child_key, position in edges:
                child = self._deferred.get(child_key)
                if child is None:
                    continue  # cancelled already (by a user, or by another parent's failure)
                waiting = self._pending[child_key]
                if succeeded:
                    if position >= 0:
                        waiting.results[position] = done.result
                    waiting.remaining -= 1
                    if waiting.remaining <= 0:
                        del self._deferred[child_key], self._pending[child_key]
                        bind = child.options.bind
                        if bind == "first":
                            child.args = (waiting.results[0], *child.args)
                        elif bind == "list":
                            child.args = (waiting.results, *child.args)
                        child.status = QUEUED
                        self._place(child)
                    continue
                if reason is None:
                    reason = (dependency_cancelled(done.id, done.name) if done.status is JobStatus.CANCELLED
                              else dependency_failed(done.id, done.name, done.error))  # failed, aborted
                del self._deferred[child_key], self._pending[child_key]
                self._waiting -= 1
                child.mark_cancelled(now, reason)
                self._finished.add(child)
                event = self._waiters.pop(child_key, None) if self._waiters else None
                if event is not None:
                    event.set()
                stack.append((child, reason))

    def _bound_lookups(self) -> None:
        """Forget the oldest groups and dependents lists beyond what lookups keep. Lock held."""
        keep = max(_WORKFLOW_MEMORY, self.max_finished)
        for table in (self._groups, self._children):
            while len(table) > keep:
                del table[next(iter(table))]  # type: ignore[arg-type]

    def dependents(self, job_id: str) -> list[str]:
        token, _, number = job_id.rpartition("-")
        if token != self.token or not self._children:
            return []
        try:
            key = int(number)
        except ValueError:
            return []
        with self._lock:
            return list(self._children.get(key, ()))

    def dependents_many(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        if not self._children:
            return {}
        prefix = self.token + "-"
        out: dict[str, list[str]] = {}
        with self._lock:  # once for the page, not once per job
            for job_id in job_ids:
                number = job_id[len(prefix):] if job_id.startswith(prefix) else ""
                found = self._children.get(int(number)) if number.isascii() and number.isdigit() else None
                if found:
                    out[job_id] = list(found)
        return out

    def group_jobs(self, group_id: str) -> list[Job] | None:
        with self._lock:
            members = self._groups.get(group_id)
            return None if members is None else list(members)


class _MemoryAdds(_MemoryFlows):
    """Unique jobs and periodic ticks: the adds that are not :meth:`MemoryStorage.put`'s
    hot path (apart, so the store's main class stays readable in one piece)."""

    # -- unique keys and ticks ---------------------------------------------------
    def _add_locked(self, job: Job) -> None:
        """Queue or schedule ``job`` as :meth:`put`/:meth:`schedule` do. Lock held.

        Written apart from those two (and not called by them) so that their
        hot path stays one inlined critical section; unique and periodic jobs
        are rare enough to pay a call.
        """
        if self._closed:
            raise QueueClosed(f"the queue was shut down; {describe_task(job.name)} was not queued")
        if self.maxsize and self._waiting >= self.maxsize:
            raise QueueFull(
                f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); "
                f"{describe_task(job.name)} was not queued"
            )
        lane = self._lane(job.options.queue)
        if job.status is SCHEDULED:
            heapq.heappush(lane.scheduled, (job.eta if job.eta is not None else time.time(), next(self._tiebreak), job))
        elif is_limited(job.options):
            self._limited_entry(lane, job, job.enqueued_at)
        else:
            _insert_ready(lane, lane.ready.get(job.options.priority), job)
        self._waiting += 1
        if lane.sleepers:
            lane.sleepers.pop().lock.release()

    def put_unique(self, job: Job) -> Job:
        key = job.options.unique_key
        if key is None:
            raise ValueError("put_unique() needs a job with a unique_key")
        with self._lock:
            holder = self._unique.get(key)
            if holder is not None and not holder.finished:
                return holder
            self._add_locked(job)
            self._unique[key] = job
        return job

    def claim_tick(self, task: str, tick: float, job: Job | None) -> bool:
        with self._lock:
            last = self._ticks.get(task)
            if last is not None and last.tick >= tick:
                return False
            if job is not None:
                self._add_locked(job)
            self._ticks[task] = TickInfo(tick, None if job is None else job.id, time.time())
        return True

    def last_ticks(self) -> dict[str, TickInfo]:
        with self._lock:
            return dict(self._ticks)


class MemoryStorage(_MemoryAdds):
    """Waiting, scheduled, running and recently finished jobs, in memory.

    :param token: the queue's id prefix; ids with another prefix are not ours.
    :param maxsize: waiting jobs (queued + scheduled, every queue) at most; 0 = no limit.
    :param max_finished: finished jobs kept for lookups at most.
    :param result_ttl: seconds a finished job is kept.
    """

    #: Jobs live in this process only: the fast path keeps live objects; an
    #: abort request is written on the running job itself.
    capabilities = Capabilities(workflows=True, abort_flags=True, pausable=True, bulk_actions=True, limits=True)
    url = "memory://"

    # -- the hot path ------------------------------------------------------
    def _refuse(self, job: Job) -> None:
        """Why ``put`` cannot take ``job``: raises. Lock held."""
        if self._closed:
            raise QueueClosed(f"the queue was shut down; {describe_task(job.name)} was not queued")
        raise QueueFull(
            f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); {describe_task(job.name)} was not queued"
        )

    def put(self, job: Job) -> None:
        options = job.options
        lock = self._lock
        if not lock.acquire(False):  # not `with`, and never a blocking acquire: see _acquire_contended
            _acquire_contended(lock)
        try:
            if self._closed or (self.maxsize and self._waiting >= self.maxsize):
                self._refuse(job)
            if options is self._put_options:  # the same queue and priority as the last put: most apps
                lane, ready = self._put_place  # type: ignore[misc]  # set with _put_options
            else:
                lane = self._lanes.get(options.queue) or self._lane(options.queue)
                if options.concurrency is not None or options.rate_limit is not None:  # never cached
                    self._limited_entry(lane, job, job.enqueued_at)
                    self._waiting += 1
                    if lane.sleepers:
                        lane.sleepers.pop().lock.release()
                    return
                ready = lane.ready.get(options.priority)
                if ready is None:
                    ready = lane.ready[options.priority] = deque()
                self._put_options, self._put_place = options, (lane, ready)
            sleepers = lane.sleepers
            if sleepers and not (lane.negprios or lane.scheduled or lane.due or lane.paused):
                # A consumer sleeps on an empty lane: this job is the next it would take, so
                # it is taken for it here (RUNNING, as take() does) and handed over with the
                # wake-up: the consumer returns it without looking at the lane again. Half
                # of what an idle consumer's wake-up cost on C's critical path (enqueue to
                # the job's first line): 541 bytecodes against raw_flask's 391 before.
                job.status = RUNNING
                lane.running[job.key] = job
                sleeper = sleepers.pop()
                sleeper.job = job
                sleeper.lock.release()
                return
            if not ready:  # an empty queue of this priority: its priority comes back
                ready.append(job)
                negprios = lane.negprios
                if negprios:
                    bisect.insort(negprios, -options.priority)
                else:
                    negprios.append(-options.priority)
            elif ready[-1].key < job.key:  # type: ignore[operator]  # keys here are ints
                ready.append(job)  # the common case: behind a job of its priority, in number order
            else:
                _insert_ready(lane, ready, job)
            self._waiting += 1
            if sleepers:  # (a paused lane's, or one with jobs scheduled)
                sleepers.pop().lock.release()
        finally:
            lock.release()

    def schedule(self, job: Job, *, retry: bool = False) -> None:
        due = job.eta if job.eta is not None else time.time()
        with self._lock:
            if self._closed and not retry:
                raise QueueClosed(f"the queue was shut down; {job.name} was not scheduled")
            if not retry and self.maxsize and self._waiting >= self.maxsize:
                raise QueueFull(
                    f"the queue holds {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); "
                    f"{job.name} was not scheduled"
                )
            lane = self._lane(job.options.queue)
            if retry:
                lane.running.pop(job.key, None)
                if self._in_use and job.options.concurrency is not None:
                    self._freed(job)
            heapq.heappush(lane.scheduled, (due, next(self._tiebreak), job))
            self._waiting += 1
            if lane.sleepers:  # a consumer may sleep past this job's due time
                lane.sleepers.pop().lock.release()

    def take(
        self,
        timeout: float | None,
        done: Job | None = None,
        *,
        queue: str = "default",
        stop: Callable[[], bool] | None = None,
    ) -> Job | None:
        lock = self._lock
        event = None
        if not lock.acquire(False):
            _acquire_contended(lock)
        try:
            lane = self._lanes.get(queue) or self._lane(queue)
            if done is not None:
                event = self._settle_done(lane, done)
            negprios = lane.negprios
            deadline = None
            while True:
                # The common case inlined (what _pop does): nothing scheduled, ready jobs waiting.
                if negprios and not lane.scheduled and not lane.due and not lane.paused:
                    ready = lane.ready[-negprios[0]]
                    job = ready.popleft()
                    if not ready:
                        del negprios[0]
                    self._waiting -= 1
                    job.status = RUNNING  # Job.mark_running(), inlined: the hot path
                    lane.running[job.key] = job
                    return job
                found = self._pop(lane)
                if found is not None:
                    return found
                # Nothing due: sleep, unless told to stop.
                if self._told_to_stop(stop):
                    return None
                if timeout is not None and deadline is None:
                    deadline = time.monotonic() + timeout
                me = self._nap(lane, deadline, event)
                if me is None:
                    return None
                event = None  # _nap set it, with the lock released
                handed = me.job
                if handed is not None:  # a put took it for this thread (RUNNING, in lane.running)
                    me.job = None
                    return handed
        finally:
            lock.release()
            if event is not None:
                event.set()

    def _settle_done(self, lane: _Lane, done: Job) -> threading.Event | None:
        """:meth:`_settle` for the job ``take`` was handed back, its common case inlined. Lock held.

        The common case: the job finished in this lane, nobody waits for it
        by id, no job holds a unique key. One call per job (a method apart so
        that ``take`` stays readable; it costs ~1% of a drained job's instructions).
        """
        if (lane.running.pop(done.key, None) is not done or done.status is SCHEDULED or self._waiters
                or self._unique or self._deps or self._in_use):
            return self._settle(done)
        finished = self._finished
        if finished.limit:  # _Finished.add(), inlined
            finished.jobs.append(done)
            finished.count += 1
        out = done._out
        now = None if out is None else out.finished_at
        if now is None or now >= self._next_expiry:
            self._expire(now or time.time())
        if self._joiners and not (lane.negprios or lane.due or lane.running):  # lane.idle()
            self._drained.notify_all()
        return None

    def _told_to_stop(self, stop: Callable[[], bool] | None) -> bool:
        """Whether an idle ``take`` returns None now: ``stop()`` says so, or (without
        ``stop``) :meth:`wake` was called since. Lock held."""
        if stop is None:
            if self._woken:
                self._woken = False
                return True
            return False
        return stop()

    def _nap(self, lane: _Lane, deadline: float | None, event: threading.Event | None) -> _Sleeper | None:
        """Sleep until a put wakes this thread, the lane's next scheduled job is
        due, or ``deadline`` (monotonic) passes; None at once if it has passed,
        else this thread's sleeper (with the job a put handed it, if one did).

        Releases the lock while asleep (and sets ``event``, a finished job's
        waiter, then), holds it again on return. Lock held.
        """
        wait: float | None = None
        if lane.scheduled and not lane.paused:  # paused: resume() wakes it
            wait = max(0.0, lane.scheduled[0][0] - time.time())
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = left if wait is None else min(wait, left)
        if wait is not None and wait > _LONGEST_NAP:  # a job due in 30,000 years, a huge timeout
            wait = _LONGEST_NAP
        me = self._sleeper()
        lane.sleepers.append(me)
        lock = self._lock
        lock.release()
        if event is not None:
            event.set()
        woken = me.lock.acquire(True, -1 if wait is None else wait)
        if not lock.acquire(False):
            _acquire_contended(lock)
        if not woken:
            try:
                lane.sleepers.remove(me)
            except ValueError:  # released just as we timed out: take the release back
                me.lock.acquire(False)
        return me

    def _sleeper(self) -> _Sleeper:
        """This thread's sleeper (its wake-up lock held while nobody needs waking)."""
        try:
            return self._tls.sleeper  # type: ignore[no-any-return]
        except AttributeError:
            me = self._tls.sleeper = _Sleeper()
            return me

    def _pop(self, lane: _Lane) -> Job | None:
        """The next due job of ``lane``, now RUNNING, or None. Lock held.

        Priority first, then due time: a scheduled or retried job that has
        become due competes with the ready jobs of its priority by its due
        time (its eta; a requeued job's is when it was requeued) against the
        first ready job's enqueue time, the older first (the ready job on a tie).
        A paused lane gives none.
        """
        if lane.paused:
            return None
        sched = lane.scheduled
        if sched:
            now = time.time()
            while sched and sched[0][0] <= now:
                entry = heapq.heappop(sched)
                job = entry[2]
                o = job.options
                if (o.concurrency is not None or o.rate_limit is not None) and not self._limiter.admit(
                        entry, sched, lane.held_slots, now):
                    continue  # held for a slot, or back in the heap until the next window
                heapq.heappush(lane.due, (-o.priority, entry[0], entry[1], job))
        negprios = lane.negprios
        if lane.due and (not negprios or _due_first(lane.due[0], negprios[0], lane.ready[-negprios[0]][0])):
            job = heapq.heappop(lane.due)[3]
        elif negprios:
            ready = lane.ready[-negprios[0]]
            job = ready.popleft()
            if not ready:
                del negprios[0]
        else:
            return None
        self._waiting -= 1
        job.status = RUNNING  # Job.mark_running(), inlined: the hot path
        lane.running[job.key] = job
        return job

    def finish(self, job: Job) -> None:
        with self._lock:
            event = self._settle(job)
        if event is not None:
            event.set()

    # -- single jobs -------------------------------------------------------
    def _remove_waiting(self, job: Job) -> bool:
        """Take a waiting job out of its place. Lock held."""
        options = job.options
        lane = self._lanes.get(options.queue)
        if lane is None:
            return False
        if job.status is QUEUED and job.key.__class__ is int:
            ready = lane.ready.get(options.priority)
            if ready:
                i = bisect.bisect_left(ready, job.key, key=_seq)
                if i < len(ready) and ready[i] is job:
                    del ready[i]
                    if not ready:
                        lane.negprios.remove(-options.priority)
                    self._waiting -= 1
                    return True
        if _remove_from_heap(lane.scheduled, job):
            self._waiting -= 1
            return True
        if _remove_from_heap(lane.due, job):
            self._waiting -= 1
            if self._in_use and job.options.concurrency is not None:
                self._freed(job)  # admitted, not started: its slot goes to the next
            return True
        if lane.held_slots and drop_held(job, lane.held_slots):
            self._waiting -= 1
            return True
        return False

    def cancel(self, job: Job) -> bool:
        with self._lock:
            changed, event = self._cancel_locked(job, time.time())
        if event is not None:
            event.set()
        return changed

    def _cancel_locked(self, job: Job, now: float) -> tuple[bool, Any]:
        """Cancel ``job`` if it waits (the lock held); whether it did, and the event to set after."""
        if job.status is DEFERRED:
            if self._deferred.pop(job.key, None) is not job:
                return False, None
            self._pending.pop(job.key, None)
            self._waiting -= 1
        elif job.status not in (QUEUED, SCHEDULED) or not self._remove_waiting(job):
            return False, None
        job.mark_cancelled(now)
        return True, self._settle(job)

    def requeue(self, job: Job) -> bool:
        with self._lock:
            return self._requeue_locked(job, time.time())

    def _requeue_locked(self, job: Job, now: float) -> bool:
        """Queue a failed, cancelled or aborted ``job`` again (the lock held)."""
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED):
            return False
        self._finished.discard(job)
        job.reset_for_requeue(now)
        if job.unique_key is not None:  # takes its key back unless another live job holds it now
            holder = self._unique.get(job.unique_key)
            if holder is None or holder.finished:
                self._unique[job.unique_key] = job
        # A requeued job keeps its old number, so it cannot join a
        # number-ordered deque; as a "scheduled" entry due now it takes its
        # place by priority, then by the time it was requeued (_pop).
        lane = self._lane(job.queue)
        heapq.heappush(lane.scheduled, (now, next(self._tiebreak), job))
        self._waiting += 1
        if lane.sleepers:
            lane.sleepers.pop().lock.release()
        return True

    def act_on_batch(self, action: str, jobs: list[Job], done: Callable[[Job], None] | None = None) -> int:
        """A batch in one hold of the lock (``capabilities.bulk_actions``); the lock is let go
        between batches, so a bulk action over many jobs never stops the consumers for long."""
        now = time.time()
        changed: list[Job] = []
        events = []
        with self._lock:
            for job in jobs:
                if action == "retry":
                    ok = self._requeue_locked(job, now)
                elif action == "cancel":
                    ok, event = self._cancel_locked(job, now)
                    if event is not None:
                        events.append(event)
                else:
                    ok = job.finished and self._finished.get(job.key) is job
                    if ok:
                        self._finished.discard(job)
                if ok:
                    changed.append(job)
        for event in events:
            event.set()
        if done is not None:
            for job in changed:
                done(job)
        return len(changed)


def _waiting_apart(lane: _Lane) -> Iterator[Job]:
    """The waiting jobs of ``lane`` outside its ready deques: scheduled, due, held for a slot."""
    for entry in lane.scheduled:
        yield entry[2]
    for dentry in lane.due:
        yield dentry[3]
    for held in lane.held_slots.values():
        for hentry in held:
            yield hentry[2]


def _acquire_contended(lock: threading.Lock) -> None:
    """Take ``lock``, which another thread holds, without ever blocking on it.

    A thread blocked in ``lock.acquire()`` takes the lock the moment it is
    released, before it has the GIL back, and then waits for the GIL while
    holding the lock; the thread that has the GIL soon wants the lock again,
    blocks on it, hands over the GIL, and the roles swap. Once a producer and
    a consumer fall into that (a lock convoy), every job costs two context
    switches: it is what made the end-to-end benchmark bimodal (thousands of
    voluntary context switches per 20,000 jobs in the slow runs, a few dozen
    in the fast ones). Sleeping between non-blocking tries instead, a waiting
    thread holds nothing while it waits for the GIL, so the convoy cannot form.
    The holder only ever holds this lock for a few dozen bytecodes.
    """
    pause = _CONTENDED_FIRST
    while True:
        _sleep(pause)
        if lock.acquire(False):
            return
        pause = min(pause * 2, _CONTENDED_MAX)


def _missing(job_id: str) -> DependencyError:
    return DependencyError(
        f"depends_on: this app's queue holds no job {job_id!r}: it never existed here, it belongs to another"
        " app, or it finished long enough ago to be forgotten (MEMQUEUE_RESULT_TTL, MEMQUEUE_MAX_FINISHED);"
        " nothing was queued"
    )


def _wake_all(lane: _Lane) -> None:
    """Wake every consumer thread asleep on ``lane``. Lock held."""
    while lane.sleepers:
        lane.sleepers.pop().lock.release()


def _remove_from_heap(heap: list[Any], job: Job) -> bool:
    """Remove ``job``'s entry (its last item) from a heap. Lock held."""
    for i, entry in enumerate(heap):
        if entry[-1] is job:
            heap[i] = heap[-1]
            heap.pop()
            heapq.heapify(heap)
            return True
    return False


def _insert_ready(lane: _Lane, ready: deque[Job] | None, job: Job) -> None:
    """Put ``job`` among the ready jobs of its priority (``ready``, if that deque
    exists yet) in number order. Lock held.

    Numbers are taken before the store's lock (threads race between
    ``next(ids)`` and the lock), so a job can arrive after one numbered later.
    Appending would break the deque's order, and get()/cancel() binary-search
    it: the job would be invisible and uncancellable while it waits. It lands
    a few places from the end, so this costs little, and only when enqueuers race.
    """
    prio = job.options.priority
    if ready is None:
        ready = lane.ready[prio] = deque()
    if not ready:
        bisect.insort(lane.negprios, -prio)
        ready.append(job)
    else:
        bisect.insort_right(ready, job, key=_seq)


def _due_first(due: tuple[int, float, int, Job], negprio: int, ready: Job) -> bool:
    """True if the due entry ``due`` runs before ``ready``, the first ready job of
    priority ``-negprio``: a higher priority, or the same and an earlier due time."""
    if due[0] != negprio:
        return due[0] < negprio
    return due[1] < ready.enqueued_at


def _seq_order(job: Job) -> tuple[int, str]:
    seq = str(job.key)
    return (len(seq), seq)


def _order(job: Job) -> tuple[float, int, str]:
    """Newest-first sort key that works for int and str ids alike.

    Ids of one enqueue time are compared by length first, so 10 comes after 9.
    """
    seq = str(job.key)
    return (job.enqueued_at, len(seq), seq)

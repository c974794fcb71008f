"""The consumer side of the Redis store: less than a round trip per job.

Each consumer thread has a :class:`Slot`: its own list in Redis
(``P:w:<owner>:<slot>``), the jobs it claimed ahead, and the outcomes it has
not written yet. :class:`Claimer` is ``take()`` over them:

- **Claims in batches.** A consumer thread of a running worker (``take`` with a
  ``stop``) claims several due jobs in one script, as many as it expects to run
  in about :data:`BATCH_SECONDS` (measured on its last batches), at most the
  ``prefetch`` option: short jobs go many to a round trip, a job of a second or
  more one at a time (as before). The same script records the outcomes of the
  jobs it ran since its last claim. ``run_once()`` and ``take()`` without a
  ``stop`` claim one job.
- **Outcomes written late, but soon.** The outcome of a job run from a batch is
  written with the next claim, or with the first of these: a job this process
  waits for (``Job.wait()`` here), or :data:`FLUSH_AFTER` s (the heartbeat
  writes them), or the consumer's exit.
- **Handed over when idle.** A consumer that finds nothing due says so in the
  same script (it joins ``P:i:<queue>``) and blocks on its own list. An enqueue
  that finds an idle consumer, and nothing due before its job, claims the job
  for that consumer and pushes it there: the consumer starts it without another
  round trip. A registration lapses :data:`LISTEN_MARGIN` s after its wait ends
  (a killed worker), so an enqueue hands a job to a dead consumer only in that
  window, and that job is given back (uncounted) once the dead owner's lease lapses.

What a job claimed ahead means for the promises of the store: it shows as
running, so a cancel no longer stops it; it does not count as waiting for
``MEMQUEUE_MAXSIZE``; a job of a higher priority queued after the batch was
claimed waits for the batch (about :data:`BATCH_SECONDS`); a consumer that
stops gives back what it did not start, and if its process dies, those jobs go
back to their queue, their attempt not counted, once its lease lapsed (a job
that had started is taken over as before: one attempt counted). The heartbeat
tells Redis which jobs claimed ahead have started, within 0.1 s.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...exceptions import MemQueueError
from ...job import Job
from ..durable import PAUSE_POLL, RECOVER_INTERVAL
from .records import RedisRecord, parse

if TYPE_CHECKING:
    from .store import RedisStorage

logger = logging.getLogger("flask_memqueue")

#: A consumer thread claims about this many seconds of work at once (when its jobs are short).
BATCH_SECONDS = 0.02
#: Outcomes of jobs run from a batch are written within about this long (or with the next claim).
FLUSH_AFTER = 0.1
#: Seconds an idle consumer's registration outlasts its wait (it renews it each time it looks),
#: so a killed worker's lapses this long after its last look.
LISTEN_MARGIN = 1.0
#: After a claim that emptied its queue without filling its batch (producers queue about as
#: fast as the consumer runs), the consumer lingers this long before it claims again, so that
#: what producers queue meanwhile comes in one round trip rather than one each. (A consumer
#: that found nothing does not linger: an enqueue hands it the next job at once.)
LINGER = 0.001


class Slot:
    """One consumer thread's place in the store."""

    __slots__ = ("name", "thread", "lock", "buffer", "pending", "since", "limit", "claimed_at", "batch",
                 "claimed", "per_job", "queue", "blocked", "listening", "releases")

    def __init__(self, name: str, thread: threading.Thread) -> None:
        self.name = name
        self.thread = thread
        #: Guards ``pending`` (the heartbeat writes old outcomes) and ``buffer``.
        self.lock = threading.Lock()
        #: Records claimed ahead, not started yet, in claim order.
        self.buffer: deque[RedisRecord] = deque()
        #: Jobs that ran here whose outcome is not written yet.
        self.pending: list[Job] = []
        #: When (monotonic) the oldest of them was added.
        self.since = 0.0
        #: How many jobs the next claim asks for.
        self.limit = 1
        #: When the last batch was claimed, and how many jobs it held.
        self.claimed_at = 0.0
        self.batch = 0
        #: The last jobs came from a claim (not handed over while idle).
        self.claimed = False
        #: Seconds a job took here, on average over the last batches (None: not known).
        self.per_job: float | None = None
        #: The queue it consumes (its registration is in that queue's idle set).
        self.queue: str | None = None
        #: Blocked in Redis on its own list now.
        self.blocked = False
        #: Registered as idle (an enqueue may hand it a job).
        self.listening = False
        #: A job run since the last claim has dependents: its outcome releases work, so the
        #: next claim does not linger (a chain's next link is claimed by that same script).
        self.releases = False


class Claimer:
    """``take()`` of one Redis store, over one :class:`Slot` per consumer thread."""

    def __init__(self, store: RedisStorage, prefetch: int) -> None:
        self.store = store
        self.prefetch = prefetch
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slots: dict[str, Slot] = {}
        self._names = itertools.count(1)

    # -- slots -----------------------------------------------------------------------------------
    def slot(self) -> Slot:
        """This thread's slot (made on first use)."""
        slot: Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = Slot(str(next(self._names)), threading.current_thread())
            with self._lock:
                self._slots[slot.name] = slot
        return slot

    def slots(self) -> list[Slot]:
        with self._lock:
            return list(self._slots.values())

    @property
    def blocked(self) -> int:
        """How many consumer threads are blocked in Redis now."""
        return sum(1 for s in self.slots() if s.blocked)

    def key(self, slot: Slot) -> str:
        return f"{self.store.prefix}:w:{self.store.owner}:{slot.name}"

    # -- take --------------------------------------------------------------------------------------
    def take(self, timeout: float | None, done: Job | None, queue: str, stop: Callable[[], bool] | None) -> Job | None:
        try:
            return self._take(timeout, done, queue, stop)
        except MemQueueError:
            if self.store._closing.is_set():
                return None  # the store closed under a consumer that was stopping anyway
            raise

    def _take(self, timeout: float | None, done: Job | None, queue: str, stop: Callable[[], bool] | None) -> Job | None:
        store = self.store
        slot = self.slot()
        halt = stop if stop is not None else store._is_woken
        if done is not None:
            self.defer(slot, done)
        buffered = self._buffered(slot, queue, halt)
        if buffered is not None:
            return buffered
        if stop is not None and timeout is None:
            return self._loop(slot, queue, stop)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._wait_out_pause(slot, queue, halt, deadline):
                return None
            halted = bool(halt())
            left = None if deadline is None else deadline - time.monotonic()
            listen = not halted and (left is None or left > 0.002)
            records, _, _ = self._claim(slot, queue, halted, listen, 1)
            if records:
                slot.buffer.extend(records[1:])
                return self._start(slot, records[0])
            if halted:
                if stop is None:
                    store.doorbell.woken = False  # the first taker woken returns None
                return None
            if not listen:
                return None
            wait = store.chores.idle(queue)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            handed = self._listen(slot, wait)
            if handed is not None:
                return self._start(slot, handed)

    def _loop(self, slot: Slot, queue: str, stop: Callable[[], bool]) -> Job | None:
        """``take`` of a consumer loop: one round trip per turn. The claim (which records what
        ran, and registers the consumer as idle if it finds nothing) and the wait on the
        consumer's own list go to Redis together: a claim that finds jobs pushes a wake-up
        the wait takes at once; else the wait returns a job an enqueue hands over, a
        wake-up, or nothing after ``idle_wait`` (or sooner, when a scheduled job is due)."""
        store = self.store
        eta: float | None = None
        linger = slot.claimed and slot.batch < slot.limit and not slot.releases
        slot.limit = self._limit(slot)  # by the time the last batch took, before any lingering
        if linger:
            store._closing.wait(LINGER)
        while True:
            if stop():
                self._claim(slot, queue, True, False, 0)
                return None
            if store._is_paused(queue):
                self._paused(slot, queue, None)
                continue
            if slot.buffer:  # prefetched before a pause that has ended
                return self._start(slot, slot.buffer.popleft())
            now = time.time()
            store.chores.due(now)
            wait = store.idle_wait if eta is None else max(0.0, min(store.idle_wait, eta - now))
            pipelined = store.client.fcall is not None and wait >= 0.001 and not store._closing.is_set()
            records, eta, handed = self._claim(slot, queue, False, True, slot.limit,
                                               wait if pipelined else None)
            if records:
                slot.buffer.extend(records[1:])
                return self._start(slot, records[0])
            if not pipelined:
                if eta is not None:
                    wait = max(0.0, min(wait, eta - time.time()))
                handed = self._listen(slot, wait)
            if handed is not None:
                return self._start(slot, handed)

    def _buffered(self, slot: Slot, queue: str, halt: Callable[[], bool]) -> Job | None:
        """A job this consumer prefetched, started now, unless told to stop or the queue is paused."""
        if slot.buffer and not halt() and not self.store._is_paused(queue):
            return self._start(slot, slot.buffer.popleft())
        return None

    def _wait_out_pause(self, slot: Slot, queue: str, halt: Callable[[], bool], deadline: float | None) -> bool:
        """While ``queue`` is paused (and no stop is asked), :meth:`_paused`; False once
        ``deadline`` (monotonic) passed meanwhile, True when the consumer may claim."""
        while self.store._is_paused(queue) and not halt():
            if not self._paused(slot, queue, None if deadline is None else deadline - time.monotonic()):
                return False
        return True

    def _paused(self, slot: Slot, queue: str, left: float | None) -> bool:
        """``queue`` is paused (issue 24): record what this consumer ran, claim nothing, stay out
        of the idle set (so no enqueue hands it a job), and sleep until the next look at the
        paused queues; False once ``left`` seconds are spent. Jobs prefetched before the pause
        wait in the buffer (still claimed by this process) until the resume."""
        if left is not None and left <= 0:
            return False
        self._claim(slot, queue, True, False, 0)
        self.store._closing.wait(PAUSE_POLL if left is None else min(PAUSE_POLL, left))
        return True

    def _limit(self, slot: Slot) -> int:
        """How many jobs the next claim of a consumer loop asks for: about BATCH_SECONDS of
        work by the time its last batches took, at most ``prefetch``."""
        if slot.batch:
            took = (time.monotonic() - slot.claimed_at) / slot.batch
            slot.per_job = took if slot.per_job is None else (slot.per_job + took) / 2
            slot.batch = 0
        if slot.per_job is None:
            return 1
        return max(1, min(self.prefetch, int(BATCH_SECONDS / max(slot.per_job, 1e-6))))

    def _start(self, slot: Slot, record: RedisRecord) -> Job:
        store = self.store
        job = store.codec.claimed(record)
        if record.waited_on:
            slot.releases = True
        store.heartbeat.track(job, started=True)  # if it was claimed ahead, Redis hears it started
        if slot.pending and (time.monotonic() - slot.since > FLUSH_AFTER or self._awaited(slot)):
            self.flush(slot, quiet=True)
        return job

    def _awaited(self, slot: Slot) -> bool:
        waiting = self.store.waiters.waiting_for
        return any(waiting(job.id) for job in slot.pending)

    def defer(self, slot: Slot, job: Job) -> None:
        """``job`` ran here: its outcome is written with the next claim, or sooner."""
        with slot.lock:
            if not slot.pending:
                slot.since = time.monotonic()
            slot.pending.append(job)

    def _claim(self, slot: Slot, queue: str, halted: bool, listen: bool, limit: int,
               block: float | None = None) -> tuple[list[RedisRecord], float | None, RedisRecord | None]:
        """One claim script: record what ran, give back what a stopping consumer did not
        start, take the jobs handed over meanwhile, claim up to ``limit`` more; if none,
        register as idle (``listen``). With ``block``, the slot's wait (``BLPOP``, that long)
        goes in the same round trip. Returns the records claimed, the queue's next eta (when
        none was), and a record an enqueue handed over during the wait."""
        store = self.store
        with store._ulock:
            settle, store._unsettled = store._unsettled, []
        with slot.lock:
            settle += slot.pending
            slot.pending = []
            slot.releases = False
            release = list(slot.buffer) if halted else []
            if halted:
                slot.buffer.clear()
        if slot.queue is not None and slot.queue != queue and slot.listening:
            self._leave(slot)  # listening on another queue before (a thread given a new queue)
        slot.queue = queue
        if block is not None:
            slot.blocked = True
        try:
            now = time.time()
            if now >= store._next_recover:
                store._next_recover = now + RECOVER_INTERVAL
                store.recover()
            records, eta, got = store._claim_batch(settle, now, queue, halted, limit, slot.name, listen,
                                                   [r.id for r in release], self.key(slot), block,
                                                   slot.listening or halted)
        except BaseException:
            with store._ulock:
                store._unsettled.extend(settle)
            if release:
                with slot.lock:
                    slot.buffer.extendleft(reversed(release))
            raise
        finally:
            slot.blocked = False
        slot.listening = listen and not records
        for ran in settle:
            store._after_settle(ran)
        if records:
            slot.claimed_at = time.monotonic()
            slot.batch = len(records)
            slot.claimed = True
        return records, eta, self._handed(slot, got)

    def _handed(self, slot: Slot, got: list[str] | None) -> RedisRecord | None:
        """What a wait on the slot's list returned: a job an enqueue handed over, or None."""
        if not got:
            return None
        jid, nl, text = got[1].partition("\n")
        if not nl:
            return None  # a wake-up: claim
        slot.listening = False  # the enqueuer took the registration
        slot.claimed_at = time.monotonic()
        slot.batch = 1
        slot.claimed = False
        return parse(jid, text)

    def _listen(self, slot: Slot, wait: float) -> RedisRecord | None:
        """Block on this slot's list up to ``wait`` s: a job an enqueue handed over, or None
        (a wake-up, or the time is up: the caller claims again)."""
        store = self.store
        if wait < 0.001 or store.doorbell.woken or store._closing.is_set():
            return None
        slot.blocked = True
        try:
            got = store.client.blpop(self.key(slot), wait, "waiting for jobs")
        finally:
            slot.blocked = False
        return self._handed(slot, got)

    # -- outcomes and leaving -----------------------------------------------------------------------
    def flush(self, slot: Slot, *, quiet: bool = False) -> None:
        """Write the outcomes ``slot`` holds back (one script)."""
        with slot.lock:
            pending, slot.pending = slot.pending, []
        if not pending:
            return
        try:
            self.store._save_many(pending)
        except MemQueueError as exc:
            with slot.lock:
                slot.pending[:0] = pending
                slot.since = min(slot.since, time.monotonic())
            if not quiet:
                raise
            logger.debug("writing %d outcome(s) failed (written with the next claim): %s", len(pending), exc)

    def flush_due(self) -> None:
        """The heartbeat's turn: outcomes older than FLUSH_AFTER, and the slots of threads
        that ended without leaving (their claims ahead go back)."""
        now = time.monotonic()
        for slot in self.slots():
            if not slot.thread.is_alive():
                self.forget(slot)
            elif slot.pending and now - slot.since > FLUSH_AFTER:
                self.flush(slot, quiet=True)

    def finished(self, job: Job) -> bool:
        """``finish(job)`` from a consumer thread that holds a slot: its outcome goes with the
        outcomes the slot holds, and what it claimed ahead goes back (a consumer loop calls
        ``finish`` as it exits). False if this thread has no slot with anything to do."""
        slot: Slot | None = getattr(self._local, "slot", None)
        if slot is None or not (slot.pending or slot.buffer or slot.listening):
            return False
        self.defer(slot, job)
        self._claim(slot, slot.queue or job.queue, True, False, 0)
        return True

    def _leave(self, slot: Slot) -> None:
        """Stop listening on ``slot.queue``; take what was handed over meanwhile back to it."""
        queue, slot.queue = slot.queue, None
        if queue is not None:
            with slot.lock:
                held = list(slot.buffer)
                slot.buffer.clear()
            try:
                self.store._claim_batch([], time.time(), queue, True, 0, slot.name, False, [r.id for r in held],
                                        self.key(slot))
            finally:
                slot.listening = False

    def forget(self, slot: Slot) -> None:
        """A slot whose thread is gone: its outcomes are written, its claims ahead given back."""
        with self._lock:
            self._slots.pop(slot.name, None)
        try:
            if slot.pending or slot.buffer or slot.listening:
                self.flush(slot)
                self._leave(slot)
        except MemQueueError as exc:
            logger.warning("a consumer thread of %s ended; giving back what it claimed ahead failed (its jobs"
                           " go back once this process's lease lapses): %s", self.store.url, exc)

    def close(self) -> None:
        """The store closes: every slot leaves (best effort: Redis may be down)."""
        for slot in self.slots():
            self.forget(slot)

    def wake(self) -> None:
        """Push a wake-up to every consumer blocked in Redis (``wake()``: they look at their stop)."""
        store = self.store
        for slot in self.slots():
            if slot.blocked:
                try:
                    store.client.command("waking consumers", "RPUSH", self.key(slot), "w")
                except MemQueueError:  # its BLPOP ends by its timeout (idle_wait) then
                    pass


__all__ = ["BATCH_SECONDS", "FLUSH_AFTER", "Claimer", "Slot"]

"""The chores of a shared store: limits on finished records, stale local jobs, declared queues.

Finished records beyond ``result_ttl``/``max_finished`` are pruned by idle
consumers (at most once a second) and before reads in a process that finished
jobs since (so the limits hold exactly for what this process did; others
prune within a second). Local job objects whose record another process
finished get its outcome; those whose record was purged are forgotten. A
consuming process says which queues it consumes every
:data:`~flask_memqueue.storage.durable.DECLARE_INTERVAL` s, so that other
processes may enqueue to a queue only a worker declares.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..job import Job
from .primitives import Primitives
from .records import Codec, Record

#: A local job whose record is missing this long after its enqueue was purged.
LOCAL_GRACE = 60.0


class Housekeeping:
    """One store's chores. ``settle(job)`` is what the store does once a job's
    outcome is known here (wake its waiters)."""

    def __init__(self, store: Primitives, codec: Codec, settle: Callable[[Job], None], *,
                 result_ttl: float, max_finished: int, declare_every: float) -> None:
        self._store = store
        self._codec = codec
        self._settle = settle
        self.result_ttl = result_ttl
        self.max_finished = max_finished
        self.declare_every = declare_every
        #: A job finished here since the last prune.
        self.dirty = False
        self.declared: tuple[str, ...] = ()
        self._next_declare = 0.0
        self._next_prune = 0.0
        self._next_sync = 0.0

    def idle(self, queue: str) -> float:
        """Chores of an idle consumer of ``queue``; returns how long it may sleep."""
        store = self._store
        now = time.time()
        self.due(now)
        wait = store.idle_wait
        eta = store._guard("reading", store._next_eta, queue)
        if eta is not None:
            wait = max(0.0, min(wait, eta - now))
        return wait

    def due(self, now: float) -> None:
        """The chores whose time has come (declare, prune, sync local jobs), without the read
        of the next due time: a store whose claim tells that itself (Redis) calls this."""
        store = self._store
        if self.declared and now >= self._next_declare:
            self._next_declare = now + self.declare_every
            store._guard("declaring queues", store._declare, store.owner, self.declared, now)
        if now >= self._next_prune:
            self._next_prune = now + 1.0
            self.prune(now)
        if now >= self._next_sync and self._codec.local:
            self._next_sync = now + 1.0
            self.sync_local()

    def prune(self, now: float) -> None:
        self.dirty = False
        store = self._store
        store._guard("forgetting old finished jobs", store._prune, now - self.result_ttl, self.max_finished)

    def visible(self) -> float:
        """Prune if a job finished here since the last time; the cut-off of the result TTL."""
        now = time.time()
        if self.dirty:
            self.prune(now)
        return now - self.result_ttl

    def sync_local(self) -> None:
        """Drop local jobs another process finished (copying their outcome), 500 at a time."""
        codec, store = self._codec, self._store
        with codec.lock:
            ids = list(codec.local)[:500]
        if not ids:
            return
        finished: list[Record] = store._guard("reading", store._load_many, ids, True)
        found = {r.id for r in finished}
        for record in finished:
            self._settle(codec.job_of(record))
        # Records gone from the store (purged): nothing will finish them here.
        # A record is missing too while its enqueue is written (the job is
        # local first): young jobs stay.
        stale = codec.stale_local([j for j in ids if j not in found], time.time() - LOCAL_GRACE)
        if stale:
            present = {r.id for r in store._guard("reading", store._load_many, stale, False)}
            for jid in stale:
                if jid not in present:
                    codec.forget(jid)

    def declare(self, names: tuple[str, ...]) -> None:
        """This process consumes ``names`` (sorted); said now and again every ``declare_every`` s."""
        if names == self.declared:
            return
        self.declared = names
        now = time.time()
        self._next_declare = now + self.declare_every
        store = self._store
        store._guard("declaring queues", store._declare, store.owner, names, now)

    def undeclare(self) -> None:
        """At close: this process consumes nothing any more (best effort: entries expire anyway)."""
        if self.declared:
            try:
                self._store._declare(self._store.owner, (), time.time())
            except Exception:  # closing anyway; the entries expire by themselves
                pass


__all__ = ["LOCAL_GRACE", "Housekeeping"]

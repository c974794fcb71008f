"""The Redis store: :class:`RedisStorage`, the primitives of
:class:`~flask_memqueue.storage.durable.DurableStorage` as Redis scripts.

Every change of a job is one script, atomic in Redis: an enqueue inserts (and
hands the job to an idle consumer when one waits); a claim records the
consumer's previous jobs and moves the next due ones to running; a take-over
is conditional on the job still being the lapsed owner's, so two reclaimers
never both take a job and nothing is locked (a reclaimer that dies mid-way
leaves nothing behind). What every cross-process store shares (group commit,
local job objects, take-over decided by :meth:`Job.interrupt
<flask_memqueue.job.Job.interrupt>`, waiters) is ``DurableStorage``'s; what
Redis adds is here and in the modules beside it:

- **Consumers** (``consumers.py``): claims in batches, outcomes written with
  the next claim, jobs handed over to idle consumers.
- **Leases** (``heartbeat.py``): an owner is alive while its lease key exists;
  the lapsed owner's late outcome is discarded (the first outcome recorded
  stands) and logged.
- **Waiters** (``listener.py``): pub/sub on ``P:done`` wakes ``Job.wait()``
  and ``join()`` in any process.
- **Claims whose reply was lost** (a connection cut after Redis ran the
  claim) are put back at the head of their queue by the next claim, so a job
  never stays "running" for a live owner that never got it.

Jobs are JSON (arguments, results), never pickle. The password never leaves
the client: :attr:`url` (what logs, errors, pages and the CLI show) has it
replaced by ``***``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...exceptions import MemQueueError, StorageError
from ...job import Job
from ..base import Capabilities, StoreContext
from ..durable import POLL_INTERVAL, DurableStorage, Record
from ..waiters import PollingEvent
from .aborts import RedisAbortFlags
from .client import Client
from .consumers import LISTEN_MARGIN, Claimer
from .heartbeat import Heartbeat
from .listener import Listener
from .options import DEFAULT_LEASE, DEFAULT_PREFETCH, Target, default_prefix
from .reads import RedisReads
from .records import RedisRecord, body_of, from_reply, new_args, parse, state_of
from .workflows import RedisWorkflows

logger = logging.getLogger("flask_memqueue")

#: Tokens of failed claims kept to put their jobs back (a bound, not a tuning knob).
_MAX_FAILED_TOKENS = 64


class RedisStorage(RedisAbortFlags, RedisWorkflows, RedisReads, DurableStorage):
    """Job records in a Redis server (one, under Sentinel, or a Cluster) that any number
    of processes and hosts share.

    :param lease: seconds an owner keeps its running jobs without renewing.
    :param prefix: the key prefix of this app's jobs.
    :param connect: keyword arguments of redis-py's connection pool.
    :param target: where the server is (one server, Sentinel, Cluster); the URL's server by default.
    :param prefetch: jobs a consumer thread claims at most in one round trip.
    :param wait_replicas: replicas that must confirm every write (``WAIT``).
    :param wait_timeout: seconds a write waits for them.
    """

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True,
        outages_end=True, abort_flags=True, pausable=True, workflows=True, bulk_actions=True, limits=True,
    )
    #: An idle consumer blocks in Redis (BLPOP) this long at most: an enqueue anywhere hands it
    #: its job at once; the bound only says how soon a stop from a signal handler is seen.
    idle_wait = 1.0
    #: Waiters are woken by pub/sub; this poll only covers a notification lost in an outage.
    waiter_poll_interval = 5.0
    #: ``join()`` is woken by pub/sub too; it looks again this often in case one was lost.
    join_poll_interval = 5.0

    def __init__(
        self, url: str, context: StoreContext, *, lease: float = DEFAULT_LEASE, prefix: str | None = None,
        connect: Mapping[str, Any] | None = None, target: Target | None = None, prefetch: int = DEFAULT_PREFETCH,
        wait_replicas: int = 0, wait_timeout: float = 1.0,
    ) -> None:
        super().__init__(url, context)
        self.lease = lease
        self.prefix = prefix if prefix is not None else default_prefix(context.namespace)
        self.key = context.config_key
        self.prefetch = prefetch
        self.client = Client(target or Target("single", url), self.url, self.key, connect or {}, self.prefix,
                             self._check_process, wait_replicas=wait_replicas, wait_timeout=wait_timeout)
        self._lease_ms = str(int(lease * 1000))
        self._rlock = threading.Lock()
        self._discards: dict[str, RedisRecord] = {}
        self._failed_tokens: list[str] = []
        # Claim tokens: unique for this owner (its running jobs are told apart by them), no syscall.
        self._tokens = itertools.count(1)
        self._token_prefix = f"{os.urandom(3).hex()}."
        self._alive: dict[str, bool] = {}
        self._closing = threading.Event()
        self.claimer = Claimer(self, prefetch)
        self._suspects: set[str] = set()
        self.heartbeat = Heartbeat(self.client, self.owner, lease, f"memqueue-heartbeat[{self.namespace}]",
                                   self.claimer.flush_due, self._orphans)
        self.listener = Listener(self.client, f"{self.prefix}:done", self._refresh_if_finished,
                                 self.waiter_poll_interval, f"memqueue-waiters[{self.namespace}]")

    @property
    def _blocked(self) -> int:
        """How many consumer threads of this store are blocked in Redis now."""
        return self.claimer.blocked

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`~flask_memqueue.storage.redis.client.RedisUnavailable` that says why
        (unreachable, credentials, TLS, no answer), or a :class:`StorageError`; never the password."""
        return self.client.error(exc, doing)

    def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any:
        return self.client.run(name, args, doing, repeat=repeat)

    # -- enqueue ------------------------------------------------------------------------------
    def _notify(self) -> None:
        """Nothing to ring: the script that queued the job handed it to an idle consumer, or
        woke one, in any process (this one's included)."""
    def _insert(self, records: list[Record]) -> int:
        args: list[Any] = [self.maxsize, repr(time.time()), len(records)]
        for r in records:
            args += (r.id, r.status, "" if r.eta is None else repr(r.eta), r.queue, r.priority, body_of(r))
        return int(self._run("insert", args, f"enqueueing {len(records)} job(s)"))

    def _insert_all(self, records: list[Record]) -> bool:
        # One JSON argument for the batch (see insert_all.lua); every value text, as insert.lua gets them.
        batch = json.dumps([[r.id, r.status, "" if r.eta is None else repr(r.eta), r.queue, str(r.priority),
                             body_of(r)] for r in records])
        return bool(self._run("insert_all", [self.maxsize, repr(time.time()), len(records), batch],
                              f"enqueueing {len(records)} jobs"))

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        doing = "pausing a queue" if paused else "resuming a queue"
        return bool(self.client.command(doing, "SADD" if paused else "SREM", f"{self.prefix}:paused", queue))

    def _paused(self) -> set[str]:
        found = self.client.command("reading the paused queues", "SMEMBERS", f"{self.prefix}:paused") or []
        return {q.decode() if isinstance(q, bytes) else str(q) for q in found}

    def _delete_finished(self, job_ids: list[str]) -> int:
        return int(self._run("delete_finished", list(job_ids), "deleting jobs"))

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        # Not repeated after a lost reply: a second run would find the job it added as the holder
        # (harmless), but a caller told "failed" must not also get a job it does not know of.
        found = self._run("insert_unique", ["1" if full else "0", repr(time.time()), *new_args(record),
                                            record.unique_key], "enqueueing a job with a unique key", repeat=False)
        return from_reply(found) if found else None

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        args: list[Any] = [task, repr(tick), repr(now), "0" if record is None else "1"]
        if record is not None:
            args += new_args(record)
        return bool(self._run("claim_tick", args, "claiming a periodic tick", repeat=False))

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        flat = self.client.command("reading", "HGETALL", f"{self.prefix}:ticks")
        out: dict[str, tuple[float, str | None, float]] = {}
        for task, value in zip(flat[::2], flat[1::2], strict=False):
            tick, job_id, claimed = (str(value).split(" ") + ["", "", "0"])[:3]
            out[str(task)] = (float(tick), job_id or None, float(claimed or 0.0))
        return out

    # -- outcomes ----------------------------------------------------------------------------------
    def _settle_args(self, r: Record, known: bool) -> list[Any]:
        """The 5 values that record a job's outcome: id, state, and (for a job the store may
        not have: eager mode) its body, queue and priority."""
        state = state_of(r, self.heartbeat.progress(r.id), whole=not known)
        if known:
            return [r.id, state, "", "", ""]
        return [r.id, state, body_of(r), r.queue, r.priority]

    def _outcome_args(self, jobs: list[Job]) -> tuple[list[Record], list[Any]]:
        held = self.codec.held
        records = [self.codec.record_of(job) for job in jobs]
        args: list[Any] = []
        for r in records:
            args += self._settle_args(r, r.id in held)
        return records, args

    def _save(self, record: Record) -> None:
        discarded = self._run("save", [self.owner, 1, *self._settle_args(record, record.id in self.codec.held)],
                              "recording a job")
        self._after_outcomes([record], discarded)

    def _save_many(self, jobs: list[Job]) -> None:
        """Write the outcomes of jobs that ran here (one script), and what follows a write."""
        records, args = self._outcome_args(jobs)
        discarded = self._guard("recording jobs", self._run, "save", [self.owner, len(jobs), *args],
                                f"recording {len(jobs)} job(s)")
        self._after_outcomes(records, discarded)
        for job in jobs:
            self._after_settle(job)

    def _after_outcomes(self, records: list[Record], discarded: list[str]) -> None:
        """After a write of outcomes: forget them as running here; note and log late ones."""
        self.heartbeat.untrack(r.id for r in records)
        for i in range(0, len(discarded), 2):
            jid, status = discarded[i], discarded[i + 1]
            stored = self._load(jid, None)
            if stored is None:
                continue
            logger.warning(
                "job %s (%s): the outcome this process recorded late was discarded; the job is %s in %s:"
                " this process's lease lapsed (no heartbeat reached Redis for %g s) and another worker took"
                " it over, so it may run (or have run) again (at-least-once delivery)",
                jid, stored.task, status, self.url, self.lease,
            )
            with self._rlock:
                self._discards[jid] = stored

    def _discarded_outcome(self, job: Job) -> Record | None:
        with self._rlock:
            return self._discards.pop(job.id, None)

    def finish(self, job: Job) -> None:
        try:
            if self.claimer.finished(job):
                return
        except MemQueueError:
            with self._ulock:
                if job not in self._unsettled:
                    self._unsettled.append(job)  # recorded with the next take
            raise
        super().finish(job)

    # -- claims ------------------------------------------------------------------------------------
    def take(
        self,
        timeout: float | None,
        done: Job | None = None,
        *,
        queue: str = "default",
        stop: Callable[[], bool] | None = None,
    ) -> Job | None:
        return self.claimer.take(timeout, done, queue, stop)

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        """The primitive as ``DurableStorage`` defines it (one job, no slot); ``take`` claims
        through :meth:`_claim_batch`."""
        args = self._claim_args(owner, now, queue, bool(stop()), settle)
        flat = self._claim_script(args, settle)[0][1]
        return parse(flat[0], flat[1]) if flat else None

    def _claim_args(self, owner: str, now: float, queue: str, stop: bool, settle: list[Record]) -> list[Any]:
        token = f"{self._token_prefix}{next(self._tokens)}"
        with self._rlock:
            failed = self._failed_tokens[:]
        args: list[Any] = [owner, repr(now), self._lease_ms, token, queue, "1" if stop else "0", "0", len(failed),
                           *failed, len(settle)]
        held = self.codec.held
        for r in settle:
            args += self._settle_args(r, r.id in held)
        return args

    def _claim_batch(self, settle: list[Job], now: float, queue: str, stop: bool, limit: int, slot: str,
                     listen: bool, release: list[str], key: str = "", block: float | None = None,
                     drain: bool = True) -> tuple[list[RedisRecord], float | None, Any]:
        """One claim script for a consumer slot: record ``settle``, give back ``release``, take
        what was handed to the slot, claim up to ``limit`` jobs of ``queue``; if none and
        ``listen``, register the slot as idle. ``drain``: the slot was registered, so jobs may
        have been handed to it (and wake-ups pushed) on its list. With ``block``, a ``BLPOP``
        of ``key`` for that long goes in the same round trip. Returns the records claimed, the
        queue's next eta (when none was claimed), and the ``BLPOP``'s reply."""
        records = [self.codec.record_of(job) for job in settle]
        args = self._claim_args(self.owner, now, queue, stop, records)
        ttl = int((self.idle_wait + LISTEN_MARGIN) * 1000)
        until = "" if block is None else repr(now + block)
        flags = ("r" if listen else "") + ("d" if drain else "")
        args += [limit, slot, flags, ttl, until, len(release), *release]
        then = None if block is None else ("BLPOP", key, f"{max(block, 0.001):.3f}")
        reply, got = self._claim_script(args, records, then, block)
        flat = reply[1]
        claimed = [parse(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        eta = float(reply[2]) if len(reply) > 2 and reply[2] else None
        return claimed, eta, got

    def _claim_script(self, args: list[Any], settle: list[Record], then: tuple[Any, ...] | None = None,
                      block: float | None = None) -> tuple[Any, Any]:
        failed = int(args[7])
        reply = self._claim_once(args, args[3], then, block)
        got = None
        if then is not None:
            reply, got = reply
        if failed:
            done = set(args[8 : 8 + failed])
            with self._rlock:
                self._failed_tokens = [t for t in self._failed_tokens if t not in done]
        self._after_outcomes(settle, reply[0])
        return reply, got

    def _claim_once(self, args: list[Any], token: str, then: tuple[Any, ...] | None = None,
                    block: float | None = None) -> Any:
        """Run the claim; after a dropped connection, once more flagged as a repeat (if the
        first ran, its jobs are the answer). A claim that failed for good is put back by the next."""
        client = self.client
        r = client.redis
        self._check_process()
        timeout = None if block is None else block + client.socket_timeout
        try:
            try:
                return client.script("claim", args, "taking a job", then=then, timeout=timeout)
            except r.RedisError as exc:
                if not client.retriable(exc, True):
                    raise
                if isinstance(exc, r.ConnectionError):
                    args[6] = "1"  # the same claim again
                return client.script("claim", args, "taking a job", then=then, timeout=timeout)
        except r.RedisError as exc:
            with self._rlock:  # the next claim puts back what this one may have claimed
                self._failed_tokens = (self._failed_tokens + [token])[-_MAX_FAILED_TOKENS:]
            raise self._error(exc, "taking a job") from exc
        except MemQueueError:  # the replicas did not confirm it: the next claim puts it back
            with self._rlock:
                self._failed_tokens = (self._failed_tokens + [token])[-_MAX_FAILED_TOKENS:]
            raise

    def _orphans(self, running: list[str]) -> None:
        """The heartbeat's check (each renewal): jobs Redis holds as running for this owner
        that nothing here knows of, at two renewals in a row, are taken over as a dead
        owner's would be (see ``heartbeat.py``)."""
        known = self.heartbeat.running() | set(self.codec.held)
        for slot in self.claimer.slots():
            known.update(r.id for r in list(slot.buffer))
            known.update(j.id for j in list(slot.pending))
        with self._ulock:
            known.update(j.id for j in self._unsettled)
        suspects = set(running) - known
        orphans, self._suspects = suspects & self._suspects, suspects
        if not orphans:
            return
        now = time.time()
        for record in self._running_of(self.owner):
            if record.id in orphans:
                job = self.codec.detached(record)
                job.interrupt(now, task_known=not job.task.missing)
                if self._take_over_one(record.id, self.owner, self.codec.record_of(job)):
                    logger.warning("job %s (%s) was running in %s for this process, which does not run it (an"
                                   " outcome lost in a failover, or a claim whose reply never came): taken over",
                                   record.id, record.task, self.url)

    def _on_claimed(self, job: Job) -> None:
        self.heartbeat.track(job)  # its progress is written within 0.1 s, and the lease renewed

    # -- single jobs ---------------------------------------------------------------------------------
    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        args = [job_id, ",".join(from_status), state_of(record, self.heartbeat.progress(record.id))]
        return bool(self._run("transition", args, "changing a job", repeat=False))

    def _transition_many(self, changes: list[tuple[str, tuple[str, ...], Record]]) -> list[bool]:
        """A bulk action's batch in one script call (transition_many.lua): one round trip."""
        args: list[Any] = [len(changes)]
        for job_id, statuses, record in changes:
            args += (job_id, ",".join(statuses), state_of(record, self.heartbeat.progress(record.id)))
        flags = self._run("transition_many", args, f"changing {len(changes)} jobs", repeat=False)
        return [bool(int(flag)) for flag in flags]

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        args = [job_id, owner, state_of(record)]
        return bool(self._run("take_over", args, "taking over the jobs of a lapsed lease"))

    def _close(self) -> None:
        self._closing.set()
        try:
            self.claimer.close()
        finally:
            self.heartbeat.stop()
            self.listener.close()
            self.client.close()

    # -- wake-ups, progress and waiters ----------------------------------------------------------------
    def wake(self) -> None:
        super().wake()
        if not self._closing.is_set() and self._pid == os.getpid():
            self.claimer.wake()

    def job_of(self, record: Record) -> Job:
        job = super().job_of(record)
        if isinstance(record, RedisRecord) and record.progress is not None and not self.heartbeat.runs(record.id):
            try:
                job.set_progress(record.progress, record.message)
            except (TypeError, ValueError):  # pragma: no cover - only this module writes it
                pass
        return job

    def waiter(self, job: Job) -> threading.Event | None:
        event = super().waiter(job)
        if isinstance(event, PollingEvent) and self.listener.watch(event):
            # finished before the subscription started: nobody will publish it again
            try:
                if self._refresh_if_finished(job):
                    event.set()
            except MemQueueError:
                pass  # the event's own poll tries again
        return event

    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        """Block until no job waits or runs (in ``queue``, or any): woken when any process
        finishes a job (pub/sub), looking again every :attr:`join_poll_interval` s in case
        a notification was lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        follow = self.listener.follow()
        try:
            while True:
                seen = self.listener.generation
                due_before = time.time() if due_only else None
                busy = self._guard("reading", self._busy, ("queued", "running", "scheduled"), due_before, queue)
                if not busy:
                    return True
                # a job that becomes due only adds to the count: finishes are what join waits for
                wait = self.join_poll_interval if follow else POLL_INTERVAL
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                self.listener.wait_after(seen, wait)
        finally:
            if follow:
                self.listener.unfollow()


__all__ = ["RedisRecord", "RedisStorage"]

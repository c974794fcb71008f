"""The Redis store: :class:`RedisStorage`, the primitives of
:class:`~flask_memqueue.storage.durable.DurableStorage` as Redis scripts.

Every change of a job is one script, atomic in Redis: a claim records the
consumer's previous job and moves the next due one to running; a take-over is
conditional on the job still being the lapsed owner's, so two reclaimers never
both take a job and nothing is locked (a reclaimer that dies mid-way leaves
nothing behind). What every cross-process store shares (group commit, local
job objects, take-over decided by :meth:`Job.interrupt
<flask_memqueue.job.Job.interrupt>`, waiters) is ``DurableStorage``'s; what
Redis adds is here and in the modules beside it:

- **Leases** (``heartbeat.py``): an owner is alive while its lease key exists;
  the lapsed owner's late outcome is discarded (the first outcome recorded
  stands) and logged.
- **Wake-ups.** An idle consumer blocks in ``BLPOP`` on its queue's token
  list; an enqueue pushes a token, so a consumer in any process wakes within
  a round trip. A claim that finds nothing deletes the stale tokens.
- **Waiters** (``listener.py``): pub/sub on ``P:done``.
- **Claims whose reply was lost** (a connection cut after Redis ran the
  claim) are put back at the head of their queue by the next claim, so a job
  never stays "running" for a live owner that never got it.

Jobs are JSON (arguments, results), never pickle. The password never leaves
the client: :attr:`url` (what logs, errors, pages and the CLI show) has it
replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...exceptions import MemQueueError, StorageError
from ...job import Job
from ..base import Capabilities, StoreContext
from ..durable import FINISHED, DurableStorage, Record
from ..waiters import PollingEvent
from .client import Client
from .heartbeat import Heartbeat
from .listener import Listener
from .options import DEFAULT_LEASE, default_prefix
from .records import RedisRecord, add_args, from_reply, parse, state_args, tag

logger = logging.getLogger("flask_memqueue")

#: Tokens of failed claims kept to put their jobs back (a bound, not a tuning knob).
_MAX_FAILED_TOKENS = 64


class RedisStorage(DurableStorage):
    """Job records in a Redis server that any number of processes and hosts share.

    :param lease: seconds an owner keeps its running jobs without renewing.
    :param prefix: the key prefix of this app's jobs.
    :param connect: keyword arguments of redis-py's connection pool.
    """

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True,
        outages_end=True,
    )
    #: An idle consumer blocks in Redis (BLPOP) this long at most: it wakes at once on
    #: an enqueue anywhere; the bound only says how soon a stop from a signal handler is seen.
    idle_wait = 1.0
    #: Waiters are woken by pub/sub; this poll only covers a notification lost in an outage.
    waiter_poll_interval = 5.0

    def __init__(
        self, url: str, context: StoreContext, *, lease: float = DEFAULT_LEASE, prefix: str | None = None,
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, context)
        self.lease = lease
        self.prefix = prefix if prefix is not None else default_prefix(context.namespace)
        self.key = context.config_key
        self.client = Client(url, self.url, self.key, connect or {}, self.prefix, self._check_process)
        self._r = self.client.r
        self._scripts = self.client.scripts
        self._lease_ms = str(int(lease * 1000))
        self._rlock = threading.Lock()
        self._discards: dict[str, RedisRecord] = {}
        self._failed_tokens: list[str] = []
        self._blocked = 0
        self._alive: dict[str, bool] = {}
        self._closing = threading.Event()
        self.heartbeat = Heartbeat(self.client, self.owner, lease, f"memqueue-heartbeat[{self.namespace}]")
        self.listener = Listener(self.client, f"{self.prefix}:done", self._refresh_if_finished,
                                 self.waiter_poll_interval, f"memqueue-waiters[{self.namespace}]")

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`~flask_memqueue.storage.redis.client.RedisUnavailable` that says why
        (unreachable, credentials, TLS, no answer), or a :class:`StorageError`; never the password."""
        return self.client.error(exc, doing)

    def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any:
        return self.client.run(name, args, doing, repeat=repeat)

    # -- the primitives ---------------------------------------------------------------------
    def _insert(self, records: list[Record]) -> int:
        args: list[Any] = [self.maxsize, len(records)]
        for r in records:
            args += [r.id, r.task, r.args, tag(r.kwargs), r.status, repr(r.enqueued_at), tag(r.eta), r.queue,
                     r.priority]
        return int(self._run("insert", args, f"enqueueing {len(records)} job(s)"))

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        # Not repeated after a lost reply: a second run would find the job it added as the holder
        # (harmless), but a caller told "failed" must not also get a job it does not know of.
        found = self._run("insert_unique", ["1" if full else "0", *add_args(record)],
                          "enqueueing a job with a unique key", repeat=False)
        return from_reply(found) if found else None

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        args: list[Any] = [task, repr(tick), repr(now), "0" if record is None else "1"]
        if record is not None:
            args += add_args(record)
        return bool(self._run("claim_tick", args, "claiming a periodic tick", repeat=False))

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        rows: dict[Any, Any] = self.client.call("reading", self._r.hgetall, f"{self.prefix}:ticks")
        out: dict[str, tuple[float, str | None, float]] = {}
        for task, value in rows.items():  # str: decode_responses
            tick, job_id, claimed = (str(value).split(" ") + ["", "", "0"])[:3]
            out[str(task)] = (float(tick), job_id or None, float(claimed or 0.0))
        return out

    def _state(self, r: Record) -> list[str]:
        """The 11 tagged state values of a record (with the progress of a job running here)."""
        return state_args(r, self.heartbeat.progress(r.id))

    def _settle_args(self, r: Record) -> list[Any]:
        return [r.id, r.task, r.args, tag(r.kwargs), repr(r.enqueued_at), r.queue, r.priority, *self._state(r)]

    def _save(self, record: Record) -> None:
        stored = self._run("save", [self.owner, *self._settle_args(record)], "recording a job")
        self._after_outcomes([record], [record.id, stored] if stored else [])

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

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        token = uuid.uuid4().hex[:16]
        with self._rlock:
            failed = self._failed_tokens[:]
        args: list[Any] = [owner, repr(now), self._lease_ms, token, queue, "1" if stop() else "0", "0", len(failed),
                           *failed, len(settle)]
        for r in settle:
            args += self._settle_args(r)
        reply = self._claim_once(args, token)
        if failed:
            with self._rlock:
                self._failed_tokens = [t for t in self._failed_tokens if t not in failed]
        self._after_outcomes(settle, reply[0])
        return from_reply(reply[2]) if len(reply) >= 3 else None

    def _claim_once(self, args: list[Any], token: str) -> Any:
        """Run the claim; after a dropped connection, once more flagged as a repeat (if the
        first ran, its job is the answer). A claim that failed for good is put back by the next."""
        script = self._scripts["claim"]
        r = self.client.redis
        self._check_process()
        try:
            try:
                return script(keys=[self.prefix], args=args)
            except r.ConnectionError as exc:
                if isinstance(exc, r.AuthenticationError):
                    raise
                args[6] = "1"  # the same claim again
                return script(keys=[self.prefix], args=args)
        except r.RedisError as exc:
            with self._rlock:  # the next claim puts back what this one may have claimed
                self._failed_tokens = (self._failed_tokens + [token])[-_MAX_FAILED_TOKENS:]
            raise self._error(exc, "taking a job") from exc

    def _on_claimed(self, job: Job) -> None:
        self.heartbeat.track(job)  # its progress is written within 0.1 s, and the lease renewed

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        args = [job_id, ",".join(from_status), *self._state(record)]
        return bool(self._run("transition", args, "changing a job", repeat=False))

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        args = [job_id, owner, *self._state(record)]
        return bool(self._run("take_over", args, "taking over the jobs of a lapsed lease"))

    def _load(self, job_id: str, visible_after: float | None) -> RedisRecord | None:
        text = self.client.call("reading a job", self._r.get, f"{self.prefix}:j:{job_id}")
        if not text:
            return None
        record = parse(job_id, text)
        if visible_after is not None and record.finished_at is not None and record.finished_at <= visible_after:
            return None
        return record

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        if not job_ids:
            return []
        found = self.client.call("reading jobs", self._r.mget, [f"{self.prefix}:j:{jid}" for jid in job_ids])
        records: list[Record] = []
        for jid, text in zip(job_ids, found, strict=False):
            if text:
                record = parse(jid, text)
                if not finished_only or record.status in FINISHED:
                    records.append(record)
        return records

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        """Newest inserted first: the insertion number orders jobs, as enqueue times would
        (a job queued again by ``requeue`` takes a new one, at the end of its line)."""
        flat = self._run("list", [status or "", limit, offset, repr(visible_after), queue or ""], "listing jobs")
        return [from_reply(r) for r in flat]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        flat = self._run("count", [repr(visible_after)], "counting jobs")
        counts: dict[str, int] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=False):
            status, bar, name = field.partition("|")
            if (queue is None and not bar) or (queue is not None and bar and name == queue):
                counts[status] = int(value)
        return counts

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        due = "" if due_before is None else repr(due_before)
        return int(self._run("busy", [",".join(statuses), due, queue or ""], "counting jobs"))

    def _running_owners(self) -> set[str]:
        flat = self._run("owners", [], "reading the owners of running jobs")
        alive = {owner: bool(flag) for owner, flag in zip(flat[::2], flat[1::2], strict=False)}
        self._alive = alive
        return set(alive)

    def _owner_alive(self, owner: str) -> bool:
        """Alive while its lease key exists (renewed by its heartbeat): a lease, not a pid,
        so that it holds across hosts. Read with the owners, in the same script."""
        known = self._alive.get(owner)
        if known is not None:
            return known
        return bool(self.client.call("reading a lease", self._r.exists, f"{self.prefix}:l:{owner}"))

    def _running_of(self, owner: str) -> list[Record]:
        return [from_reply(r) for r in self._run("running_of", [owner], "reading running jobs")]

    def _prune(self, finished_before: float, keep: int) -> None:
        self._run("prune", [repr(finished_before), keep], "forgetting old finished jobs")

    def _purge(self) -> int:
        return int(self._run("purge", [], "purging finished jobs", repeat=False))

    def _remove_waiting(self) -> list[Record]:
        return [from_reply(r) for r in self._run("remove_waiting", [], "dropping waiting jobs", repeat=False)]

    def _next_eta(self, queue: str | None = None) -> float | None:
        eta = self._run("next_eta", [queue or ""], "reading the next due time")
        return None if eta is None else float(eta)

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        flat = self._run("queue_counts", [], "counting jobs by queue")
        return {flat[i]: {"queued": int(flat[i + 1]), "scheduled": int(flat[i + 2]), "running": int(flat[i + 3])}
                for i in range(0, len(flat), 4)}

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        """``<prefix>:dq`` holds, per owner, when it last said which queues it consumes."""
        key = f"{self.prefix}:dq"
        if queues:
            self.client.call("declaring queues", self._r.hset, key, owner, json.dumps([now, list(queues)]))
        else:
            self.client.call("declaring queues", self._r.hdel, key, owner)

    def _declared(self, seen_after: float) -> set[str]:
        key = f"{self.prefix}:dq"
        entries: dict[str, str] = self.client.call("reading declared queues", self._r.hgetall, key)
        names: set[str] = set()
        stale = []
        for owner, text in entries.items():
            seen, queues = json.loads(text)
            if seen > seen_after:
                names.update(queues)
            else:
                stale.append(owner)
        if stale:  # gone quiet long ago (killed): nobody will forget them otherwise
            self.client.call("reading declared queues", self._r.hdel, key, *stale)
        return names

    def _close(self) -> None:
        self._closing.set()
        self.heartbeat.stop()
        self.listener.close()
        self.client.close()

    # -- blocking wake-ups ------------------------------------------------------------------
    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Block in Redis until a token for ``queue`` arrives (an enqueue in any process),
        :meth:`wake` pushes one to this owner's list, or ``timeout`` passes."""
        if timeout < 0.001 or self._woken or self._kicks != kicks or self._closing.is_set():
            return self._kicks
        with self._rlock:
            self._blocked += 1
        try:
            self.client.call("waiting for jobs", self._r.blpop,
                             [f"{self.prefix}:r:{queue}", f"{self.prefix}:w:{self.owner}"], timeout=timeout)
        finally:
            with self._rlock:
                self._blocked -= 1
        return self._kicks

    def wake(self) -> None:
        super().wake()
        with self._rlock:
            blocked = self._blocked
        if blocked and not self._closing.is_set() and self._pid == os.getpid():
            key = f"{self.prefix}:w:{self.owner}"
            try:
                with self._r.pipeline(transaction=False) as pipe:
                    pipe.rpush(key, *["1"] * blocked)
                    pipe.expire(key, 60)
                    pipe.execute()
            except self.client.redis.RedisError:  # its BLPOP ends by its timeout (idle_wait) then
                pass

    # -- progress and waiters ---------------------------------------------------------------
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


__all__ = ["RedisRecord", "RedisStorage"]

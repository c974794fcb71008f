"""The guarded consumer: one step (:meth:`Consumer.run_once`) and a driver loop.

Each app runs a pool of consumer threads per named queue (``MEMQUEUE_QUEUES``),
one :class:`Consumer` per thread. A loop checks, on every turn, that its own
thread ident is still the one the app's queue recorded for its place in the
pool; any other loop (a duplicate started by a race, or a stale one) exits at
once. Every job runs in a fresh app context of its app, so ``current_app``,
``g`` and ``teardown_appcontext`` behave as in a request.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from contextvars import ContextVar
from time import time as _time
from typing import TYPE_CHECKING, Any, Protocol

from blinker import Signal
from werkzeug.local import LocalProxy

from . import aio
from .exceptions import StorageRefused, TimeLimitExceeded, one_line
from .job import Job, JobStatus, _Outcome
from .signals import job_failed, job_retrying, job_started, job_succeeded

if TYPE_CHECKING:
    from flask import Flask

    from .config import Config
    from .hooks import Hooks
    from .storage.base import Storage


class ConsumerHost(Protocol):
    """What a consumer needs of its app's pools (:class:`~flask_memqueue.runtime.pools.ConsumerPools`)."""

    app: Flask
    config: Config
    lock: threading.Lock
    #: The hooks around each job (:mod:`flask_memqueue.hooks`).
    hooks: Hooks

    @property
    def storage(self) -> Storage: ...

    def consumer_exited(self, consumer: Consumer, ident: int, crashed: bool) -> None: ...


logger = logging.getLogger("flask_memqueue")

# The consumer whose job runs in this context. A consumer thread sets it once,
# when its loop starts, and current_job reads the consumer's `current`: setting
# and resetting a context variable per job (a new context mapping each time)
# cost about 0.19 µs of a 3.7 µs job (CPU time per drained job, 9 runs of
# 20,000). Elsewhere (mq.run_once(), eager mode) execute() sets it around the job.
_cv_consumer: ContextVar[Consumer] = ContextVar("flask_memqueue.consumer")
_UNBOUND = "current_job is only available inside a running flask-memqueue job."


def _current_job() -> Job:
    consumer = _cv_consumer.get(None)
    job = None if consumer is None else consumer.current
    if job is None:
        raise RuntimeError(_UNBOUND)
    return job


#: The job running in this thread: ``current_job.set_progress(0.5)``.
current_job: Job = LocalProxy(_current_job)  # type: ignore[assignment]

SCHEDULED = JobStatus.SCHEDULED
_NO_REASON = _Outcome()  # read-only stand-in: a job with no outcome was asked nothing
SUCCEEDED = JobStatus.SUCCEEDED

#: Throughput is counted in buckets of this many seconds, for this many buckets.
BUCKET_SECONDS = 10
BUCKETS = 60

#: After the store fails, the consumer waits this long before it tries again,
#: twice as long after each further failure, at most :data:`BACKOFF_MAX` s.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
#: A backoff wait looks at ``stopping`` at least this often: the worker's
#: signal handler may only set that flag (setting an Event there could
#: deadlock on the Event's own lock), so it is not woken by the Event.
BACKOFF_SLICE = 0.1


class Consumer:
    """One consumer thread's place in a pool: runs the jobs of one named queue, one at a time."""

    def __init__(self, queue: ConsumerHost, queue_name: str = "default", index: int = 0) -> None:
        self.queue = queue
        #: The hooks around each job; :attr:`Hooks.active <flask_memqueue.hooks.Hooks.active>`
        #: is the one test the loop makes per job for them.
        self.hooks = queue.hooks
        #: The named queue this consumer takes jobs from.
        self.queue_name = queue_name
        #: Its place in that queue's pool (0, 1, ...).
        self.index = index
        #: The ident of the one thread legitimately running this consumer's loop, or None.
        self.ident: int | None = None
        #: That thread, once started.
        self.thread: threading.Thread | None = None
        #: True from a successful start until the loop exits (cheaper than Thread.is_alive()).
        self.alive = False
        #: Threads started for this place (1 + restarts).
        self.starts = 0
        #: Attempts this consumer has run: :attr:`jobs_done` plus every attempt that will be retried.
        self.attempts = 0
        # Attempts that ended in a retry (jobs_done = attempts - these).
        self._retried = 0
        #: The job running now, if any.
        self.current: Job | None = None
        #: Set by shutdown; the loop ends after the job in hand.
        self.stopping = False
        # (bucket number, jobs finished in it), newest last; the open bucket apart.
        self.history: deque[tuple[int, int]] = deque(maxlen=BUCKETS)
        self._bucket_end = 0.0
        self._bucket_mark = 0  # jobs_done when the open bucket opened
        #: Why the store fails, while it does (``/health`` answers 503 with it).
        self.store_error: str | None = None
        #: Consecutive failed calls to the store in the current outage.
        self.store_failures = 0
        #: Stop :meth:`run` after this many consecutive store failures (the worker's); None: never.
        self.max_store_failures: int | None = None
        #: Stop :meth:`run` at the first failure that is a refusal (StorageRefused: a wrong
        #: password, say), which no wait will end (the worker sets it, to exit with an error).
        self.stop_on_refusal = False
        #: Why :meth:`run` gave up, once it has.
        self.gave_up: str | None = None
        #: True if it gave up because the store refused this app (a configuration error).
        self.refused = False
        # Set by stop(): ends a backoff wait at once.
        self._stop = threading.Event()
        #: Set when the job in hand may not end as usual (an abort was asked, or its thread
        #: was given up: :mod:`flask_memqueue.runtime.limits`); reset once it is settled.
        self.interrupted = False
        #: True once the watchdog gave up this thread: its job's outcome is recorded; the loop ends.
        self.abandoned = False

    @property
    def jobs_done(self) -> int:
        """Jobs this consumer has finished (succeeded or failed for good), across restarts."""
        return self.attempts - self._retried

    # -- one step ------------------------------------------------------------
    def run_once(self, timeout: float | None = 0.0) -> bool:
        """Take the next due job (waiting up to ``timeout`` s) and run it.

        Returns False when there was none. Tests and scripts can step a queue
        with it instead of running the thread.
        """
        storage = self.queue.storage
        job = storage.take(timeout, queue=self.queue_name)
        if job is None:
            return False
        hooks = self.hooks
        try:
            if not (hooks.claim and self._put_back(job)):
                self.execute(job)
        finally:
            self.record(job)
        if hooks.outcome:
            hooks.recorded(self.queue.app, job)
        return True

    def record(self, job: Job) -> None:
        """Hand a job this consumer ran back to the store: finished, or scheduled to run again."""
        storage = self.queue.storage
        if job.status is SCHEDULED:
            storage.schedule(job, retry=True)
        else:
            storage.finish(job)

    def _put_back(self, job: Job) -> bool:
        """Ask the ``on_claim`` hooks; True if one wants ``job`` later (then it is due later,
        to be handed back to the store like a retry, with no attempt counted)."""
        delay = self.hooks.claimed(self.queue.app, job)
        if delay is None:
            return False
        job.mark_scheduled(time.time() + max(0.0, delay))
        return True

    def _hooked(self, job: Job) -> Job | None:
        """Run ``job`` with the claim and outcome hooks (the loop's path when any hook is
        installed). Returns the job the next claim hands back, or None if it was recorded here."""
        hooks = self.hooks
        if hooks.claim and self._put_back(job):
            return job
        self.execute(job)
        if self.abandoned:
            return None  # the watchdog recorded it
        if not hooks.outcome:
            return job
        self.record(job)  # now, not with the next claim: the hooks hear of a recorded outcome
        hooks.recorded(self.queue.app, job)
        return None

    def execute(self, job: Job, bound: bool = False) -> None:
        """Call the job in a fresh app context, record what happened on it: an ``Exception`` as a failure (or
        retry), anything else (``SystemExit``...) as a failure re-raised, so its thread ends and a successor
        starts. ``bound``: from this consumer's own loop, whose context holds it for good (no look needed)."""
        app = self.queue.app
        # Job.start(), inlined (the hot path: a call costs about as much as its body)
        out = job._out
        if out is None:
            out = job._out = _Outcome()
            out.attempts = 1
        else:
            out.eta = None
            out.attempts += 1
        out.started_at = _time()
        outer = self.current  # a job that steps its own queue (mq.run_once()) runs one inside another
        self.current = job
        token = None if bound or _cv_consumer.get(None) is self else _cv_consumer.set(self)
        ctx = app.app_context()
        ctx.push()
        error: BaseException | None = None
        try:
            if job_started.receivers:
                _send(job_started, app, job)
            kwargs = job.kwargs
            task = job.task
            try:
                if task.strategy is None and not self.hooks.around:  # the function, here: the hot path
                    result = task.func(*job.args, **kwargs) if kwargs else task.func(*job.args)
                else:  # its strategy and the around_run hooks (a chain built once per task)
                    result = self.hooks.run(app, job)
            except (Exception, TimeLimitExceeded) as exc:  # a time limit, a forced abort: the job's, not the thread's
                error = exc
                self._failed(job, exc, fatal=False)
            except BaseException as exc:
                error = exc
                self._failed(job, exc, fatal=True)
                raise
            else:
                if self.interrupted or out.error is not None:  # aborted, given up, or a retry that succeeded
                    self._returned(job, result)
                else:
                    # Job.succeed(), inlined
                    out.result = result
                    out.finished_at = _time()
                    job.status = SUCCEEDED  # last: Job.wait() returns as soon as it sees it
                    if job_succeeded.receivers:
                        _send(job_succeeded, app, job)
        finally:
            # One increment per attempt: jobs_done and the throughput buckets are derived from it.
            finished = out.finished_at
            if finished is not None and finished >= self._bucket_end:
                self._roll(finished)
            self.attempts += 1
            try:
                ctx.pop(error)
            except Exception:
                logger.exception("a teardown_appcontext handler failed after job %s (%s)", job.id, job.name)
            if token is not None:
                _cv_consumer.reset(token)
            self.current = outer

    def _settle_interrupted(self, job: Job) -> bool:
        """The job ended while :attr:`interrupted`: True if that settled it (given up, or ends
        ``aborted``); False if the flag was for a job before it (recorded as usual)."""
        self.interrupted = False
        if self.abandoned:
            return True
        reason = (job._out or _NO_REASON).abort
        if reason is None:
            return False
        job.mark_aborted(time.time(), reason)
        logger.warning("job %s (%s) was aborted (%s)", job.id, job.name, reason)
        if job_failed.receivers:
            _send(job_failed, self.queue.app, job)
        return True

    def _returned(self, job: Job, result: Any) -> None:
        """The job returned, off the hot path: while :attr:`interrupted` (it may end aborted, or
        its outcome is recorded already: its thread was given up), or after a failed attempt."""
        if self.interrupted and self._settle_interrupted(job):
            return  # aborted, or given up: settled there
        out = job._outcome()
        out.result = result
        out.finished_at = _time()
        out.error = out.traceback = None  # a retry succeeded: the old failure is history
        job.status = SUCCEEDED  # last: Job.wait() returns as soon as it sees it
        if job_succeeded.receivers:
            _send(job_succeeded, self.queue.app, job)

    def _put_back_interrupted(self, job: Job) -> None:
        """An exception meant for the job before reached this one: it runs again, uncounted."""
        out = job._outcome()
        out.attempts = max(0, out.attempts - 1)
        job.mark_scheduled(time.time())
        logger.warning("job %s (%s) was interrupted by a time limit or abort meant for the job before it;"
                       " it is queued again", job.id, job.name)

    def settle_given_up(self, job: Job, exc: TimeLimitExceeded, stack: str) -> None:
        """Record the outcome of the job whose thread the watchdog gave up (in the watchdog's
        thread, once): aborted if an abort was asked, else failed or retried by its policy."""
        app = self.queue.app
        with app.app_context():
            reason = (job._out or _NO_REASON).abort
            if reason is not None:
                job.mark_aborted(time.time(), reason)
                if job_failed.receivers:
                    _send(job_failed, app, job)
            else:
                self._failed(job, exc, fatal=False, stack=stack)
            self.record(job)
            if self.hooks.outcome:
                self.hooks.recorded(app, job)

    def abandon(self) -> None:
        """The watchdog gives this place's thread up (its lock held): end after the job, write nothing."""
        self.abandoned = True
        self.interrupted = True
        self.stopping = True

    def _failed(self, job: Job, exc: BaseException, *, fatal: bool, stack: str | None = None) -> None:
        if isinstance(exc, TimeLimitExceeded) and getattr(exc, "job_key", job.key) != job.key:
            self._put_back_interrupted(job)  # meant for the job this thread ran before
            return
        if stack is None and self.interrupted and self._settle_interrupted(job):
            return
        app = self.queue.app
        tb = traceback.format_exc() if stack is None else stack
        delay = job.fail(one_line(exc), tb, time.time(), fatal=fatal)
        if delay is not None:
            self._retried += 1
            # _run_eagerly runs the retry at once, without the delay
            when = "now (eager mode)" if self.queue.config.eager else f"in {delay:.3g} s"
            logger.warning(
                "job %s (%s) failed on attempt %d of %d, retrying %s: %s",
                job.id, job.name, job.attempts, job.task.retries + 1, when, job.error,
            )
            if job_retrying.receivers:
                _send(job_retrying, app, job)
            return
        logger.error(
            "job %s (%s) failed after %d attempt(s): %s",
            job.id, job.name, job.attempts, job.error, exc_info=exc if stack is None else None,
        )
        if job_failed.receivers:
            _send(job_failed, app, job)

    def _roll(self, now: float) -> None:
        """Close the throughput bucket and open the one ``now`` falls in (before the
        job that finished at ``now`` is counted: it belongs to the new one)."""
        done = self.jobs_done
        if done > self._bucket_mark:
            self.history.append((int(self._bucket_end // BUCKET_SECONDS) - 1, done - self._bucket_mark))
        self._bucket_mark = done
        self._bucket_end = (now // BUCKET_SECONDS + 1) * BUCKET_SECONDS

    def throughput(self, now: float | None = None) -> list[dict[str, Any]]:
        """Jobs finished per bucket over the last ``BUCKETS`` buckets, oldest first."""
        now = _time() if now is None else now
        counts = dict(list(self.history))
        open_jobs = self.jobs_done - self._bucket_mark
        if open_jobs > 0:
            counts[int(self._bucket_end // BUCKET_SECONDS) - 1] = open_jobs
        last = int(now // BUCKET_SECONDS)
        return [
            {"t": b * BUCKET_SECONDS, "jobs": counts.get(b, 0)}
            for b in range(last - BUCKETS + 1, last + 1)
        ]

    # -- stopping and backing off ---------------------------------------------------
    def stop(self) -> None:
        """Make the loop end after the job in hand (and any backoff wait end now)."""
        self.stopping = True
        self._stop.set()

    def reset(self) -> None:
        """Before a (re)start: not stopping, not given up."""
        self.stopping = False
        self._stop.clear()
        self.gave_up = None
        self.refused = False

    def back_off(self, failures: int) -> None:
        """Wait after the ``failures``-th failure in a row (:func:`backoff_delay`), cut short by :meth:`stop`."""
        deadline = time.monotonic() + backoff_delay(failures)
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, BACKOFF_SLICE))

    def _store_failed(self, exc: Exception) -> bool:
        """Count a failed call to the store, log the first of an outage, back off.

        Returns False when :attr:`max_store_failures` is reached (the loop
        then ends, :attr:`gave_up` says why). Never a tight loop: a store
        that fails on every call (a damaged or read-only journal) once
        restarted the consumer about a thousand times a second, logging a
        traceback each time (issue 9, defect 8).
        """
        self.store_failures += 1
        cause = one_line(exc)
        name = self.queue.app.name
        if self.stop_on_refusal and isinstance(exc, StorageRefused):
            # Not an outage: the worker says so, once, and exits (no traceback per thread).
            self.gave_up = f"the job store of {name!r} refuses this app: {cause}"
            self.refused = True
            return False
        if self.store_failures == 1:
            self.store_error = cause
            logger.error(
                "the job store of %r fails: %s. The consumer tries again after %.3g s, then less and less"
                " often (at most every %.3g s), and logs again when the store works",
                name, cause, BACKOFF_FIRST, BACKOFF_MAX, exc_info=exc,
            )
        limit = self.max_store_failures
        if limit is not None and self.store_failures >= limit:
            self.gave_up = f"the job store of {name!r} failed {self.store_failures} times in a row; last: {cause}"
            logger.critical("%s; giving up", self.gave_up)
            return False
        self.back_off(self.store_failures)
        return True

    def _store_recovered(self) -> None:
        logger.warning(
            "the job store of %r works again after %d failed attempt(s) (%s)",
            self.queue.app.name, self.store_failures, self.store_error,
        )
        self.store_failures = 0
        self.store_error = None

    # -- the driver ------------------------------------------------------------
    def run(self) -> None:
        """The thread's body: a loop around the step, guarded by the thread ident.

        A failing store (an exception from ``take``) does not end the loop: it
        backs off and tries again (see :meth:`_store_failed`); the store keeps
        the job handed back and records it on a later call.
        """
        queue = self.queue
        with queue.lock:  # the starter records our ident under this lock
            me = threading.get_ident()
            if me != self.ident:
                return
        _cv_consumer.set(self)  # this thread's context, for good: current_job reads self.current
        aio.own_loop()  # async def jobs share one event loop per consumer thread (made at the first)
        crashed = False
        job: Job | None = None
        name = self.queue_name

        def stop() -> bool:  # asked by the store before it claims, and when woken
            return self.stopping or self.ident != me

        try:
            take = queue.storage.take
            execute = self.execute
            hooks = self.hooks
            while not self.stopping and self.ident == me:
                done, job = job, None
                try:
                    job = take(None, done, queue=name, stop=stop)  # hands back the last job, takes the next
                except Exception as exc:
                    if not self._store_failed(exc):
                        break
                    continue
                if self.store_failures:
                    self._store_recovered()
                if job is not None:
                    if hooks.active:
                        job = self._hooked(job)
                    else:
                        execute(job, True)
            if job is not None and not self.abandoned:
                self.record(job)
        except BaseException:
            if job is not None and job.finished and not self.abandoned:  # a job's SystemExit & co: hand it back
                crashed = True
                queue.storage.finish(job)
                logger.critical(
                    "job %s (%s) ended the consumer thread of %r; a new one is starting",
                    job.id, job.name, queue.app.name,
                )
            else:  # the store or a bug: no tight restart loop; the next enqueue or request restarts
                logger.critical(
                    "the consumer thread of %r stopped; the next enqueue or request starts a new one",
                    queue.app.name, exc_info=True,
                )
        finally:
            aio.close_loop()
            queue.consumer_exited(self, me, crashed)


def backoff_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 0.1, 0.2, 0.4, ... at most 10."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(max(failures, 1) - 1, 30)))


def _send(signal: Signal, app: Any, job: Job) -> None:
    """Send a signal; a failing receiver is logged and never fails the job."""
    try:
        signal.send(app, job=job)
    except Exception:
        logger.exception("a receiver of %s failed for job %s", getattr(signal, "name", signal), job.id)

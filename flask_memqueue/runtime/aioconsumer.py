"""A consumer thread that runs up to N ``async def`` jobs at once on its event loop.

``MEMQUEUE_QUEUES = {"crawl": {"threads": 1, "async_concurrency": 100}}``
gives each thread of the queue an :class:`AsyncConsumer` instead of a
:class:`~flask_memqueue.consumer.Consumer`: one event loop per thread, up to
100 jobs in flight on it (per thread: two threads run up to 200).

How it claims: from the in-process memory store it takes inline (a take
that finds nothing returns at once); a wait for the next job, and every
claim from a store other processes share, runs on one claimer thread of its
own (``memqueue-claimer[...]``), so the loop goes on with the jobs in hand
while the store answers or nothing is due. At most one claim is under way,
and only while a slot is free. Outcomes are recorded from the loop's thread
(one call to the store per job, as a thread consumer makes).

What runs where: an ``async def`` job is awaited next to the others, through
the ``around_arun`` hooks (:mod:`flask_memqueue.hooks`), each in an asyncio
task of its own, whose context holds its app context and its ``current_job``.
A plain function's job in such a queue runs inline on the loop's thread, as
in any consumer, and blocks the loop's other jobs while it runs (so does
blocking code inside a coroutine: see docs/async.md).

Stopping: a stop request ends the claims; the jobs in flight run to their
end first (as a thread consumer ends "after the job in hand"). A job that
raises ``SystemExit`` or ``KeyboardInterrupt`` is recorded failed, the loop
stops claiming, lets the others finish, and the thread ends as crashed (its
pool starts a successor).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from time import time as _time
from typing import TYPE_CHECKING, Any

from .. import aio
from ..consumer import Consumer, ConsumerHost, _cv_consumer, _send
from ..exceptions import TimeLimitExceeded
from ..job import JobStatus, _Outcome
from ..signals import job_started, job_succeeded

if TYPE_CHECKING:
    from ..job import Job

logger = logging.getLogger("flask_memqueue")

#: The job of the asyncio task that runs it (each task has its own context).
_cv_job: ContextVar[Job[Any] | None] = ContextVar("flask_memqueue.async_job", default=None)
#: A claim on the claimer thread waits at most this long before it looks at the stop request again.
CLAIM_WAIT = 1.0
SUCCEEDED = JobStatus.SUCCEEDED
_GIVE_UP: Any = object()


class AsyncConsumer(Consumer):
    """One thread of a queue with ``async_concurrency`` > 1 (see the module's text)."""

    def __init__(self, queue: ConsumerHost, queue_name: str, index: int, concurrency: int) -> None:
        #: Jobs in flight on this thread's loop (insertion-ordered).
        self.running: dict[Job[Any], None] = {}
        #: How many jobs this thread's loop runs at once at most.
        self.concurrency = concurrency
        # Outcomes the store could not record (it failed); recorded before the next claim.
        self._unrecorded: list[Job[Any]] = []
        # A job ended the thread (SystemExit & co): the loop stops claiming, the thread ends crashed.
        self._crashed = False
        self._me = 0
        self._inline = False
        # The claim under way on the claimer thread, if any (one at a time).
        self._pending: asyncio.Future[Any] | None = None
        super().__init__(queue, queue_name, index)

    @property
    def current(self) -> Job[Any] | None:
        """Inside a job: that job (its task's context). Elsewhere: one of the jobs in flight, if any."""
        job = _cv_job.get()
        if job is None and self.running:
            try:
                return next(iter(self.running))
            except (StopIteration, RuntimeError):  # changed meanwhile (read from another thread)
                return None
        return job

    @current.setter
    def current(self, job: Job[Any] | None) -> None:
        _cv_job.set(job)

    # -- the driver ------------------------------------------------------------
    def run(self) -> None:
        """The thread's body: the guard, then the event loop until stopped."""
        queue = self.queue
        with queue.lock:
            me = threading.get_ident()
            if me != self.ident:
                return
        _cv_consumer.set(self)
        aio.own_loop()
        self._crashed = False
        try:
            aio.thread_loop().run_until_complete(self._main(me))
        except BaseException:
            logger.critical(
                "the consumer thread of %r (queue %r) stopped; the next enqueue or request starts a new one",
                queue.app.name, self.queue_name, exc_info=True,
            )
        finally:
            aio.close_loop()
            queue.consumer_exited(self, me, self._crashed)

    async def _main(self, me: int) -> None:
        """Claim while a slot is free, start each job as an asyncio task; at a stop, let them end."""
        self._me = me
        self._inline = not self.queue.storage.capabilities.shared
        self._pending = None
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        claimer = ThreadPoolExecutor(
            1, thread_name_prefix=f"memqueue-claimer[{self.queue.app.name}:{self.queue_name}#{self.index}]"
        )
        try:
            while not self._stop_requested():
                job = await self._next_job(loop, claimer, tasks)
                if job is _GIVE_UP:
                    break
                if job is not None:
                    self._start(job, tasks)
            await self._wind_down(tasks)
        finally:
            claimer.shutdown(wait=True)

    def _stop_requested(self) -> bool:
        """Asked by the loop and by the store before it claims (and when woken)."""
        return self.stopping or self._crashed or self.ident != self._me

    async def _next_job(self, loop: asyncio.AbstractEventLoop, claimer: ThreadPoolExecutor,
                        tasks: set[asyncio.Task[None]]) -> Any:
        """The next job to start; None to look again (a job ended, or nothing came); or ``_GIVE_UP``."""
        if len(tasks) < self.concurrency and self._pending is None:
            job = self._take_inline()
            if job is not None:
                return job
            self._pending = loop.run_in_executor(claimer, self._claim)
        waiting: set[asyncio.Future[Any]] = set(tasks)
        if self._pending is not None:
            waiting.add(self._pending)
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._pending is None or self._pending not in done:
            return None
        job, self._pending = self._pending.result(), None
        return job

    def _take_inline(self) -> Job[Any] | None:
        """A due job of the in-process store, taken without waiting (None from a shared store)."""
        if not self._inline or self._unrecorded:
            return None
        try:
            return self.queue.storage.take(0.0, queue=self.queue_name)
        except Exception:  # the claimer's turn: it backs off and logs
            return None

    def _claim(self) -> Any:
        """On the claimer thread: record what failed to record, then wait for the next job."""
        try:
            while self._unrecorded:
                self.record(self._unrecorded[0])
                self._unrecorded.pop(0)
            job = self.queue.storage.take(CLAIM_WAIT, queue=self.queue_name, stop=self._stop_requested)
        except Exception as exc:
            return None if self._store_failed(exc) else _GIVE_UP
        if self.store_failures:
            self._store_recovered()
        return job

    async def _wind_down(self, tasks: set[asyncio.Task[None]]) -> None:
        """After a stop: run the job a claim under way hands over, let every job end, record."""
        if self._pending is not None:
            job = await self._pending
            self._pending = None
            if job is not None and job is not _GIVE_UP:
                self._start(job, tasks)
        if tasks:
            await asyncio.wait(tasks)
        while self._unrecorded:  # a last try; the store keeps them RUNNING otherwise (its takeover's)
            self.record(self._unrecorded.pop(0))

    def _start(self, job: Job[Any], tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(self._one(job))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _one(self, job: Job[Any]) -> None:
        """Run one job in this asyncio task (its own context), record it, tell the hooks."""
        _cv_job.set(job)
        self.running[job] = None
        hooks = self.hooks
        app = self.queue.app
        try:
            if not (hooks.claim and self._put_back(job)):
                if getattr(job.task.strategy, "is_async", False):
                    await self.aexecute(job)
                else:
                    self.execute(job)  # a plain function: inline, it blocks the loop while it runs
        except BaseException:  # a job's SystemExit & co (recorded failed): end the thread once the others end
            self._crashed = True
            logger.critical(
                "job %s (%s) ended the consumer thread of %r; a new one starts once the jobs in flight end",
                job.id, job.name, app.name,
            )
        finally:
            del self.running[job]
            try:
                self.record(job)
            except Exception:
                logger.exception("the store failed to record job %s (%s); trying again before the next claim",
                                 job.id, job.name)
                self._unrecorded.append(job)
        if hooks.outcome:
            hooks.recorded(app, job)

    async def aexecute(self, job: Job[Any]) -> None:
        """:meth:`Consumer.execute` for an ``async def`` job: await its coroutine in a fresh app context."""
        app = self.queue.app
        out = job._out
        if out is None:
            out = job._out = _Outcome()
            out.attempts = 1
        else:
            out.eta = None
            out.attempts += 1
        out.started_at = _time()
        ctx = app.app_context()
        ctx.push()
        error: BaseException | None = None
        try:
            if job_started.receivers:
                _send(job_started, app, job)
            try:
                hooks = self.hooks
                result = await (hooks.arun(app, job) if hooks.aaround else aio.coroutine_of(job))
            except (Exception, asyncio.CancelledError, TimeLimitExceeded) as exc:  # its own cancellation fails it
                error = exc
                self._failed(job, exc, fatal=False)
            except BaseException as exc:
                error = exc
                self._failed(job, exc, fatal=True)
                raise
            else:
                out.result = result
                out.finished_at = _time()
                if out.error is not None:
                    out.error = out.traceback = None
                job.status = SUCCEEDED
                if job_succeeded.receivers:
                    _send(job_succeeded, app, job)
        finally:
            finished = out.finished_at
            if finished is not None and finished >= self._bucket_end:
                self._roll(finished)
            self.attempts += 1
            try:
                ctx.pop(error)
            except Exception:
                logger.exception("a teardown_appcontext handler failed after job %s (%s)", job.id, job.name)
